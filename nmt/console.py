"""The one rich Console (stderr), progress bars, tables and JSON output.

Stages never call `print`: they report through here, so `--json` output on stdout stays
clean and bars disappear when stderr is not a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

# Logs and CI output are not terminals: give tables room instead of rich's 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def info(message: str) -> None:
    """A status line on stderr."""
    console.print(message)


def warn(message: str) -> None:
    """A warning line on stderr (one line: never wrapped, so that it can be grepped)."""
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    force: bool | None = None,
) -> tqdm:
    """A tqdm bar on stderr; silent when stderr is not a TTY unless `force`."""
    disable = not (force if force is not None else sys.stderr.isatty())
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False
    )


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Render a rich table on stderr."""
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[_fmt(v) for v in row])
    console.print(t)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit_json(record: dict[str, Any]) -> None:
    """One JSON document on stdout (for --json)."""
    sys.stdout.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
