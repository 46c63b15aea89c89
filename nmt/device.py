"""Where torch work runs: the one resolver of `device: auto | cpu | cuda` settings, and what the
CPU can do natively (bf16)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from nmt.errors import NmtError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NmtError(
            "device 'cuda' requested but CUDA is not available on this machine",
            hint="use --device cpu (or device: auto to fall back automatically)",
        )
    return torch.device(name)


# CPU flags of native bf16 arithmetic: AVX512-BF16 (dot products) or AMX tiles
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (avx512_bf16 or AMX), read from /proc/cpuinfo.

    Without it, bf16 is emulated and slower than fp32. `NMT_CPU_BF16=1|0` overrides the
    detection (for machines whose flags are hidden, and for tests).
    """
    forced = os.environ.get("NMT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _BF16_FLAGS)
