"""The config reference in docs/configuration.md, generated from the schema's fields and their comments."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Literal

from nmt.config.schema import DataConfig, DecodeConfig, ModelConfig, PretrainConfig, TrainConfig, VocabConfig


def field_docs() -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) for every config field, read from this source file."""
    rows = []
    for section, cls in (
        ("data", DataConfig),
        ("vocab", VocabConfig),
        ("model", ModelConfig),
        ("train", TrainConfig),
        ("decode", DecodeConfig),
        ("pretrain", PretrainConfig),
    ):
        hints = typing.get_type_hints(cls)
        source = inspect.getsource(cls).splitlines()
        for f in dataclasses.fields(cls):
            comment = ""
            for line in source:
                stripped = line.strip()
                if stripped.startswith(f"{f.name}:") and "#" in stripped:
                    comment = stripped.split("#", 1)[1].strip()
                    break
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            tp = _type_name(hints[f.name]) + (" | null" if f.metadata.get("resolved") else "")
            rows.append((f"{section}.{f.name}", tp, repr(default), comment))
    return rows


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("SplitSpec", "split")


def reference_markdown() -> str:
    """The config reference table of docs/configuration.md, generated from the dataclasses."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, comment in field_docs():
        lines.append(f"| `{key}` | {tp.replace('|', '&#124;')} | `{default}` | {comment.replace('|', '&#124;')} |")
    return "\n".join(lines)
