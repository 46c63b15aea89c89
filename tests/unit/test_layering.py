"""Imports flow one way: data -> model -> decode -> {train, evaluate, serve}, cli on top, and no module cycles.

The architecture is described in docs/architecture.md. Leaf modules import no stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "nmt"
LEAVES = {
    "config", "errors", "fileio", "console", "experiment", "metrics", "demo", "plots", "tokens", "device", "checkpoint",
    "precision", "export_format", "iso639", "marian_format",
}  # fmt: skip
STAGES = {"data", "model", "decode", "export", "train", "evaluate", "serve", "interop", "cli"}
# stage -> stages it must not import
FORBIDDEN = {
    "data": {"model", "decode", "export", "train", "evaluate", "serve", "interop", "cli"},
    "model": {"data", "decode", "export", "train", "evaluate", "serve", "interop", "cli"},
    "decode": {"export", "train", "evaluate", "serve", "interop", "cli"},
    "export": {"decode", "train", "evaluate", "serve", "interop", "cli"},  # the export format is the leaf export_format
    "train": {"export", "evaluate", "serve", "interop", "cli"},
    "evaluate": {"export", "train", "serve", "interop", "cli"},
    "serve": {"export", "train", "evaluate", "interop", "cli"},
    "interop": {"decode", "export", "train", "evaluate", "serve", "cli"},  # writes checkpoints: data + model
    **{leaf: STAGES for leaf in LEAVES},
}


def imported_modules(path: Path) -> set[str]:
    """Every `nmt.*` module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nmt.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nmt"):
            found.add(node.module)
            # `from nmt.decode import beam` imports the module nmt.decode.beam
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if (PKG.parent / node.module.replace(".", "/") / f"{a.name}.py").is_file()
            }
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_forbidden_imports() -> None:
    violations = []
    for name, deps in graph().items():
        parts = name.split(".")
        if len(parts) < 2:
            continue
        stage = parts[1]
        bad = {d.split(".")[1] for d in deps if len(d.split(".")) > 1} & FORBIDDEN.get(stage, set())
        if bad:
            violations.append(f"{name} imports {sorted(bad)}")
    assert not violations, violations


def test_no_import_cycles() -> None:
    """Not even inside a stage, and not through imports hidden in functions (a package's own
    `__init__` importing its submodules lazily is the one allowed back edge)."""
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if node.startswith(dep + "."):  # a submodule importing its own package's __init__
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_importing_nmt_and_cli_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, nmt, nmt.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
