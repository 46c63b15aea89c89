"""`nmt import DIR -o OUT.pt`: a Hugging Face MarianMT directory (an OPUS-MT model) -> a self-contained
nmt checkpoint that translate, evaluate, export, serve and fine-tuning take like any other.

What a MarianMT directory holds (`transformers`' `save_pretrained`, and the hub's OPUS-MT models):

    config.json              MarianConfig: sizes, activation, scale_embedding, the special ids, ...
    model.safetensors | pytorch_model.bin     the weights (read with safetensors, or torch.load(weights_only))
    source.spm, target.spm   the SentencePiece models that split source and target text into pieces
    vocab.json               piece -> model id (one id space for both sides), [target_vocab.json: the
                             decoder's own, with separate vocabularies]
    tokenizer_config.json    source_lang/target_lang, when the converter wrote them
    generation_config.json   num_beams, max_length, ...

How it maps onto nmt (no `transformers` needed):
- Ids. MarianMT's ids are vocab.json's (eos 0, unk 1, ..., pad last), not SentencePiece's. The
  checkpoint keeps nmt's fixed special ids (pad 0, unk 1, bos 2, eos 3) and an id table (the piece of
  every id, `nmt.data.vocab.Vocab`): id 0 is Marian's pad, 1 its unk, 3 its eos, 4.. the other pieces in
  Marian's order; the embedding, output and bias rows are permuted to match. MarianMT starts the
  decoder with pad; nmt starts it with bos, so row 2 is a copy of the pad row, and its output bias is
  -1e4, which keeps it out of every softmax (Marian has no such token; exp(-1e4) is 0 in fp32), so
  log-probabilities are Marian's.
- Layout (`nmt.model.layout`, stored in the checkpoint, not in a config file): Marian's sinusoidal
  table puts the sines in the first half of the dimensions and the cosines in the second; embeddings
  are scaled by sqrt(d_model) when `scale_embedding`; `final_logits_bias` is the output bias.
- Everything else is an nmt Transformer option: post-norm, swish/gelu/relu, the sizes, and the tying:
  shared encoder/decoder embeddings with a tied output layer are `share_embeddings: all`, a decoder
  tied to its output `decoder`, none tied `none` (a shared encoder/decoder embedding with an untied
  output layer becomes two equal copies: they may drift apart when fine-tuned).
- Languages. A multi-target model's vocab.json holds `>>fra<<`-style tags, which a user puts before
  the source text: imported, it is a multilingual model from its source language into each tagged
  one (`data.directions`, `data.lang_token: source`), and `nmt translate --tgt-lang fra` puts the
  tag's id before the source, as MarianTokenizer does with ">>fra<< text".
- Text. `MarianTokenizer` (transformers 5.24) splits a leading `>>xx<<` off the text and encodes the
  rest with source.spm into pieces; it defines a Moses punctuation `normalize` but its encoding path
  never calls it, so nmt encodes the same way, without sacremoses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nmt.config import ExperimentConfig, config_from_dict
from nmt.config.schema import LANG_CODE
from nmt.errors import ConfigError, NmtError
from nmt.interop.writing import ImportResult, layer_weights, start_row_bias, write_imported
from nmt.marian_format import NMT_ACTIVATIONS
from nmt.model.layout import Layout
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

REQUIRED = ("config.json", "source.spm", "target.spm", "vocab.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# transformers' MarianConfig defaults: save_pretrained writes only the values that differ from them
MARIAN_DEFAULTS: dict[str, Any] = {
    "vocab_size": 58101, "decoder_vocab_size": None, "max_position_embeddings": 1024,
    "encoder_layers": 12, "encoder_ffn_dim": 4096, "encoder_attention_heads": 16,
    "decoder_layers": 12, "decoder_ffn_dim": 4096, "decoder_attention_heads": 16,
    "activation_function": "gelu", "d_model": 1024, "dropout": 0.1, "attention_dropout": 0.0,
    "activation_dropout": 0.0, "decoder_start_token_id": 58100, "scale_embedding": False,
    "pad_token_id": 58100, "eos_token_id": 0, "share_encoder_decoder_embeddings": True,
    "tie_word_embeddings": True,
}  # fmt: skip


def _bad(
    directory: Path, what: str, hint: str = "give a directory written by MarianMTModel.save_pretrained"
) -> NmtError:
    return NmtError(f"{directory}: {what}", hint=hint)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path.parent, f"{path.name} is not readable JSON ({str(exc).splitlines()[0][:200]})") from None


def target_tags(pieces: list[str]) -> list[str]:
    """The languages of a multi-target OPUS-MT model's `>>xx<<` pieces (sorted; none for one target)."""
    return sorted(p[2:-2] for p in pieces if p.startswith(">>") and p.endswith("<<") and LANG_CODE.fullmatch(p[2:-2]))


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The state dict from model.safetensors (preferred) or pytorch_model.bin (torch.load, weights only)."""
    path = next((directory / name for name in WEIGHTS if (directory / name).is_file()), None)
    if path is None:
        raise _bad(directory, f"no weights: neither {' nor '.join(WEIGHTS)} is there")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors' and torch's errors for a truncated or damaged file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise _bad(
            directory, f"{path.name} cannot be read ({first})", hint="the file may be truncated; download it again"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad(directory, f"{path.name} does not hold a state dict of tensors")
    return state


def _vocab_table(directory: Path, name: str, config: dict[str, Any]) -> tuple[list[str], list[int]]:
    """nmt's id table over `name` (vocab.json or target_vocab.json) and, for each nmt id, the Marian id
    whose rows it takes (see the module docstring)."""
    vocab = _read_json(directory / name)
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise _bad(directory, f"{name} is not a mapping from pieces to ids")
    by_id = {v: k for k, v in vocab.items()}
    if len(by_id) != len(vocab) or sorted(by_id) != list(range(len(vocab))):
        raise _bad(directory, f"{name}: ids are not 0..{len(vocab) - 1}, each once")
    pad, eos = int(config.get("pad_token_id", -1)), int(config.get("eos_token_id", -1))
    unk = vocab.get("<unk>")
    for what, i in (("pad_token_id", pad), ("eos_token_id", eos), ("<unk>", unk)):
        if i is None or i not in by_id:
            raise _bad(directory, f"{name} has no entry for {what} ({i})")
    if "<s>" in vocab:
        raise _bad(directory, f"{name} has a <s> piece, which nmt keeps for the decoder's start")
    start = int(config.get("decoder_start_token_id", pad))
    if start != pad:
        raise _bad(directory, f"decoder_start_token_id {start} is not pad_token_id {pad}, as MarianMT's always is")
    rest = [i for i in range(len(vocab)) if i not in (pad, unk, eos)]
    rows = [pad, unk, pad, eos, *rest]  # nmt id -> Marian id; bos (2) copies pad, the decoder's start
    pieces = ["<pad>", "<unk>", "<s>", "</s>", *(by_id[i] for i in rest)]
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    return pieces, rows


def _languages(directory: Path, src_lang: str | None, tgt_lang: str | None, *, tagged: bool) -> tuple[str, str | None]:
    """The language pair: the flags, else tokenizer_config.json's source_lang/target_lang (a model with
    target language tags needs only its source language)."""
    tok = directory / "tokenizer_config.json"
    given = _read_json(tok) if tok.is_file() else {}
    src = src_lang or (given.get("source_lang") if isinstance(given, dict) else None)
    tgt = tgt_lang or (given.get("target_lang") if isinstance(given, dict) else None)
    if tagged and src:
        return str(src).split("_")[0], None
    if not src or not tgt:
        raise NmtError(
            f"{directory}: the model does not name its languages (tokenizer_config.json has no source_lang/"
            "target_lang): translate, Argos packages and serve need them",
            hint="give them: nmt import DIR -o OUT.pt --src-lang de --tgt-lang en",
        )
    return str(src).split("_")[0], str(tgt).split("_")[0]


def _nmt_config(
    directory: Path,
    config: dict[str, Any],
    src: str,
    tgt: str | None,
    *,
    share: str,
    joint: bool,
    vocab_size: int,
    tags: list[str],
) -> ExperimentConfig:
    heads = {config.get("encoder_attention_heads"), config.get("decoder_attention_heads")}
    ffn = {config.get("encoder_ffn_dim"), config.get("decoder_ffn_dim")}
    if len(heads) != 1 or len(ffn) != 1:
        what = "encoder and decoder differ in attention heads or FFN size, which nmt's Transformer cannot express"
        raise _bad(directory, what, hint="such a model cannot be imported")
    activation = NMT_ACTIVATIONS.get(str(config["activation_function"]))
    if activation is None:
        raise _bad(
            directory,
            f"activation_function {config.get('activation_function')!r} is not one of {', '.join(NMT_ACTIVATIONS)}",
        )
    generation = directory / "generation_config.json"
    gen = _read_json(generation) if generation.is_file() else {}
    raw = {
        "name": directory.name,
        "data": (
            {"directions": [f"{src}-{t}" for t in tags if t != src], "lang_token": "source"}
            if tags
            else {"src_lang": src, "tgt_lang": tgt}
        ),
        "vocab": {"joint": joint, "size": vocab_size},
        "model": {
            "arch": "transformer",
            "d_model": config["d_model"],
            "n_heads": heads.pop(),
            "ffn_dim": ffn.pop(),
            "enc_layers": config["encoder_layers"],
            "dec_layers": config["decoder_layers"],
            "dropout": float(config.get("dropout", 0.1)),
            "attention_dropout": float(config.get("attention_dropout", 0.0)),
            "activation_dropout": float(config.get("activation_dropout", 0.0)),
            "activation": activation,
            "norm": "post",
            "positions": "sinusoidal",
            "share_embeddings": share,
            "max_len": int(config["max_position_embeddings"]),
        },
        "decode": {"beam": int(gen.get("num_beams", config.get("num_beams", 4)) or 4)},
    }
    try:
        return config_from_dict(raw, where=f"{directory / 'config.json'} (imported)")
    except ConfigError as exc:
        raise _bad(directory, f"config.json describes a model nmt cannot hold ({exc.message})") from None


def _sharing(config: dict[str, Any]) -> str:
    """nmt's share_embeddings for the model's tying (see the module docstring)."""
    shared = bool(config.get("share_encoder_decoder_embeddings", True))
    tied = bool(config.get("tie_word_embeddings", True))
    if shared and tied:
        return "all"
    if tied:
        return "decoder"
    return "none"


def _embeddings(state: dict[str, torch.Tensor], directory: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(encoder embedding, decoder embedding, output projection) as stored (tied ones appear under several names)."""

    def get(*names: str) -> torch.Tensor:
        for name in names:
            if name in state:
                return state[name]
        raise _bad(directory, f"the weights have none of {', '.join(names)}")

    enc = get("model.encoder.embed_tokens.weight", "model.shared.weight")
    dec = get("model.decoder.embed_tokens.weight", "model.shared.weight")
    out = state.get("lm_head.weight", dec)
    return enc, dec, out


def import_marian(
    directory: Path, output: Path, *, src_lang: str | None = None, tgt_lang: str | None = None, force: bool = False
) -> ImportResult:
    """Write the MarianMT model in `directory` as the nmt checkpoint `output` (see the module docstring).

    Raises NmtError (one paragraph, nothing written) for a directory that is not a MarianMT export, a
    damaged or truncated weights file, vocabulary and embedding sizes that disagree, a model nmt cannot
    hold, an unnamed language pair, or an existing `output` without `force`.
    """
    directory, output = Path(directory), Path(output)
    if not directory.is_dir():
        raise NmtError(f"{directory}: not a directory", hint="give the directory of a Hugging Face MarianMT model")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise _bad(directory, f"not a MarianMT directory: {', '.join(missing)} missing")
    if output.exists() and not force:
        raise NmtError(f"{output}: exists", hint="use --force to replace it")
    given = _read_json(directory / "config.json")
    if not isinstance(given, dict) or given.get("model_type") != "marian":
        kind = given.get("model_type") if isinstance(given, dict) else None
        raise _bad(directory, f"config.json is not a MarianMT config (model_type {kind!r})")
    config = {**MARIAN_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    separate = bool(config.get("separate_vocabs")) or (directory / "target_vocab.json").is_file()
    src_pieces, src_rows = _vocab_table(directory, "vocab.json", config)
    tags = [] if separate else target_tags(src_pieces)
    src, tgt = _languages(directory, src_lang, tgt_lang, tagged=bool(tags))
    tgt_pieces, tgt_rows = _vocab_table(directory, "target_vocab.json", config) if separate else (src_pieces, src_rows)
    state = _read_weights(directory)
    enc, dec, out = _embeddings(state, directory)
    for what, table, matrix in (
        ("vocab.json", src_rows, enc),
        ("the decoder's vocabulary", tgt_rows, dec),
        ("the output layer", tgt_rows, out),
    ):
        if matrix.size(0) != len(table) - 1:  # the table has the added start row
            raise _bad(directory, f"{what} has {len(table) - 1} entries but its embedding {matrix.size(0)} rows",
                       hint="the vocabulary files and the weights come from different models")  # fmt: skip
    share = _sharing(config)
    if share == "all" and separate:
        share = "decoder"
    cfg = _nmt_config(
        directory, config, src, tgt, share=share, joint=not separate, vocab_size=len(src_pieces), tags=tags
    )
    bias = state.get("final_logits_bias", torch.zeros(1, out.size(0))).reshape(-1)
    layout = Layout(positions="halves", embed_scale=bool(config.get("scale_embedding", False)), logits_bias=True)
    weights = layer_weights(state, prefix="model.")
    src_index, tgt_index = torch.tensor(src_rows), torch.tensor(tgt_rows)
    weights["src_embed.tokens.weight"] = enc.index_select(0, src_index)
    weights["tgt_embed.tokens.weight"] = dec.index_select(0, tgt_index)
    weights["out_proj.weight"] = out.index_select(0, tgt_index)
    weights["out_proj.bias"] = start_row_bias(bias.index_select(0, tgt_index))
    src_model, tgt_model = (directory / "source.spm").read_bytes(), (directory / "target.spm").read_bytes()
    params = write_imported(
        output=output,
        cfg=cfg,
        layout=layout,
        weights=weights,
        vocab_models=(src_model, tgt_model),
        pieces=(src_pieces, tgt_pieces),
        bad=lambda what: _bad(directory, what),
    )
    return ImportResult(output, src, tgt or ", ".join(tags), params, len(tgt_pieces), share)
