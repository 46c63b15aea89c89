"""`nmt export CKPT --hf DIR`: a checkpoint -> a Hugging Face MarianMT directory, which transformers loads
with `MarianMTModel.from_pretrained` and `MarianTokenizer.from_pretrained`, and CTranslate2's
`ct2-transformers-converter` converts. Written without transformers (json and safetensors).

    DIR/config.json             MarianConfig (model_type marian), ids in Marian's order (below)
    DIR/generation_config.json  beam size and length limit from decode.*; pad and <s> never generated
    DIR/model.safetensors       the weights under MarianMT's names (tied ones once, as save_pretrained does)
    DIR/source.spm, target.spm  the checkpoint's SentencePiece models
    DIR/vocab.json [target_vocab.json]   piece -> id: SentencePiece's ids, or an imported model's id table
    DIR/tokenizer_config.json   MarianTokenizer, the languages, separate_vocabs

Ids follow Marian's conventions, which CTranslate2's MarianMT converter relies on: </s> 0, <unk> 1,
the other pieces in nmt's order, then <s> (the decoder's start, nmt's bos row) and <pad> last. The
converter drops the last row and starts the decoder from a zero vector, as MarianMT's pad row is in
OPUS-MT models (and in models imported from them, until fine-tuning moves it): for a model whose <s>
row is not zero (any nmt-trained one) the export warns that only transformers reproduces it, and
`nmt export -o DIR` is the way to CTranslate2.

What MarianMT cannot express is refused with the option named: a recurrent model, pre-norm
(`model.norm: pre`; MarianMT's layers are post-norm only), learned positions, and a multilingual model
whose language token starts the decoder (MarianMT's decoder always starts with one token; a source-side
tag, OPUS-MT's form, exports). MarianMT's sinusoidal table holds the sines in the first half of the
dimensions and the cosines in the second (`nmt.model.layout`); nmt's own models interleave them, so
their residual stream is permuted into Marian's order: every weight that reads or writes it (the
embeddings, the attention and FFN projections on the residual side, the LayerNorms, the output layer)
is permuted alike, which computes the same function exactly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nmt import __version__
from nmt.checkpoint import checkpoint_config, read_checkpoint
from nmt.config import ExperimentConfig
from nmt.console import warn
from nmt.data.vocab import Vocab
from nmt.errors import NmtError
from nmt.fileio import atomic_directory
from nmt.marian_format import ACTIVATIONS, LAYER_NAMES
from nmt.model.layout import checkpoint_layout
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# how each layer weight meets the residual stream: "in" reads it (columns), "out" writes it (rows)
RESIDUAL_SIDE = {
    "self_attn.q_proj": "in", "self_attn.k_proj": "in", "self_attn.v_proj": "in", "self_attn.out_proj": "out",
    "cross_attn.q_proj": "in", "cross_attn.k_proj": "in", "cross_attn.v_proj": "in", "cross_attn.out_proj": "out",
    "ffn.fc1": "in", "ffn.fc2": "out", "self_attn_norm": "out", "cross_attn_norm": "out", "ffn_norm": "out",
}  # fmt: skip


@dataclass(frozen=True)
class HFResult:
    """What `export_hf` wrote."""

    out_dir: Path
    checkpoint: Path
    step: int
    permuted: bool  # nmt's interleaved positions: the residual stream was permuted into Marian's order
    elapsed_s: float


def _refuse(checkpoint: Path, option: str, why: str) -> NmtError:
    return NmtError(
        f"{checkpoint}: {option}: {why}, so this model cannot be a Hugging Face MarianMT model",
        hint=f"export it for nmt or CTranslate2 instead: nmt export {checkpoint} -o DIR",
    )


def check_expressible(cfg: ExperimentConfig, checkpoint: Path) -> None:
    """NmtError naming the option MarianMT cannot express, if any."""
    m = cfg.model
    if m.arch != "transformer":
        raise _refuse(checkpoint, f"model.arch: {m.arch}", "MarianMT is a Transformer")
    if m.norm == "pre":
        raise _refuse(checkpoint, "model.norm: pre", "MarianMT's layers are post-norm only")
    if m.positions != "sinusoidal":
        raise _refuse(checkpoint, f"model.positions: {m.positions}", "MarianMT has sinusoidal positions only")
    if cfg.data.multilingual and cfg.data.lang_token == "target":
        raise _refuse(
            checkpoint,
            "data.lang_token: target",
            "MarianMT starts its decoder with one fixed token, not a language token per request (a source-side "
            "tag, data.lang_token: source, exports)",
        )


def residual_order(d_model: int) -> torch.Tensor:
    """perm with interleaved_table[:, perm] == halves_table: the sines (even columns) first, then the cosines."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def marian_ids(size: int) -> torch.Tensor:
    """For each Marian id, the nmt id it holds: </s>, <unk>, nmt ids 4.., <s>, <pad> (see the module docstring)."""
    return torch.tensor([EOS_ID, UNK_ID, *range(EOS_ID + 1, size), BOS_ID, PAD_ID])


def _marian_weights(
    state: dict[str, torch.Tensor], cfg: ExperimentConfig, perm: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """nmt's state dict under MarianMT's names and ids, the residual stream permuted by `perm` (None: as is)."""

    def p_in(w: torch.Tensor) -> torch.Tensor:  # reads the residual stream: permute the columns
        return w if perm is None else w[:, perm]

    def p_out(w: torch.Tensor) -> torch.Tensor:  # writes it: permute the rows (or a vector's entries)
        return w if perm is None else w[perm]

    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] not in ("encoder", "decoder") or not parts[1].isdigit():
            continue
        stack, index, name, kind = parts[0], parts[1], ".".join(parts[2:-1]), parts[-1]
        side = RESIDUAL_SIDE[name]
        tensor = p_in(value) if side == "in" and kind == "weight" else (value if side == "in" else p_out(value))
        out[f"model.{stack}.layers.{index}.{LAYER_NAMES[name]}.{kind}"] = tensor.contiguous()
    share = cfg.model.share_embeddings
    src_rows = marian_ids(state["src_embed.tokens.weight"].size(0))
    tgt_rows = marian_ids(state["tgt_embed.tokens.weight"].size(0))
    src = p_in(state["src_embed.tokens.weight"])[src_rows]
    tgt = p_in(state["tgt_embed.tokens.weight"])[tgt_rows]
    if share == "all":
        out["model.shared.weight"] = src.contiguous()  # encoder, decoder and output: tied by the config
    else:
        out["model.encoder.embed_tokens.weight"] = src.contiguous()
        out["model.decoder.embed_tokens.weight"] = tgt.contiguous()
        if share == "none":
            out["lm_head.weight"] = p_in(state["out_proj.weight"])[tgt_rows].contiguous()
    bias = state.get("out_proj.bias")
    vocab = state["out_proj.weight"].size(0)
    bias = (bias if bias is not None else torch.zeros(vocab))[tgt_rows]
    out["final_logits_bias"] = bias.reshape(1, vocab).contiguous()
    return {k: v.float() for k, v in out.items()}


def _config(cfg: ExperimentConfig, vocab: Vocab, embed_scale: bool) -> dict[str, Any]:
    m = cfg.model
    return {
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        "vocab_size": vocab.src_size,
        "decoder_vocab_size": vocab.tgt_size,
        "d_model": m.d_model,
        "encoder_layers": m.enc_layers,
        "decoder_layers": m.dec_layers,
        "encoder_attention_heads": m.n_heads,
        "decoder_attention_heads": m.n_heads,
        "encoder_ffn_dim": m.ffn_dim,
        "decoder_ffn_dim": m.ffn_dim,
        "activation_function": ACTIVATIONS[m.activation],
        "max_position_embeddings": m.max_len,
        "dropout": m.dropout,
        "attention_dropout": m.attention_dropout,
        "activation_dropout": m.activation_dropout,
        "scale_embedding": embed_scale,
        "pad_token_id": vocab.tgt_size - 1,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "decoder_start_token_id": vocab.tgt_size - 2,
        "share_encoder_decoder_embeddings": m.share_embeddings == "all",
        "tie_word_embeddings": m.share_embeddings != "none",
        "is_encoder_decoder": True,
        "use_cache": True,
        "nmt_version": __version__,
    }


def _pieces(vocab: Vocab) -> tuple[list[str], list[str]]:
    """The pieces in Marian's id order, per side."""
    return (
        vocab.src_piece_list(marian_ids(vocab.src_size).tolist()),
        vocab.tgt_piece_list(marian_ids(vocab.tgt_size).tolist()),
    )


def export_hf(checkpoint: Path, out_dir: Path, *, force: bool = False) -> HFResult:
    """Write `checkpoint` as a Hugging Face MarianMT directory `out_dir` (see the module docstring)."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise NmtError(f"{out_dir}: directory exists and is not empty", hint="use --force to replace it")
    if out_dir.exists() and force and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise NmtError(f"{out_dir}: not a model directory; --force only replaces an earlier export")
    ckpt = read_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    check_expressible(cfg, checkpoint)
    vocab = Vocab.from_checkpoint(ckpt["vocab"])
    layout = checkpoint_layout(ckpt, checkpoint)
    if layout.positions == "fairseq":
        raise _refuse(checkpoint, "fairseq's position table (an imported fairseq model)",
                      "MarianMT's sinusoidal table has other frequencies and numbers positions from 0")  # fmt: skip
    if layout.layernorm_embedding:
        raise _refuse(checkpoint, "a LayerNorm on the embeddings (fairseq's --layernorm-embedding)",
                      "MarianMT has none")  # fmt: skip
    src_pieces, tgt_pieces = _pieces(vocab)
    for pieces in (src_pieces, tgt_pieces):
        assert pieces[:2] == ["</s>", "<unk>"] and pieces[-2:] == ["<s>", "<pad>"], (pieces[:2], pieces[-2:])
    if src_pieces[-1:] and vocab.src_size != vocab.tgt_size and cfg.model.share_embeddings == "all":
        raise NmtError(f"{checkpoint}: source and target vocabularies differ in size but share one embedding")
    joint = src_pieces == tgt_pieces
    perm = residual_order(cfg.model.d_model) if layout.positions == "interleaved" else None
    weights = _marian_weights(ckpt["model"], cfg, perm)
    config = _config(cfg, vocab, layout.embed_scale)
    start = ckpt["model"]["tgt_embed.tokens.weight"][BOS_ID]
    if start.abs().max().item() > 0:
        warn(
            f"{checkpoint}: the decoder starts from a learned <s> embedding: transformers reproduces this model, but "
            "ct2-transformers-converter, which starts MarianMT models from a zero vector, does not; for "
            f"CTranslate2 use nmt export {checkpoint} -o DIR"
        )
    pad, first = vocab.tgt_size - 1, vocab.tgt_size - 2
    generation = {
        "bad_words_ids": [[pad], [first]],  # nmt never generates either
        "decoder_start_token_id": first,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "pad_token_id": pad,
        "max_length": cfg.model.max_len,
        "num_beams": cfg.decode.beam,
    }
    tokenizer = {
        "tokenizer_class": "MarianTokenizer",
        "source_lang": cfg.data.src_lang,
        "target_lang": cfg.data.tgt_lang,
        "separate_vocabs": not joint,
        "model_max_length": cfg.model.max_len,
        "unk_token": "<unk>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
    }
    with atomic_directory(out_dir) as staging:
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8")
        (staging / "source.spm").write_bytes(vocab.src_model)
        (staging / "target.spm").write_bytes(vocab.tgt_model)
        (staging / "vocab.json").write_text(
            json.dumps({p: i for i, p in enumerate(src_pieces)}, ensure_ascii=False), encoding="utf-8"
        )
        if not joint:
            (staging / "target_vocab.json").write_text(
                json.dumps({p: i for i, p in enumerate(tgt_pieces)}, ensure_ascii=False), encoding="utf-8"
            )
    return HFResult(out_dir, checkpoint, int(ckpt.get("step", 0)), perm is not None, time.perf_counter() - start)
