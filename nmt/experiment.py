"""Layout of an experiment directory, the unit of work.

    <workdir>/config.yaml          resolved config of the last command that changed it
    <workdir>/data -> data.<id>/    the prepared dataset, written by `prepare`, swapped in whole
                                    (its files: nmt/data/prepared.py, their only owner)
    <workdir>/checkpoints/          step_N.pt, last.pt, best.pt, averaged.pt
    <workdir>/metrics.jsonl         one JSON object per log / validation event
    <workdir>/curves.png            training curves drawn from metrics.jsonl at each validation
    <workdir>/pretrain/             `nmt pretrain`'s run: its own config.yaml, checkpoints/,
                                    metrics.jsonl and curves.png, on the same <workdir>/data

The SentencePiece models live inside data/ so that a prepared dataset and its vocabulary
are always replaced together, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmt.config import ExperimentConfig, dump_config
from nmt.fileio import atomic_write_text


@dataclass(frozen=True)
class Experiment:
    """Paths inside one experiment directory."""

    root: Path
    shared_data: Path | None = None  # the prepared data of another experiment dir (a pretraining run's)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Experiment:
        return cls(Path(cfg.workdir))

    def pretraining(self) -> Experiment:
        """The experiment dir of `nmt pretrain` inside this one, reading this one's prepared data."""
        return Experiment(self.root / "pretrain", shared_data=self.data_dir)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_dir(self) -> Path:
        return self.shared_data or self.root / "data"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def curves_path(self) -> Path:
        return self.root / "curves.png"

    def write_config(self, cfg: ExperimentConfig) -> None:
        """Write the resolved config atomically."""
        atomic_write_text(self.config_path, dump_config(cfg))
