"""AdamW (fused on CUDA) and learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

import torch

from nmt.config import TrainConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, *, device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CUDA (one launch per step, and no host sync under a GradScaler)."""
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )


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
