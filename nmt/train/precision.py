"""Mixed precision as two objects with no-op forms: an autocast context and a GradScaler.

Every precision uses a GradScaler so that a step with non-finite gradients is skipped
the same way everywhere without a host sync on CUDA (the fused AdamW reads the scaler's
found-inf flag on the device). For fp16 the scale is dynamic; for fp32/bf16 it is reset
to 1.0 after every step, so scaling is exact (a no-op) and only the skip remains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nmt.errors import NmtError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA devices that support it, fp16 on other CUDA devices, fp32 on CPU."""
    if name != "auto":
        if name == "fp16" and device.type != "cuda":
            raise NmtError("precision fp16 needs a CUDA device", hint="use fp32 or bf16 on CPU")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device: torch.device

    def __post_init__(self) -> None:
        dynamic = self.name == "fp16"
        self.scaler = torch.amp.GradScaler(
            self.device.type, init_scale=2.0**16 if dynamic else 1.0, growth_interval=2000 if dynamic else 2**30
        )

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.name == "fp32":
            yield
            return
        with torch.autocast(self.device.type, dtype=DTYPES[self.name]):
            yield

    def update(self) -> None:
        """After `scaler.step`: adapt the fp16 scale; keep fp32/bf16 exact at 1.0."""
        self.scaler.update(None if self.name == "fp16" else 1.0)
