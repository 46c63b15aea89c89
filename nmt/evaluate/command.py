"""What `nmt evaluate` does, as one call: check for matplotlib, evaluate, plot, show, gate.

The CLI parses the options and calls `evaluate_command`; notebooks and tests that want the
reports themselves call `nmt.evaluate.report.evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nmt.evaluate.report import evaluate, length_boundaries
from nmt.evaluate.results import draw_plot, gate, render
from nmt.plots import require_matplotlib


def evaluate_command(
    target: Path | None,
    *,
    by_length: bool = False,
    buckets: str | None = None,
    plot: Path | None = None,
    as_json: bool = False,
    **options: Any,
) -> None:
    """`evaluate`, then draw `plot`, show the reports (`as_json`: one JSON document on stdout) and
    apply the `fail_under` gate (`nmt.evaluate.results.gate`: NmtError with exit code 1 below it).

    Args:
        by_length: also score by source length, in the buckets of `buckets` ("10,20,30"; default
            `nmt.evaluate.buckets.DEFAULT_BOUNDARIES`); `buckets` or `plot` implies it.
        plot: a PNG of BLEU by source length for every system; matplotlib is checked before any work.
        options: `nmt.evaluate.report.evaluate`'s keywords (src, refs, hyps, labels, split,
            checkpoint_name, out, overrides, fail_under, tgt_lang), passed on unchanged.
    """
    if plot is not None:
        require_matplotlib()  # before translating, not after
    boundaries = length_boundaries(buckets, enabled=by_length or plot is not None)
    reports = evaluate(target, boundaries=boundaries, **options)
    if plot is not None:
        draw_plot(reports, plot)
    render(reports, as_json=as_json, plot=plot)
    gate(reports)
