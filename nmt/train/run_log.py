"""What training tells people and machines: metrics.jsonl (+ TensorBoard), curves.png and the summary table."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from nmt import plots
from nmt.console import table, warn
from nmt.errors import NmtError
from nmt.experiment import Experiment
from nmt.train.state import TrainResult

_TENSORBOARD: dict[str, Any] = {}
_CURVES_WARNED: set[str] = set()  # "matplotlib" / "error": each warned about once per process
_NO_MATPLOTLIB = "matplotlib is not installed: training curves (curves.png) are not drawn; pip install 'nmt[plot]'"


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


def draw_curves(exp: Experiment, *, is_main: bool) -> None:
    """Redraw curves.png from metrics.jsonl (main process only).

    Curves are a convenience: without matplotlib, or when drawing fails, this warns once
    per process and training goes on.
    """
    if not is_main:
        return
    try:
        plots.require_matplotlib()
    except NmtError:
        _warn_curves_once("matplotlib", _NO_MATPLOTLIB)
        return
    try:
        records = []
        if exp.metrics_path.exists():
            for line in exp.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a crash, or not JSON at all
                    continue
        plots.training_curves(exp.curves_path, records, title=f"training curves: {exp.root.name}")
    except Exception as e:  # a figure must never stop training
        _warn_curves_once("error", f"training curves (curves.png) not drawn: {type(e).__name__}: {e}")


def _warn_curves_once(kind: str, message: str) -> None:
    if kind not in _CURVES_WARNED:
        _CURVES_WARNED.add(kind)
        warn(escape(message))  # "[plot]" and brackets in error messages are text, not rich markup


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
        rows += [("last valid loss", v["loss"])] + ([("last valid BLEU", v["bleu"])] if "bleu" in v else [])
    table("training summary", ["", "value"], rows)
    if result.stopped_by == "signal":
        warn("interrupted: a checkpoint was written; run the same `nmt train CONFIG` to resume")
