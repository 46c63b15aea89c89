"""What training tells people and machines: metrics.jsonl (+ TensorBoard) and the summary table."""

from __future__ import annotations

import json
from typing import Any

from nmt.console import table, warn
from nmt.experiment import Experiment
from nmt.train.state import TrainResult

_TENSORBOARD: dict[str, Any] = {}


def write_metrics(exp: Experiment, record: dict[str, Any], *, is_main: bool) -> None:
    """Append one JSON line to metrics.jsonl; TensorBoard scalars too when tensorboard is installed.

    Only the main process writes (`is_main`); the others return at once.
    """
    if not is_main:
        return
    with open(exp.metrics_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    key = str(exp.root)
    if key not in _TENSORBOARD:
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

            _TENSORBOARD[key] = SummaryWriter(str(exp.root / "tensorboard"))
        except ImportError:
            _TENSORBOARD[key] = None
    writer = _TENSORBOARD[key]
    if writer is not None:
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                writer.add_scalar(f"{record['event']}/{name}", value, record["step"])
        writer.flush()


def summarize(result: TrainResult) -> None:
    """The end-of-training table."""
    s, v = result.state, result.last_valid
    rows = [
        ("stopped by", result.stopped_by),
        ("steps", s.step),
        ("epochs (current)", s.epoch),
        ("training time (min)", s.elapsed_s / 60),
        ("parameters", result.params),
        ("best step", s.best_step),
        ("skipped non-finite steps", s.nonfinite_steps),
    ]
    if v:
        rows += [("last valid loss", v["loss"]), ("last valid BLEU", v["bleu"])]
    table("training summary", ["", "value"], rows)
    if result.stopped_by == "signal":
        warn("interrupted: a checkpoint was written; run the same `nmt train CONFIG` to resume")
