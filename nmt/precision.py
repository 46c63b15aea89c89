"""The precision policy of training and decoding: what `auto` resolves to, and mixed-precision
training as two objects with no-op forms, an autocast context and a GradScaler.

Every precision uses a GradScaler so that a step with non-finite gradients is skipped
the same way everywhere without a host sync on CUDA (the fused AdamW reads the scaler's
found-inf flag on the device). For fp16 the scale is dynamic; for fp32/bf16 it is reset
to 1.0 after every step, so scaling is exact (a no-op) and only the skip remains.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nmt.device import cpu_has_native_bf16
from nmt.errors import NmtError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(
    name: str, device: torch.device, *, native_bf16: bool | None = None, cuda_bf16: bool | None = None
) -> str:
    """'auto' -> bf16 on CUDA devices that support it, fp16 on other CUDA devices; on CPU, bf16 where
    the CPU computes in bf16 natively (avx512_bf16 or AMX, `nmt.device.cpu_has_native_bf16`), fp32
    elsewhere (emulated bf16 is slower than fp32). `native_bf16` / `cuda_bf16` inject the capability
    (tests); None asks the machine.

    Measured on Multi30k (CPU with avx512_bf16, 2 threads, 600 updates each, BENCHMARKS.md):
    bf16 autocast reaches fp32's test BLEU at the same number of updates, at a higher update rate.
    """
    if name != "auto":
        if name == "fp16" and device.type != "cuda":
            raise NmtError("precision fp16 needs a CUDA device", hint="use fp32 or bf16 on CPU")
        return name
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return "bf16" if supported else "fp16"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return "bf16" if native else "fp32"


def resolve_decode_precision(name: str, device: torch.device, *, native_bf16: bool | None = None) -> str:
    """`decode.precision` for `device`: auto -> bf16 on a CPU with native bf16, else fp32.

    Measured on Multi30k (test_2016_flickr, 2 threads, a CPU with avx512_bf16, weights cast
    to bf16 once by `nmt.decode.search.decoding_form`): beam 5 decodes 1.3x faster than
    fp32 at 31.93 BLEU against 32.07, greedy 1.05x faster (BENCHMARKS.md). A CPU without
    native bf16 emulates it slowly, so auto keeps fp32 there; on CUDA auto stays fp32 too
    (not measured there yet).
    """
    if name != "auto":
        return name
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return "bf16" if device.type == "cpu" and native else "fp32"


def auto_note(device: torch.device, *, native_bf16: bool | None = None) -> str:
    """Why `train.precision: auto` resolved as it did, for the start-up line."""
    if device.type != "cpu":
        return f"auto on {device.type}"
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return f"auto: this CPU has {'' if native else 'no '}native bf16"


def emulated_bf16(resolved: str, device: torch.device, *, native_bf16: bool | None = None) -> bool:
    """bf16 on a CPU that only emulates it (slower than fp32: warned about)."""
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    return resolved == "bf16" and device.type == "cpu" and not native


ONEDNN_CACHE = "16"  # oneDNN primitives kept (its default: 1024)


def bound_onednn_cache() -> None:
    """Keep at most ONEDNN_CACHE oneDNN primitives (unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set).

    bf16 matmuls on CPU run through oneDNN, which builds and caches a primitive per matrix shape;
    token-budget batches have a new shape nearly every step, so with oneDNN's default capacity the
    process grew by ~0.4 GiB over 120 updates of the Multi30k model (1.83 -> 2.23 GiB peak RSS, still
    rising) where fp32 stays flat. 16 keeps the peak at 1.57 GiB (60 updates) for ~9% of bf16 speed
    (BENCHMARKS.md). oneDNN reads the variable once, at its first primitive: call this first.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE)


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
