"""The recurrent encoder-decoders: incremental decoding, padding, attention isolation, config errors."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from nmt.config import ModelConfig, load_config
from nmt.errors import ConfigError
from nmt.model import build_model
from nmt.model.recurrent import RNNSeq2Seq
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID

torch.set_num_threads(1)

VOCAB = 12
ATTENTIONS = ["none", "bahdanau", "luong_dot", "luong_general"]


def rnn(**overrides: Any) -> RNNSeq2Seq:
    torch.manual_seed(0)
    args: dict[str, Any] = dict(arch="rnn", d_model=16, enc_layers=2, dec_layers=2, dropout=0.0, max_len=32)
    model = build_model(ModelConfig(**{**args, **overrides}), src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
    assert isinstance(model, RNNSeq2Seq)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.tensor([[4, 5, 6, EOS_ID, PAD_ID, PAD_ID], [5, 6, 7, 8, 9, EOS_ID], [7, EOS_ID] + [PAD_ID] * 4])
    tgt_in = torch.tensor([[BOS_ID, 4, 5, 6, 7], [BOS_ID, 9, 8, 7, 6], [BOS_ID, 10, 11, 4, 4]])
    return src, src == PAD_ID, tgt_in


def incremental_logits(model: RNNSeq2Seq, src: torch.Tensor, pad: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    memory = model.encode(src, pad)
    state = model.init_state(memory)
    steps = []
    for t in range(tgt_in.size(1)):
        logits, state = model.decode_step(tgt_in[:, t : t + 1], memory, state)
        steps.append(logits)
    return torch.stack(steps, 1)


CASES = [
    dict(attention=att, cell=cell, input_feeding=feed)
    for att, cell, feed in itertools.product(ATTENTIONS, ["lstm", "gru"], [False, True])
    if not (feed and att == "none")
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['cell']}-{c['attention']}-feed{int(c['input_feeding'])}")
def test_decode_step_matches_forward(case: dict[str, Any]) -> None:
    model = rnn(**case, enc_layers=3, dec_layers=3)  # 3 layers: the residual connection is active
    src, pad, tgt_in = batch()
    with torch.no_grad():
        full = model(src, pad, tgt_in)
        inc = incremental_logits(model, src, pad, tgt_in)
    torch.testing.assert_close(inc, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("share", ["all", "decoder", "none"])
@pytest.mark.parametrize("depths", [(1, 1), (2, 1), (1, 3)])
def test_decode_step_matches_forward_shapes(share: str, depths: tuple[int, int]) -> None:
    model = rnn(share_embeddings=share, enc_layers=depths[0], dec_layers=depths[1], bidirectional=depths[0] != 2)
    src, pad, tgt_in = batch()
    with torch.no_grad():
        torch.testing.assert_close(incremental_logits(model, src, pad, tgt_in), model(src, pad, tgt_in))
    assert (model.out_proj.weight is model.tgt_embed.weight) == (share != "none")
    assert (model.src_embed is model.tgt_embed) == (share == "all")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_reaches_encoder_outputs_or_final_state(cell: str, bidirectional: bool) -> None:
    model = rnn(cell=cell, bidirectional=bidirectional, enc_layers=3)
    src, pad, _ = batch()
    with torch.no_grad():
        together = model.encode(src, pad)
        lengths = (~pad).sum(1).tolist()
        assert min(lengths) < src.size(1)  # so that the padding check below checks something
        for b, n in enumerate(lengths):
            alone = model.encode(src[b : b + 1, :n], pad[b : b + 1, :n])
            torch.testing.assert_close(together.out[b, :n], alone.out[0])
            assert not together.out[b, n:].any()  # exactly zero at this row's padding
            torch.testing.assert_close(together.final_h[:, b], alone.final_h[:, 0])
            if cell == "lstm":
                assert together.final_c is not None and alone.final_c is not None
                torch.testing.assert_close(together.final_c[:, b], alone.final_c[:, 0])
            else:
                assert together.final_c is None


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_without_attention_the_decoder_sees_only_the_final_states(attention: str) -> None:
    """Sutskever: d(logits)/d(encoder states) is exactly zero; with attention it is not."""
    model = rnn(attention=attention)
    src, pad, tgt_in = batch()
    memory = model.encode(src, pad)
    state = model.init_state(memory)
    out, _, _ = model._decode(model.tgt_embed(tgt_in), memory, state)
    logits = model.out_proj(out)
    grads = torch.autograd.grad(
        logits.square().sum(), [memory.out, memory.final_h], allow_unused=True, materialize_grads=True
    )
    to_states, to_final = grads
    assert to_final.abs().sum() > 0
    if attention == "none":
        assert torch.equal(to_states, torch.zeros_like(to_states))
    else:
        assert to_states.abs().sum() > 0
        # padding positions never receive gradient through attention
        assert torch.equal(to_states[pad], torch.zeros_like(to_states[pad]))


@pytest.mark.parametrize("attention", ["bahdanau", "luong_dot", "luong_general"])
def test_attention_weights_are_distributions_over_real_tokens(attention: str) -> None:
    model = rnn(attention=attention)
    src, pad, tgt_in = batch()
    with torch.no_grad():
        logits, weights = model(src, pad, tgt_in, return_attention=True)
    assert weights.shape == (src.size(0), tgt_in.size(1), src.size(1))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    assert torch.equal(weights.masked_select(pad.unsqueeze(1)), torch.zeros(int(pad.sum()) * tgt_in.size(1)))
    torch.testing.assert_close(logits, model(src, pad, tgt_in))


def test_no_attention_has_no_weights() -> None:
    model = rnn(attention="none")
    assert not model.has_attention
    src, pad, tgt_in = batch()
    with pytest.raises(ValueError, match="no attention"):
        model(src, pad, tgt_in, return_attention=True)


def test_reorder_then_step_equals_reordered_batch() -> None:
    model = rnn(attention="luong_general", cell="lstm")
    src, pad, tgt_in = batch()
    idx = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        memory = model.encode(src, pad)
        state = model.init_state(memory)
        _, state = model.decode_step(tgt_in[:, :1], memory, state)
        logits, _ = model.decode_step(tgt_in[:, 1:2].index_select(0, idx), memory.index_select(idx), state.reorder(idx))
        expected = model(src.index_select(0, idx), pad.index_select(0, idx), tgt_in[:, :2].index_select(0, idx))
    torch.testing.assert_close(logits, expected[:, 1])


def test_train_mode_dropout_is_active() -> None:
    model = rnn(dropout=0.3).train()
    src, pad, tgt_in = batch()
    assert not torch.equal(model(src, pad, tgt_in), model(src, pad, tgt_in))


def write_cfg(tmp_path, model_yaml: str):
    path = tmp_path / "rnn.yaml"
    path.write_text(f"name: x\nworkdir: {tmp_path}\nmodel:\n{model_yaml}")
    return path


def test_bad_rnn_config_values_name_the_key_and_nearest_value(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model.cell: invalid value 'lstn'.*did you mean lstm"):
        load_config(write_cfg(tmp_path, "  arch: rnn\n  cell: lstn\n"))
    with pytest.raises(ConfigError, match=r"model.attention: invalid value 'bahdanu'.*did you mean bahdanau"):
        load_config(write_cfg(tmp_path, "  arch: rnn\n  attention: bahdanu\n"))
    with pytest.raises(ConfigError, match=r"model.input_feeding needs attention"):
        load_config(write_cfg(tmp_path, "  arch: rnn\n  attention: none\n  input_feeding: true\n"))
    with pytest.raises(ConfigError, match=r"d_model \(33\) must be even"):
        load_config(write_cfg(tmp_path, "  arch: rnn\n  d_model: 33\n"))


def test_input_feeding_defaults_follow_the_attention() -> None:
    assert ModelConfig(arch="rnn", attention="luong_dot").input_feeding is True
    assert ModelConfig(arch="rnn", attention="bahdanau").input_feeding is False
    assert ModelConfig(arch="rnn", attention="none").input_feeding is False
    assert ModelConfig(arch="rnn", attention="luong_general", input_feeding=False).input_feeding is False


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bf16_beam_search_runs_on_a_cast_copy_and_scores_like_fp32(cell: str) -> None:
    """decode.precision bf16 decodes with a bf16 copy of the weights (recurrent cells included);
    each hypothesis' score is what the fp32 model gives it, up to bf16 rounding."""
    import dataclasses

    from nmt.config import DecodeConfig
    from nmt.decode.lengths import length_penalty
    from nmt.decode.search import decoding_form, search

    model = rnn(cell=cell, attention="luong_general", input_feeding=True)
    src, pad, _ = batch()
    seqs = [row[~p].tolist() for row, p in zip(src, pad, strict=True)]
    cfg = DecodeConfig(beam=3, nbest=1, max_len_a=0.0, max_len_b=4, precision="bf16")
    cfg = dataclasses.replace(cfg, alpha=1.0)
    cpu = torch.device("cpu")
    hyps = search(decoding_form(model, cpu, cfg.precision), seqs, cfg, device=cpu)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    fp32_hyps = search(decoding_form(model, cpu, "fp32"), seqs, dataclasses.replace(cfg, precision="fp32"), device=cpu)
    assert [h[0].score for h in hyps] != [h[0].score for h in fp32_hyps]  # bf16 really ran
    for seq, (best,) in zip(seqs, hyps, strict=True):
        ids = torch.tensor([[BOS_ID, *best.tokens]])
        with torch.no_grad():
            logp = model(torch.tensor([seq]), torch.tensor([seq]) == PAD_ID, ids).float().log_softmax(-1)[0]
        gold = torch.tensor([*best.tokens, EOS_ID])
        fp32 = logp.gather(1, gold[:, None]).sum() / length_penalty(torch.tensor(len(gold)), mode="average", alpha=1.0)
        assert best.score == pytest.approx(fp32.item(), abs=0.05)
