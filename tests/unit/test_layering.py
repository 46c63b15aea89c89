"""Imports flow one way: data -> model -> decode -> {train, evaluate}, cli on top (STYLE.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "nmt"
LEAVES = {
    "config",
    "errors",
    "fileio",
    "console",
    "experiment",
    "metrics",
    "demo",
    "plots",
    "tokens",
    "device",
    "checkpoint",
}
# stage -> stages it must not import
FORBIDDEN = {
    "data": {"model", "decode", "train", "evaluate", "cli"},
    "model": {"data", "decode", "train", "evaluate", "cli"},
    "decode": {"train", "evaluate", "cli"},
    "train": {"evaluate", "cli"},
    "evaluate": {"train", "cli"},
    **{leaf: {"data", "model", "decode", "train", "evaluate", "cli"} for leaf in LEAVES},
}


def imported_stages(path: Path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        stages |= {n.split(".")[1] for n in names if n.startswith("nmt.") and len(n.split(".")) > 1}
    return stages


def test_no_forbidden_imports() -> None:
    violations = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        bad = imported_stages(path) & FORBIDDEN.get(stage, set())
        if bad:
            violations.append(f"{rel} imports {sorted(bad)}")
    assert not violations, violations


def test_importing_nmt_and_cli_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, nmt, nmt.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
