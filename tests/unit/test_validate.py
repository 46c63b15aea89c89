"""Validation during training scores like `nmt evaluate --split valid` (raw references, empty sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.evaluate.report import evaluate
from nmt.experiment import Experiment
from nmt.train.loop import train
from tests.corpora import FAST, reverse_pairs, toy_config, write_split


def test_validation_bleu_equals_evaluate_on_the_valid_split(tmp_path: Path) -> None:
    valid = reverse_pairs(8, seed=2) + [
        ("", "EMPTY SOURCE"),  # no source tokens: an empty hypothesis, no model call
        # fullwidth letters never occur in training: NFKC and the vocabulary would turn them into
        # ALPHA / BRAVO, so scoring against references decoded from ids would count a match
        ("alpha bravo charlie", "CHARLIE BRAVO ＡＬＰＨＡ"),
        ("bravo delta echo", "ECHO DELTA ＢＲＡＶＯ"),
    ]
    config = toy_config(tmp_path, train=120, valid=10)
    write_split(tmp_path / "corpus", "valid", valid)
    overrides = FAST + [
        "train.max_steps=80",
        "train.valid_every=80",
        "train.log_every=80",
        "train.lr=1e-2",
        "train.warmup_steps=10",
        "model.dropout=0",
    ]
    cfg = load_config(config, overrides)
    prepare(cfg)
    result = train(cfg)
    assert result.stopped_by == "max_steps"
    exp = Experiment.from_config(cfg)
    records = [json.loads(line) for line in exp.metrics_path.read_text().splitlines()]
    [valid_record] = [r for r in records if r["event"] == "valid"]
    [report] = evaluate(config, split="valid", checkpoint_name="last", overrides=overrides)
    assert report.lines == len(valid)
    hyps = (exp.checkpoint_dir / "last.valid.hyp").read_text(encoding="utf-8").split("\n")
    assert hyps[8] == ""  # the empty source
    assert report.scores["bleu"].score > 0
    assert valid_record["bleu"] == pytest.approx(report.scores["bleu"].score, abs=1e-9)


def test_validation_decodes_the_weights_a_fused_optimizer_just_wrote() -> None:
    """The fused AdamW (CPU and CUDA) updates parameters without bumping their version counters: a
    cast copy cached on them looked current and validation BLEU once stayed at its first value for a
    whole run. Validation now builds its decoding form from the weights as they are at each call."""
    import torch

    from nmt.config import ModelConfig, TrainConfig
    from nmt.decode.search import decoding_form
    from nmt.model import build_model
    from nmt.train.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny", max_len=32), src_vocab_size=30, tgt_vocab_size=30)
    cpu = torch.device("cpu")
    stale = decoding_form(model, cpu, "bf16")
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(lr=0.1), device=cpu)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    fresh = decoding_form(model, cpu, "bf16")
    assert fresh is not stale
    for cast, param in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(cast, param.detach().to(torch.bfloat16))


def test_fp32_decoding_uses_the_weights_a_fused_optimizer_just_wrote() -> None:
    """The same in fp32: the form shares the parameters, and its fused q/k/v weight is built from
    the weights as they are when the form is made (checked against the unfused projections)."""
    import torch

    from nmt.config import ModelConfig, TrainConfig
    from nmt.decode.search import decoding_form
    from nmt.model import build_model
    from nmt.model.attention import MultiHeadAttention
    from nmt.train.optim import build_optimizer

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model = build_model(ModelConfig(preset="tiny", max_len=32), src_vocab_size=30, tgt_vocab_size=30).eval()
    x = torch.randn(2, 5, 64)
    decoding_form(model, cpu, "fp32")  # a form made before the step is not what the next validation uses
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(lr=0.1), device=cpu)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    form = decoding_form(model, cpu, "fp32")
    assert all(a is b for a, b in zip(form.parameters(), model.parameters(), strict=True))  # no weight copied
    pairs = [(m, f) for m, f in zip(model.modules(), form.modules(), strict=True) if isinstance(m, MultiHeadAttention)]
    assert pairs and all(m.fused_qkv is None and f.fused_qkv is not None for m, f in pairs)
    with torch.no_grad():
        for attn, fused in pairs:
            q, kv = fused.project_qkv(x)
            torch.testing.assert_close(q, attn._heads(attn.q_proj(x)))
            torch.testing.assert_close(kv.v, attn._heads(attn.v_proj(x)))
