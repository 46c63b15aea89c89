"""PNG figures: BLEU by source length for several systems, and attention heatmaps.

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
