"""An evaluation's result and how it is shown: table, `--json`, `--plot`, and the `--fail-under` gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.config import DecodeConfig, config_to_dict
from nmt.console import emit_json, info, table
from nmt.errors import NmtError
from nmt.evaluate.buckets import BucketScore, plot_by_length, table_by_length
from nmt.metrics import MetricScore

if TYPE_CHECKING:
    from nmt.decode.translate import TranslateStats


@dataclass
class EvalReport:
    """Scores of one evaluation and everything needed to reproduce them."""

    scores: dict[str, MetricScore]  # "bleu", "chrf", "chrf++", "ter"
    hyp: Path  # the scored hypotheses (written here when a model translated them)
    refs: list[Path]
    lines: int
    elapsed_s: float  # translation (if any) and scoring
    threshold: float | None = None  # --fail-under BLEU
    src: Path | None = None
    checkpoint: Path | None = None
    step: int | None = None  # the checkpoint's optimizer step
    split: str | None = None
    decode: DecodeConfig | None = None
    device: str | None = None
    stats: TranslateStats | None = None
    label: str = ""  # the system's name in tables, JSON and plots (--label, else the file or checkpoint stem)
    by_length: list[BucketScore] | None = None  # with --by-length
    tgt_lang: str | None = None  # the hypotheses' language (picks BLEU's tokenizer)
    direction: str | None = None  # of a multilingual config's split: src-tgt

    @property
    def passed(self) -> bool | None:
        """BLEU >= threshold; None without a threshold."""
        return None if self.threshold is None else self.scores["bleu"].score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "scores": {key: s.score for key, s in self.scores.items()},
            "signatures": {key: s.signature for key, s in self.scores.items()},
            "bleu_detail": self.scores["bleu"].detail,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "step": self.step,
            "split": self.split,
            "src": str(self.src) if self.src else None,
            "refs": [str(r) for r in self.refs],
            "hyp": str(self.hyp),
            "lines": self.lines,
            "decode": config_to_dict(self.decode) if self.decode else None,
            "device": self.device,
            "truncated_lines": self.stats.truncated if self.stats else None,
            "invalid_utf8_lines": self.stats.invalid_utf8 if self.stats else None,
            "target_terms": (
                {
                    "lines": self.stats.term_lines,
                    "terms": self.stats.terms,
                    "lines_missing_a_term": self.stats.terms_missed_lines,
                }
                if self.stats and self.stats.term_lines
                else None
            ),
            "elapsed_s": round(self.elapsed_s, 3),
            "threshold": self.threshold,
            "passed": self.passed,
            "by_length": [b.to_json() for b in self.by_length] if self.by_length is not None else None,
            "tgt_lang": self.tgt_lang,
            "direction": self.direction,
        }


def render(reports: Sequence[EvalReport], *, as_json: bool, plot: Path | None = None) -> None:
    """The scores as one JSON document on stdout, or as tables on stderr.

    One system gives one record (the original shape); several give
    {"systems": [record, ...], "threshold", "passed" (all passed), "plot"}.
    """
    if as_json:
        records = [r.to_json() for r in reports]
        if len(records) == 1:
            emit_json({**records[0], "plot": str(plot) if plot else None})
            return
        verdicts = [r.passed for r in reports]
        emit_json(
            {
                "systems": records,
                "threshold": reports[0].threshold,
                "passed": None if verdicts[0] is None else all(verdicts),
                "plot": str(plot) if plot else None,
            }
        )
        return
    for report in reports:
        what = f"{report.checkpoint} (step {report.step:,})" if report.checkpoint else str(report.hyp)
        if report.direction:
            what = f"{report.direction}: {what}"
        elif len(reports) > 1:
            what = f"{report.label}: {what}"
        rows = [
            (s.name + (" (lower is better)" if key == "ter" else ""), s.score, s.signature)
            for key, s in report.scores.items()
        ]
        table(f"{what}: {report.lines:,} lines, {report.elapsed_s:.1f} s", ["metric", "score", "signature"], rows)
    if reports[0].by_length is not None:
        table_by_length(_systems(reports), source=reports[0].src)
    if plot is not None:
        info(f"BLEU by source length plot -> {plot}")


def draw_plot(reports: Sequence[EvalReport], path: Path) -> None:
    """BLEU by source-length bucket of every system, one line each, as a PNG at `path`."""
    refs = ", ".join(r.name for r in reports[0].refs)
    plot_by_length(path, _systems(reports), title=f"BLEU by source length ({refs}, {reports[0].lines:,} sentences)")


def _systems(reports: Sequence[EvalReport]) -> list[tuple[str, list[BucketScore]]]:
    assert all(r.by_length is not None for r in reports)
    return [(r.label, r.by_length or []) for r in reports]


def gate(reports: Sequence[EvalReport]) -> None:
    """NmtError with exit code 1 when any system's BLEU is below the --fail-under threshold."""
    failed = [r for r in reports if r.passed is False]
    if not failed:
        return
    threshold = failed[0].threshold
    assert threshold is not None
    if len(reports) == 1:
        bleu, direction = failed[0].scores["bleu"].score, failed[0].direction
        where = f"{direction}: " if direction else ""
        raise NmtError(f"{where}BLEU {bleu:.2f} is below --fail-under {threshold:.2f}", exit_code=1)
    which = ", ".join(f"{r.label} (BLEU {r.scores['bleu'].score:.2f})" for r in failed)
    raise NmtError(
        f"{len(failed)} of {len(reports)} systems are below --fail-under {threshold:.2f}: {which}", exit_code=1
    )
