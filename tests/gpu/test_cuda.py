"""CUDA paths: autocast bf16/fp16 vs fp32, GradScaler, fused AdamW, SDPA kernels. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.checkpoint import read_checkpoint
from nmt.config import ModelConfig, load_config
from nmt.data.prepare import prepare
from nmt.model import build_model
from nmt.precision import Precision, resolve_precision
from nmt.train.loop import train
from nmt.train.loss import label_smoothed_nll
from tests.corpora import toy_config

pytestmark = pytest.mark.cuda


def tiny_model() -> torch.nn.Module:
    cfg = ModelConfig(preset="tiny", dropout=0.0, max_len=64)
    return build_model(cfg, src_vocab_size=50, tgt_vocab_size=50).cuda()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_logits_close_to_fp32(precision: str) -> None:
    torch.manual_seed(0)
    model = tiny_model().eval()
    src = torch.randint(4, 50, (8, 20), device="cuda")
    tgt = torch.randint(4, 50, (8, 15), device="cuda")
    pad = torch.zeros_like(src, dtype=torch.bool)
    with torch.inference_mode():
        ref = model(src, pad, tgt).float()
        with Precision(precision, torch.device("cuda")).autocast():
            low = model(src, pad, tgt).float()
    assert (ref - low).abs().max().item() < (0.05 if precision == "fp16" else 0.15)


def test_auto_precision_on_cuda() -> None:
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_fp16_scaler_skips_non_finite_step_with_fused_adamw() -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    prec = Precision("fp16", torch.device("cuda"))
    before = [p.detach().clone() for p in model.parameters()]
    src = torch.randint(4, 50, (4, 10), device="cuda")
    with prec.autocast():
        logits = model(src, src.eq(0), src)
    loss, _ = label_smoothed_nll(logits, src, smoothing=0.1, pad_id=0)
    prec.scaler.scale(loss * float("inf")).backward()
    prec.scaler.step(opt)
    prec.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_learns(tmp_path: Path, precision: str) -> None:
    cfg = load_config(
        toy_config(tmp_path),
        [
            "train.device=cuda",
            f"train.precision={precision}",
            "train.max_steps=60",
            "train.valid_every=60",
            "decode.beam=2",
        ],
    )
    prepare(cfg)
    result = train(cfg)
    assert result.state.nonfinite_steps < 5
    ckpt = read_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 60
    assert result.last_valid["loss"] < 3.0
