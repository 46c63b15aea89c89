"""Transformer model: incremental vs full decoding, attention paths, padding, tying, presets."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from nmt.config import ModelConfig
from nmt.model import build_model, transformer
from nmt.model.attention import MultiHeadAttention
from nmt.model.embeddings import sinusoidal_table
from nmt.model.transformer import Transformer
from nmt.tokens import BOS_ID, PAD_ID

torch.set_num_threads(1)

VOCAB = 13


def tiny(**overrides: Any) -> Transformer:
    """A small random model in eval mode (dropout off) with fixed seed."""
    torch.manual_seed(0)
    args: dict[str, Any] = dict(
        src_vocab_size=VOCAB,
        tgt_vocab_size=VOCAB,
        d_model=16,
        n_heads=2,
        ffn_dim=32,
        enc_layers=2,
        dec_layers=2,
        dropout=0.1,
        max_len=32,
    )
    args.update(overrides)
    return Transformer(**args).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sources of lengths 6/3/5 and decoder inputs of lengths 5/2/4 (bos first, pad id 0 after)."""
    g = torch.Generator().manual_seed(1)
    src_lens, tgt_lens = [6, 3, 5], [5, 2, 4]
    src_ids = torch.randint(4, VOCAB, (3, 6), generator=g)
    tgt_in = torch.randint(4, VOCAB, (3, 5), generator=g)
    tgt_in[:, 0] = BOS_ID
    src_pad = torch.arange(6) >= torch.tensor(src_lens)[:, None]
    src_ids[src_pad] = PAD_ID
    tgt_in[torch.arange(5) >= torch.tensor(tgt_lens)[:, None]] = PAD_ID
    return src_ids, src_pad, tgt_in


def incremental_logits(
    model: Transformer, src_ids: torch.Tensor, src_pad: torch.Tensor, tgt_in: torch.Tensor
) -> torch.Tensor:
    """Logits (B, T, V) from feeding `tgt_in` one token at a time."""
    memory = model.encode(src_ids, src_pad)
    state = model.init_state(memory)
    steps = []
    for t in range(tgt_in.size(1)):
        logits, state = model.decode_step(tgt_in[:, t : t + 1], memory, state)
        steps.append(logits)
    assert state.step == tgt_in.size(1)
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("share", ["all", "decoder", "none"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_decode_step_matches_forward(norm: str, share: str, positions: str) -> None:
    model = tiny(norm=norm, share_embeddings=share, positions=positions, activation="gelu")
    src_ids, src_pad, tgt_in = padded_batch()
    with torch.no_grad():
        full = model(src_ids, src_pad, tgt_in)
        step = incremental_logits(model, src_ids, src_pad, tgt_in)
    assert full.shape == (3, 5, VOCAB)
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


def test_attention_matches_textbook_formula() -> None:
    torch.manual_seed(0)
    d = 8
    attn = MultiHeadAttention(d, 1, dropout=0.0).eval()
    query, key_value = torch.randn(2, 3, d), torch.randn(2, 4, d)
    key_pad = torch.tensor([[False, False, False, False], [False, False, True, True]])
    with torch.no_grad():
        out, _ = attn(query, key_value, key_pad=key_pad)
        q, k, v = attn.q_proj(query), attn.k_proj(key_value), attn.v_proj(key_value)
        for b in range(2):
            keep = ~key_pad[b]
            weights = torch.softmax(q[b] @ k[b][keep].T / math.sqrt(d), dim=-1)
            expected = attn.out_proj(weights @ v[b][keep])
            torch.testing.assert_close(out[b], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_and_softmax_paths_agree(causal: bool) -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, dropout=0.1).eval()
    query = torch.randn(3, 5, 16)
    key_value = query if causal else torch.randn(3, 6, 16)
    key_pad = torch.zeros(3, key_value.size(1), dtype=torch.bool)
    key_pad[1, 4:] = True
    key_pad[2, 2:] = True
    for pad in (None, key_pad):
        with torch.no_grad():
            fast, none = attn(query, key_value, key_pad=pad, causal=causal)
            slow, weights = attn(query, key_value, key_pad=pad, causal=causal, need_weights=True)
        assert none is None and weights is not None
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
        assert weights.shape == (3, 5, key_value.size(1))
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
        if pad is not None:
            assert (weights.masked_select(pad[:, None, :].expand_as(weights)) == 0).all()
        if causal:
            assert (weights.triu(1) == 0).all()


def test_return_attention() -> None:
    model = tiny()
    src_ids, src_pad, tgt_in = padded_batch()
    with torch.no_grad():
        plain = model(src_ids, src_pad, tgt_in)
        logits, attn = model(src_ids, src_pad, tgt_in, return_attention=True)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)
    assert attn.shape == (3, 5, 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))
    assert (attn[1, :, 3:] == 0).all()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_invariance(norm: str) -> None:
    model = tiny(norm=norm)
    src_ids, src_pad, tgt_in = padded_batch()
    row, src_len, tgt_len = 1, 3, 2
    with torch.no_grad():
        batch_memory = model.encode(src_ids, src_pad)
        batch_logits = model(src_ids, src_pad, tgt_in)
        alone_src, alone_pad = src_ids[row : row + 1, :src_len], src_pad[row : row + 1, :src_len]
        alone_memory = model.encode(alone_src, alone_pad)
        alone_logits = model(alone_src, alone_pad, tgt_in[row : row + 1, :tgt_len])
    torch.testing.assert_close(batch_memory.out[row, :src_len], alone_memory.out[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch_logits[row, :tgt_len], alone_logits[0], atol=1e-5, rtol=0)


def test_reorder_then_step_equals_reordered_batch() -> None:
    model = tiny()
    src_ids, src_pad, tgt_in = padded_batch()
    idx = torch.tensor([2, 0, 0, 1])  # permute and repeat rows, as beam search does
    with torch.no_grad():
        memory = model.encode(src_ids, src_pad)
        state = model.init_state(memory)
        for t in range(3):
            _, state = model.decode_step(tgt_in[:, t : t + 1], memory, state)
        logits, _ = model.decode_step(tgt_in[idx, 3:4], memory.index_select(idx), state.reorder(idx))
        expected = incremental_logits(model, src_ids[idx], src_pad[idx], tgt_in[idx, :4])[:, -1]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    shrunk = state.reorder(torch.tensor([2]))
    assert shrunk.src_pad.shape == (1, 6) and shrunk.step == 3
    assert all(shrunk.layer_self_kv(layer, shrunk.step).k.shape == (1, 2, 3, 8) for layer in range(2))
    assert all(shrunk.layer_cross_kv(layer).v.shape == (1, 2, 6, 8) for layer in range(2))


def test_cache_growth_and_reorders_match_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps from a one-position K/V buffer (grown at steps 1, 2 and 4), reordered in every way in between."""
    monkeypatch.setattr(transformer, "SELF_KV_CAPACITY", 1)
    model = tiny()
    src_ids, src_pad, tgt_in = padded_batch()
    reorders = [  # (idx, same_source) after steps 0..3: repeat per beam, move within sources, shrink, move
        (torch.tensor([0, 0, 1, 1, 2, 2]), False),
        (torch.tensor([1, 0, 3, 3, 5, 4]), True),
        (torch.tensor([2, 3, 4]), False),
        (torch.tensor([1, 0, 2]), True),
    ]
    rows = torch.arange(3)  # the source row behind each state row; its history is that row's target prefix
    with torch.no_grad():
        memory = model.encode(src_ids, src_pad)
        state = model.init_state(memory)
        for t in range(5):
            logits, state = model.decode_step(tgt_in[rows, t : t + 1], memory, state)
            expected = model(src_ids[rows], src_pad[rows], tgt_in[rows, : t + 1])[:, -1]
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
            if t < len(reorders):
                idx, same_source = reorders[t]
                rows, memory = rows[idx], memory.index_select(idx)
                state = state.reorder(idx, same_source=same_source)


def test_grouped_state_matches_forward_on_repeated_sources() -> None:
    """init_state(group=2) keeps one cross-attention K/V row per sentence for its two beams; steps
    with beams that differ, moves within sentences and whole-sentence shrinks equal the full
    forward pass over the repeated sources (the reference repeats the encoder output)."""
    model = tiny()
    src_ids, src_pad, _ = padded_batch()
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(4, VOCAB, (6, 5), generator=g)  # one target prefix per beam row
    targets[:, 0] = BOS_ID
    reorders = [  # (idx, same_source) after steps 0..3
        (torch.tensor([1, 0, 2, 2, 5, 4]), True),
        (torch.tensor([0, 1, 4, 5]), False),  # sentence 1 leaves
        (torch.tensor([1, 1, 2, 3]), True),
        (torch.tensor([2, 3]), False),  # sentence 0 leaves
    ]
    rows = torch.arange(6)  # the target row behind each state row; its sentence is row // 2
    with torch.no_grad():
        memory = model.encode(src_ids, src_pad)
        state = model.init_state(memory, group=2)
        assert state.cross_kv.size(0) == 3  # per sentence, not per beam
        for t in range(5):
            logits, state = model.decode_step(targets[rows, t : t + 1], memory, state)
            src = rows // 2
            expected = model(src_ids[src], src_pad[src], targets[rows, : t + 1])[:, -1]
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
            if t < len(reorders):
                idx, same_source = reorders[t]
                rows = rows[idx]
                state = state.reorder(idx, same_source=same_source)
    assert state.cross_kv.size(0) == 1


def test_grouped_attention_needs_a_non_causal_query() -> None:
    attn = MultiHeadAttention(16, 4, dropout=0.0).eval()
    kv = attn.project_kv(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="causal"):
        attn.attend(torch.randn(4, 1, 16), kv, causal=True, group=2)


def test_fused_qkv_projection_of_a_decoding_form_equals_the_full_forward() -> None:
    """The decoding form's one-matmul q/k/v projection, built after an in-place update of the
    projections (an optimizer step), gives the full forward's logits; the training model itself
    never holds a fused weight, so nothing in it can go stale."""
    from nmt.decode.search import decoding_form
    from nmt.model.attention import MultiHeadAttention

    model = tiny()
    src_ids, src_pad, tgt_in = padded_batch()
    with torch.no_grad():
        for layer in model.decoder:
            layer.self_attn.k_proj.weight.mul_(1.5)
            layer.self_attn.v_proj.bias.add_(0.1)
        form = decoding_form(model, torch.device("cpu"), "fp32")
        fused = incremental_logits(form, src_ids, src_pad, tgt_in[:, :3])
        expected = model(src_ids, src_pad, tgt_in[:, :3])
    assert not any(m.fused_qkv is not None for m in model.modules() if isinstance(m, MultiHeadAttention))
    assert any(m.fused_qkv is not None for m in form.modules() if isinstance(m, MultiHeadAttention))
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("share", ["all", "decoder", "none"])
def test_weight_tying(share: str) -> None:
    model = tiny(share_embeddings=share)
    src_w, tgt_w, out_w = model.src_embed.tokens.weight, model.tgt_embed.tokens.weight, model.out_proj.weight
    assert (src_w.data_ptr() == tgt_w.data_ptr()) == (share == "all")
    assert (tgt_w.data_ptr() == out_w.data_ptr()) == (share != "none")
    assert (tgt_w[PAD_ID] == 0).all() and (src_w[PAD_ID] == 0).all()
    # Tied parameters are counted once.
    n_embed = VOCAB * 16
    extra = {"all": 0, "decoder": 1, "none": 2}[share]
    untied = tiny(share_embeddings="none")
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == (
        (2 - extra) * n_embed
    )


def test_causal_future_tokens_do_not_change_earlier_logits() -> None:
    model = tiny()
    src_ids, src_pad, tgt_in = padded_batch()
    changed = tgt_in.clone()
    changed[:, 3] = (changed[:, 3] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(src_ids, src_pad, tgt_in), model(src_ids, src_pad, changed)
    torch.testing.assert_close(after[:, :3], before[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 3:], before[:, 3:])


def test_share_all_needs_equal_vocab_sizes() -> None:
    with pytest.raises(ValueError, match="share_embeddings='all'"):
        build_model(ModelConfig(preset="tiny"), src_vocab_size=10, tgt_vocab_size=12)
    build_model(ModelConfig(preset="tiny", share_embeddings="decoder"), src_vocab_size=10, tgt_vocab_size=12)


def test_positions_beyond_max_len_raise() -> None:
    model = tiny(max_len=4)
    src_ids, src_pad, tgt_in = padded_batch()
    with pytest.raises(ValueError, match="max_len=4"):
        model.encode(src_ids, src_pad)


def test_sinusoidal_table_and_state_dict() -> None:
    table = sinusoidal_table(50, 8)
    assert table[0, 0::2].eq(0).all() and table[0, 1::2].eq(1).all()
    assert table[7, 2].item() == pytest.approx(math.sin(7 / 10000 ** (2 / 8)), abs=1e-6)
    assert table[7, 3].item() == pytest.approx(math.cos(7 / 10000 ** (2 / 8)), abs=1e-6)
    assert not any("table" in key for key in tiny().state_dict())
    assert any("learned" in key for key in tiny(positions="learned").state_dict())


@pytest.mark.parametrize(
    ("preset", "d_model", "layers", "body_params_m"),
    [("tiny", 64, 2, None), ("small", 256, 3, None), ("base", 512, 6, 44.1), ("big", 1024, 6, 176.4)],
)
def test_presets(preset: str, d_model: int, layers: int, body_params_m: float | None) -> None:
    cfg = ModelConfig(preset=preset)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(cfg, src_vocab_size=32000, tgt_vocab_size=32000)
    assert isinstance(model, Transformer)
    assert model.src_embed.tokens.weight.shape == (32000, d_model)
    assert len(model.encoder) == len(model.decoder) == layers
    assert model.max_len == cfg.max_len
    if body_params_m is not None:
        total = sum(p.numel() for p in model.parameters())
        body = total - 32000 * d_model - (cfg.max_len * d_model if cfg.positions == "learned" else 0)
        assert body / 1e6 == pytest.approx(body_params_m, rel=0.01)


def test_train_mode_dropout_is_active() -> None:
    model = tiny().train()
    src_ids, src_pad, tgt_in = padded_batch()
    torch.manual_seed(1)
    a = model(src_ids, src_pad, tgt_in)
    b = model(src_ids, src_pad, tgt_in)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert model.src_embed.tokens.weight.grad is not None


@pytest.mark.parametrize("which", ["attention_dropout", "activation_dropout"])
def test_inner_dropouts_change_the_training_forward_only(which: str) -> None:
    """With residual/embedding dropout off, a training forward is deterministic unless `which` acts."""
    src_ids, src_pad, tgt_in = padded_batch()
    plain = tiny(dropout=0.0).train()
    assert torch.equal(plain(src_ids, src_pad, tgt_in), plain(src_ids, src_pad, tgt_in))
    model = tiny(dropout=0.0, **{which: 0.5})
    model.load_state_dict(plain.state_dict())
    model.train()
    torch.manual_seed(3)
    a = model(src_ids, src_pad, tgt_in)
    assert not torch.allclose(a, model(src_ids, src_pad, tgt_in))
    assert not torch.allclose(a, plain(src_ids, src_pad, tgt_in))
    model.eval(), plain.eval()
    assert torch.equal(model(src_ids, src_pad, tgt_in), plain(src_ids, src_pad, tgt_in))


def test_config_dropouts_reach_the_layers() -> None:
    from nmt.config import ModelConfig

    model = build_model(
        ModelConfig(preset="tiny", attention_dropout=0.2, activation_dropout=0.3), src_vocab_size=10, tgt_vocab_size=10
    )
    layer = model.decoder[0]  # type: ignore[attr-defined]
    assert layer.self_attn.dropout == layer.cross_attn.dropout == 0.2
    assert layer.ffn.dropout.p == 0.3 and layer.dropout.p == 0.1


@pytest.mark.parametrize("arch, norm", [("transformer", "pre"), ("transformer", "post"), ("rnn", "pre")])
def test_training_skips_target_padding_with_the_full_forwards_logits_loss_and_gradient(arch: str, norm: str) -> None:
    """`keep` (the training step's non-pad target positions; the Transformer then skips padding
    in the whole decoder): the same logits as the full forward there, and the same loss and
    parameter gradients as the loss over the full (B, T, V) logits."""
    from nmt.train.loss import label_smoothed_nll

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, norm=norm, d_model=16, n_heads=2, ffn_dim=32, enc_layers=1, dec_layers=2, dropout=0.0)  # type: ignore[arg-type]
    model = build_model(cfg, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
    src_ids, src_pad, tgt_in = padded_batch()
    tgt_out = torch.roll(tgt_in, -1, dims=1)  # any gold ids, padded where tgt_in is
    tgt_out[tgt_in.eq(PAD_ID)] = PAD_ID
    keep = tgt_out.flatten().ne(PAD_ID).nonzero().squeeze(1)
    assert 0 < keep.numel() < tgt_out.numel()

    full = model(src_ids, src_pad, tgt_in)
    loss_full, _ = label_smoothed_nll(full, tgt_out, smoothing=0.1, pad_id=PAD_ID)
    grads_full = torch.autograd.grad(loss_full, list(model.parameters()), allow_unused=True)
    kept = model(src_ids, src_pad, tgt_in, keep=keep)
    assert kept.shape == (keep.numel(), VOCAB)
    torch.testing.assert_close(kept, full.flatten(0, 1)[keep], rtol=0, atol=1e-6)
    loss_kept, _ = label_smoothed_nll(kept, tgt_out.flatten()[keep], smoothing=0.1, pad_id=PAD_ID, in_place=True)
    torch.testing.assert_close(loss_kept, loss_full, rtol=1e-6, atol=0)
    grads_kept = torch.autograd.grad(loss_kept, list(model.parameters()), allow_unused=True)
    for a, b in zip(grads_kept, grads_full, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
