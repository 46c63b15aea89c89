"""How an imported Transformer differs from those nmt trains, beyond `model.*`.

A checkpoint made by `nmt import` (`nmt.interop`) stores these under its "layout" key; they are
properties of the weights, never part of a config file, and a checkpoint without the key is an
nmt-trained model (every default below). `build_model` passes them to the Transformer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from nmt.errors import CheckpointError


@dataclass(frozen=True)
class Layout:
    """positions: the sinusoidal table's layout: nmt's interleaved sin/cos (Vaswani et al.);
    "halves", sin in the first half of the dimensions and cos in the second (Marian's); "fairseq",
    halves too but with frequencies 10000^(-i/(D/2-1)) and positions counted from 2 (fairseq's
    padding_idx + 1), so row p of nmt's table is row p + 2 of fairseq's;
    embed_scale: token embeddings are multiplied by sqrt(d_model) (Marian's `scale_embedding`,
    fairseq unless `--no-scale-embedding`);
    logits_bias: the output projection adds a bias (MarianMT's `final_logits_bias`);
    layernorm_embedding: a LayerNorm after adding the positions, before dropout (fairseq's
    `--layernorm-embedding`, mBART's)."""

    positions: Literal["interleaved", "halves", "fairseq"] = "interleaved"
    embed_scale: bool = True
    logits_bias: bool = False
    layernorm_embedding: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Layout:
        """The layout a checkpoint stores (None or {}: nmt's own); ValueError for an unknown key or value."""
        raw = dict(raw or {})
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown layout key(s) {', '.join(unknown)}")
        layout = cls(**raw)
        if layout.positions not in ("interleaved", "halves", "fairseq"):
            raise ValueError(f"layout positions {layout.positions!r} is not interleaved, halves or fairseq")
        return layout

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: {} for nmt's own layout, so nmt-trained checkpoints do not change."""
        return {} if self == Layout() else asdict(self)


def checkpoint_layout(ckpt: dict[str, Any], path: str | Path) -> Layout:
    """A checkpoint's imported-model layout (nmt's own when it has none); CheckpointError when unreadable."""
    try:
        return Layout.from_dict(ckpt.get("layout"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable model layout ({exc})", hint="import the model again") from None
