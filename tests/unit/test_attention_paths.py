"""The written-out attention (bf16 training on CPU, attention weights) against SDPA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.model.attention import KVCache, MultiHeadAttention, attention_mask, explicit_is_faster, softmax_attention


@pytest.mark.parametrize("case", ["pad", "causal", "none"])
def test_softmax_attention_equals_sdpa_in_value_and_gradient(case: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    key_pad = torch.zeros(3, 7, dtype=torch.bool)
    key_pad[0, 4:] = True
    allowed = attention_mask(key_pad if case == "pad" else None, causal=case == "causal", tgt_len=7, src_len=7)
    ours, weights = softmax_attention(q, k, v, allowed)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 7, dtype=torch.float64))
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_bf16_training_on_cpu_takes_the_written_out_path_and_agrees_with_fp32() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, dropout=0.0).train()
    x = torch.randn(2, 9, 32)
    key_pad = torch.zeros(2, 9, dtype=torch.bool)
    key_pad[1, 6:] = True
    assert explicit_is_faster(torch.zeros(1, dtype=torch.bfloat16, requires_grad=True))
    assert not explicit_is_faster(torch.zeros(1, requires_grad=True))  # fp32: SDPA
    assert not explicit_is_faster(torch.zeros(1, dtype=torch.bfloat16))  # inference: SDPA

    def run(dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        attn.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            kv = KVCache(attn._heads(attn.k_proj(x)), attn._heads(attn.v_proj(x)))
            out, _ = attn.attend(x, kv, key_pad=key_pad)
        out.float().square().sum().backward()
        return out.float().detach(), attn.q_proj.weight.grad.clone()

    out16, grad16 = run(torch.bfloat16)
    out32, grad32 = run(None)
    torch.testing.assert_close(out16, out32, rtol=0.05, atol=0.03)
    torch.testing.assert_close(grad16, grad32, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("case", ["all keys padded", "causal, fewer keys than queries"])
def test_a_query_with_every_key_masked_gets_what_sdpa_gives_not_nan(case: str) -> None:
    """SDPA returns zeros (and zero gradients) for a query row that may attend to no key; so must we."""
    torch.manual_seed(0)
    if case == "all keys padded":
        q, k, v = (torch.randn(2, 2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
        key_pad = torch.zeros(2, 5, dtype=torch.bool)
        key_pad[1] = True  # every key of the second sentence
        allowed = attention_mask(key_pad, causal=False, tgt_len=5, src_len=5)
    else:  # bottom-right aligned: the first 2 of 6 queries see none of 4 keys
        q = torch.randn(2, 2, 6, 8, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(2, 2, 4, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
        allowed = attention_mask(None, causal=True, tgt_len=6, src_len=4)
    ours, weights = softmax_attention(q, k, v, allowed)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert torch.isfinite(ours).all() and torch.isfinite(weights).all()
    assert ref.abs().sum() > 0 and (~allowed.any(-1)).any()  # some rows attend, some cannot
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(weights.sum(-1), allowed.any(-1).expand_as(weights[..., 0]).to(weights.dtype))
    grads = torch.autograd.grad(ours.square().sum() + ours.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum() + ref.sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
