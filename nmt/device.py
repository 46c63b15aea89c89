"""Where torch work runs: the one resolver of `device: auto | cpu | cuda` settings."""

from __future__ import annotations

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
