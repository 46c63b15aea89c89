"""PNG figures: training curves, BLEU by source length for several systems, and attention heatmaps.

matplotlib is an optional extra (`pip install 'nmt[plot]'`) and is imported only when a
figure is drawn; without it, drawing raises NmtError with the install hint. Figures use
matplotlib's object API on the Agg canvas (no pyplot, so no global figure state and no
display needed) and are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.errors import NmtError
from nmt.fileio import atomic_open

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
INSTALL_HINT = "pip install 'nmt[plot]'  (or: pip install matplotlib)"


def require_matplotlib() -> None:
    """NmtError with the install hint when matplotlib cannot be imported; call it before slow work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise NmtError("drawing plots needs matplotlib, which is not installed", hint=INSTALL_HINT) from None


def _figure(width_in: float, height_in: float) -> Figure:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    """Write `fig` as PNG to `path` (temp file + rename)."""
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)


def bleu_by_length(
    path: Path,
    buckets: Sequence[str],
    systems: Sequence[tuple[str, Sequence[float | None]]],
    *,
    counts: Sequence[int] | None = None,
    title: str = "BLEU by source sentence length",
) -> None:
    """BLEU against source-length bucket, one line with markers per system, on one axis.

    Args:
        buckets: x tick labels, e.g. ["0-9", "10-19", "20-29", "30+"].
        systems: (label, one BLEU per bucket) per system; None (an empty bucket) leaves a gap.
        counts: sentences per bucket, shown under the tick labels.
    """
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    x = list(range(len(buckets)))
    markers = "osD^vP*X"
    for i, (label, scores) in enumerate(systems):
        y = [math.nan if s is None else s for s in scores]
        ax.plot(x, y, marker=markers[i % len(markers)], linewidth=1.5, label=label)
    ticks = list(buckets) if counts is None else [f"{b}\n({n:,})" for b, n in zip(buckets, counts, strict=True)]
    ax.set_xticks(x, ticks)
    ax.set_xlabel("source length in words" + (" (sentences per bucket)" if counts is not None else ""))
    ax.set_ylabel("BLEU")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)


def attention_heatmap(
    path: Path,
    weights: Any,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    *,
    title: str = "",
) -> None:
    """Heatmap of attention weights (T, S): source tokens on x, target tokens on y (top to bottom).

    Args:
        weights: T rows of S floats (nested lists or an array), row t = attention while producing tgt_tokens[t].
    """
    rows, cols = len(tgt_tokens), len(src_tokens)
    # about 0.3 inch per token, within limits that keep the PNG readable and small
    fig = _figure(min(max(3.0, 1.5 + 0.3 * cols), 16.0), min(max(2.5, 1.2 + 0.3 * rows), 16.0))
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, interpolation="nearest")
    ax.set_xticks(range(cols), list(src_tokens), rotation=90, fontsize=8)
    ax.set_yticks(range(rows), list(tgt_tokens), fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    _save(fig, path)


def training_curves(path: Path, records: Sequence[dict[str, Any]], *, title: str = "training curves") -> None:
    """Training curves from metrics.jsonl records as a 2x2 PNG against steps.

    Panels: (a) train and valid loss per target token, (b) valid BLEU, (c) learning rate,
    (d) target tokens/s. A resumed run logs some steps again: the last record of each
    (event, step) wins. Non-finite values are left out; a panel without data says so.
    """
    _save(_curves_figure(records, title=title), path)


def _curves_figure(records: Sequence[dict[str, Any]], *, title: str) -> Figure:
    fig = _figure(10.0, 7.0)
    (loss_ax, bleu_ax), (lr_ax, speed_ax) = fig.subplots(2, 2, sharex=True)  # (b): a line per direction too
    train = _last_per_step(records, "train")
    valid = _last_per_step(records, "valid")
    drawn = [_curve(loss_ax, train, "loss", label="train"), _curve(loss_ax, valid, "loss", label="valid", marker="o")]
    if any(drawn):
        loss_ax.legend()
    else:
        _empty(loss_ax, "no training records yet")
    directions = sorted({d for r in valid for d in (r.get("directions") or {})})
    for k, direction in enumerate(directions):  # multilingual: one line per direction under the mean
        rows = [
            {"step": r["step"], **r["directions"][direction]} for r in valid if direction in (r.get("directions") or {})
        ]
        _curve(bleu_ax, rows, "bleu", label=direction, marker=".", color=f"C{4 + k % 6}", linewidth=1.0)
    if not _curve(bleu_ax, valid, "bleu", label="mean" if directions else "valid", marker="o", color="C1"):
        _empty(bleu_ax, "no validation yet")
    elif directions:
        bleu_ax.legend(fontsize=7)
    if not _curve(lr_ax, train, "lr", label="train", color="C2"):
        _empty(lr_ax, "no training records yet")
    if not _curve(speed_ax, train, "tgt_tokens_per_s", label="train", color="C3"):
        _empty(speed_ax, "no training records yet")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax, name, ylabel in (
        (loss_ax, "(a) loss", "loss per target token"),
        (bleu_ax, "(b) validation BLEU", "BLEU"),
        (lr_ax, "(c) learning rate", "learning rate"),
        (speed_ax, "(d) training speed", "target tokens/s"),
    ):
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in (lr_ax, speed_ax):
        ax.set_xlabel("step")
    fig.suptitle(title)
    return fig


def _last_per_step(records: Sequence[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """Records of `event` sorted by step, keeping the last one written for each step."""
    by_step: dict[float, dict[str, Any]] = {}
    for record in records:
        if isinstance(record, dict) and record.get("event") == event and _finite(record.get("step")):
            by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _curve(ax: Axes, records: Sequence[dict[str, Any]], key: str, *, label: str, **style: Any) -> bool:
    """Plot `key` against step, skipping missing and non-finite values; False when nothing was plotted."""
    points = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
    if not points:
        return False
    steps, values = zip(*points, strict=True)
    # markers on short series, so a single point (or a few) is visible
    style.setdefault("marker", "o" if len(points) <= 30 else None)
    style.setdefault("linewidth", 1.5)
    ax.plot(steps, values, label=label, markersize=4, **style)
    return True


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")
