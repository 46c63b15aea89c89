"""AdamW (fused kernel) and learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

import torch

from nmt.config import TrainConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, *, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for the device (CUDA, and CPU since torch 2.4):
    one pass over each parameter per step instead of a chain of foreach ops, and no host sync under
    a GradScaler (it reads the scaler's found-inf flag itself). Other devices get the foreach form."""
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=fused_supported(device) or None,
    )


def fused_supported(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW kernel for `device`."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # private helper: absent in some versions; CUDA always had the kernel
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def lr_at(step: int, cfg: TrainConfig, *, d_model: int) -> float:
    """Learning rate for optimizer step `step` (1-based).

    inverse_sqrt: lr * min(step / warmup, sqrt(warmup / step))   (fairseq)
    noam:         lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)   (Vaswani et al.; lr is a factor)
    cosine:       linear warmup, then lr * 0.5 * (1 + cos(pi * progress)) down to 0 at max_steps
    constant:     linear warmup, then lr
    """
    step = max(step, 1)
    warmup = max(cfg.warmup_steps, 1)
    if cfg.schedule == "noam":
        return cfg.lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    if step < cfg.warmup_steps:
        return cfg.lr * step / warmup
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(warmup / step) if cfg.warmup_steps else cfg.lr / math.sqrt(step)
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
