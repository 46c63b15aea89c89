"""`nmt import CHECKPOINT.pt --spm SPM.model -o OUT.pt`: a fairseq `transformer` checkpoint -> a
self-contained nmt checkpoint that translate, evaluate, export, serve and `train.init_from` take like any
other. fairseq itself is never imported, and never needed.

Reading. A fairseq checkpoint is a pickle; it is loaded by `nmt.interop.pickles.load_untrusted`, which
admits tensors, containers, `argparse.Namespace` and inert stand-ins for omegaconf/fairseq objects and
refuses anything else before it runs. The model's description is `cfg["model"]` (fairseq >= 0.10: an
omegaconf node or a Namespace) or `args` (older); the task's is `cfg["task"]` or `args`.

Dictionaries. fairseq's ids are its `Dictionary`'s: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the
lines of `dict.<lang>.txt` in order ("piece count [#fairseq:overwrite]"; `fairseq-preprocess` pads them to
a multiple of 8 with `madeupwordNNNN`, which are ordinary entries here). The files are looked for in
`--dict-dir` when given, else in the data directory the checkpoint records (`task.data`, its first
`:`-separated path), else beside the checkpoint; the languages are `task.source_lang`/`target_lang`
unless `--src-lang/--tgt-lang` say otherwise. The text is split into pieces by the SentencePiece model(s)
given with `--spm` (once: both sides; twice: source, then target), as `spm_encode` did before
`fairseq-preprocess`; a piece the dictionary lacks is `<unk>`, as in fairseq.

Ids in nmt. The checkpoint keeps nmt's special ids (pad 0, unk 1, bos 2, eos 3) and an id table: nmt id 0
takes fairseq's `<pad>` rows, 1 `<unk>`, 3 `</s>`, 4.. fairseq's 4.. in order, and the last id fairseq's
`<s>` (which fairseq's softmax includes, so nmt keeps it; its piece is `FAIRSEQ_BOS_PIECE`). fairseq starts
the decoder with `</s>`; nmt starts it with bos, so row 2 is a copy of `</s>`'s embedding and its output
bias is -1e4 (out of every softmax), which keeps log-probabilities fairseq's.

The model. `--encoder/decoder-normalize-before` -> `model.norm` (pre, with the stacks' final LayerNorms;
both sides must agree), `--activation-fn` relu/gelu, `--share-all-embeddings` -> `share_embeddings:
all`, `--share-decoder-input-output-embed` -> `decoder`, else `none`; the layout (`nmt.model.layout`):
fairseq's sinusoidal table (sin|cos halves, frequencies over D/2-1, positions from 2), or learned positions
(rows 0-1 of fairseq's table, never used, are dropped), `--no-scale-embedding`, `--layernorm-embedding`.
Anything else (adaptive input/softmax, different encoder and decoder widths, an extra output projection,
`--no-decoder-final-norm`, cross-self-attention, layer dropping at inference, other architectures) is a
one-paragraph error naming it. The decode section is fairseq-generate's defaults: beam 5, length penalty
1.0 (score / |y|, EOS counted, as nmt's `average`), at most 200 tokens (`max_len_a 0`, `max_len_b 200`),
and its stopping rule (`early_stopping`: a hypothesis ends only on an EOS among the step's 5 best
candidates, and a sentence is done once 5 have ended; nmt's exact rule would search on for longer,
better-scoring outputs, which fairseq never returns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nmt.config import ExperimentConfig, config_from_dict
from nmt.errors import ConfigError, NmtError
from nmt.interop.pickles import load_untrusted, plain
from nmt.interop.writing import ImportResult, layer_weights, start_row_bias, write_imported
from nmt.marian_format import NMT_LAYER_NAMES
from nmt.model.layout import Layout
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3 of every fairseq Dictionary
FAIRSEQ_BOS_PIECE = "<fairseq:s>"  # nmt's name for fairseq's <s> row (nmt's own <s> is the decoder's start)
LEARNED_OFFSET = 2  # fairseq's learned position table: rows 0 (unused) and 1 (padding_idx) come first
ARCHS = {  # fairseq's TransformerModel architectures (fairseq/models/transformer/transformer_legacy.py)
    "transformer",
    "transformer_tiny",
    "transformer_iwslt_de_en",
    "transformer_wmt_en_de",
    "transformer_vaswani_wmt_en_de_big",
    "transformer_vaswani_wmt_en_fr_big",
    "transformer_wmt_en_de_big",
    "transformer_wmt_en_de_big_t2t",
}
# fairseq --activation-fn -> model.activation (fairseq's "swish" returns the SiLU class, not its output: no
# model trains with it; gelu_accurate/gelu_fast are the tanh approximation, which nmt does not have)
ACTIVATIONS = {"relu": "relu", "gelu": "gelu"}
BASE = {  # fairseq's base_architecture defaults, for a description that omits a value
    "encoder_embed_dim": 512,
    "encoder_ffn_embed_dim": 2048,
    "encoder_layers": 6,
    "encoder_attention_heads": 8,
    "encoder_normalize_before": False,
    "encoder_learned_pos": False,
    "decoder_learned_pos": False,
    "decoder_normalize_before": False,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "activation_fn": "relu",
    "dropout": 0.1,
    "share_decoder_input_output_embed": False,
    "share_all_embeddings": False,
    "no_token_positional_embeddings": False,
    "adaptive_input": False,
    "no_scale_embedding": False,
    "layernorm_embedding": False,
    "no_decoder_final_norm": False,
    "cross_self_attention": False,
    "max_source_positions": 1024,
    "max_target_positions": 1024,
}
UNSUPPORTED = {  # option -> why nmt's Transformer cannot hold it, refused when set
    "adaptive_input": "adaptive input embeddings",
    "adaptive_softmax_cutoff": "an adaptive softmax",
    "no_token_positional_embeddings": "a model without position embeddings",
    "cross_self_attention": "cross-self-attention",
    "encoder_layers_to_keep": "layer dropping at inference (LayerDrop pruning)",
    "decoder_layers_to_keep": "layer dropping at inference (LayerDrop pruning)",
    "no_cross_attention": "a decoder without cross-attention",
}
DICT_HINT = "give the dict.<lang>.txt fairseq-preprocess wrote"
CANNOT = "such a model cannot be imported"
IGNORED_KEYS = (
    "encoder.version",
    "decoder.version",
    "encoder.embed_positions._float_tensor",
    "decoder.embed_positions._float_tensor",
)


def _bad(
    path: Path, what: str, hint: str = "give a checkpoint written by fairseq-train --arch transformer"
) -> NmtError:
    return NmtError(f"{path}: {what}", hint=hint)


def _descriptions(ckpt: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model args, task args) as plain dicts, from cfg (fairseq >= 0.10) or args (older)."""
    cfg = plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    args = plain(ckpt.get("args")) if ckpt.get("args") is not None else None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(model, dict) and isinstance(args, dict):
        model = args
    if not isinstance(task, dict) and isinstance(args, dict):
        task = args
    if not isinstance(model, dict):
        raise _bad(path, "not a fairseq checkpoint: it describes no model (no cfg.model and no args)")
    return model, task if isinstance(task, dict) else {}


def read_dictionary(path: Path) -> list[str]:
    """fairseq's id table for `dict.<lang>.txt`: its four special symbols, then the file's entries in order."""
    symbols = list(FAIRSEQ_SPECIALS)
    seen = set(symbols)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not a readable dictionary ({exc})", hint=DICT_HINT) from None
    for number, line in enumerate(lines, 1):
        fields = line.rstrip().rsplit(" ", 1)
        overwrite = len(fields) == 2 and fields[1] == "#fairseq:overwrite"
        if overwrite:
            fields = fields[0].rsplit(" ", 1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or not fields[0]:
            raise _bad(path, f"line {number} is not '<piece> <count>': {line[:80]!r}", hint=DICT_HINT)
        piece = fields[0]
        if piece in seen and not overwrite:
            raise _bad(
                path,
                f"line {number}: {piece!r} appears twice",
                hint=DICT_HINT,
            )
        seen.add(piece)
        symbols.append(piece)
    return symbols


def _dictionary_dir(path: Path, task: dict[str, Any], dict_dir: Path | None, langs: tuple[str, str]) -> Path:
    """The directory holding dict.<src>.txt and dict.<tgt>.txt (see the module docstring for the rule)."""
    names = [f"dict.{lang}.txt" for lang in langs]
    candidates = [dict_dir] if dict_dir is not None else []
    if dict_dir is None:
        data = str(task.get("data") or "")
        if data:
            recorded = Path(data.split(":")[0])
            candidates.append(recorded if recorded.is_absolute() else path.parent / recorded)
        candidates.append(path.parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in names):
            return directory
    looked = ", ".join(str(d) for d in candidates)
    raise NmtError(
        f"{path}: {' and '.join(names)} not found (looked in {looked})",
        hint="give the directory fairseq-preprocess wrote them to: --dict-dir DIR",
    )


def _nmt_ids(symbols: list[str]) -> tuple[list[str], list[int]]:
    """nmt's id table and, for each nmt id, the fairseq id whose rows it takes (module docstring)."""
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3) and symbols[:4] == list(FAIRSEQ_SPECIALS)
    rest = list(range(4, len(symbols)))
    rows = [1, 3, 2, 2, *rest, 0]  # pad, unk, bos (the decoder's start: a copy of </s>), eos, ..., fairseq's <s>
    pieces = ["<pad>", "<unk>", "<s>", "</s>", *(symbols[i] for i in rest), FAIRSEQ_BOS_PIECE]
    if FAIRSEQ_BOS_PIECE in symbols:
        raise NmtError(f"the dictionary has a {FAIRSEQ_BOS_PIECE!r} entry, the name nmt gives fairseq's <s> row")
    return pieces, rows


def _check_supported(path: Path, m: dict[str, Any]) -> None:
    arch = str(m.get("arch") or m.get("_name") or "")
    if arch not in ARCHS:
        raise _bad(
            path,
            f"architecture {arch or '(none)'!r} is not one nmt imports (fairseq's transformer family: "
            f"{', '.join(sorted(ARCHS))})",
            hint="only encoder-decoder Transformers import",
        )
    for key, what in UNSUPPORTED.items():
        value = m.get(key)
        if value not in (None, False, "", 0, "None"):
            raise _bad(
                path, f"--{key.replace('_', '-')} ({what}) is set, which nmt's Transformer cannot express", hint=CANNOT
            )
    pairs = (
        ("encoder_embed_dim", "decoder_embed_dim"),
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
        ("encoder_normalize_before", "decoder_normalize_before"),
        ("encoder_learned_pos", "decoder_learned_pos"),
    )
    for a, b in pairs:
        if m[a] != m[b]:
            raise _bad(
                path,
                f"--{a.replace('_', '-')} {m[a]} and --{b.replace('_', '-')} {m[b]} differ, which nmt's "
                "Transformer (one setting for both stacks) cannot express",
                hint=CANNOT,
            )
    for key in ("decoder_output_dim", "decoder_input_dim"):
        if m.get(key) not in (None, m["decoder_embed_dim"]):
            what = f"--{key.replace('_', '-')} {m[key]} differs from --decoder-embed-dim {m['decoder_embed_dim']}"
            raise _bad(path, f"{what} (an extra projection nmt does not have)", hint=CANNOT)
    if m["decoder_normalize_before"] and m["no_decoder_final_norm"]:
        raise _bad(path, "--no-decoder-final-norm is set: nmt's pre-norm decoder ends with a LayerNorm", hint=CANNOT)
    if str(m["activation_fn"]) not in ACTIVATIONS:
        raise _bad(path, f"--activation-fn {m['activation_fn']} is not one of {', '.join(ACTIVATIONS)}", hint=CANNOT)


def _sharing(m: dict[str, Any]) -> str:
    if m["share_all_embeddings"]:
        return "all"
    return "decoder" if m["share_decoder_input_output_embed"] else "none"


def _nmt_config(
    path: Path, m: dict[str, Any], src: str, tgt: str, *, share: str, joint: bool, vocab_size: int, max_len: int
) -> ExperimentConfig:
    raw = {
        "name": path.stem,
        "data": {"src_lang": src, "tgt_lang": tgt},
        "vocab": {"joint": joint, "size": vocab_size},
        "model": {
            "arch": "transformer",
            "d_model": int(m["encoder_embed_dim"]),
            "n_heads": int(m["encoder_attention_heads"]),
            "ffn_dim": int(m["encoder_ffn_embed_dim"]),
            "enc_layers": int(m["encoder_layers"]),
            "dec_layers": int(m["decoder_layers"]),
            "dropout": float(m["dropout"]),
            "attention_dropout": float(m["attention_dropout"]),
            "activation_dropout": float(m.get("activation_dropout") or m.get("relu_dropout") or 0.0),
            "activation": ACTIVATIONS[str(m["activation_fn"])],
            "norm": "pre" if m["encoder_normalize_before"] else "post",
            "positions": "learned" if m["encoder_learned_pos"] else "sinusoidal",
            "share_embeddings": share,
            "max_len": max_len,
        },
        # fairseq-generate's defaults: beam 5, --lenpen 1 (score / |y|), --max-len-a 0 --max-len-b 200, its stopping
        "decode": {
            "beam": 5,
            "length_penalty": "average",
            "alpha": 1.0,
            "max_len_a": 0.0,
            "max_len_b": 200,
            "early_stopping": True,
        },
    }
    try:
        return config_from_dict(raw, where=f"{path} (imported)")
    except ConfigError as exc:
        raise _bad(path, f"it describes a model nmt cannot hold ({exc.message})") from None


def _read_spm(paths: list[Path]) -> tuple[bytes, bytes]:
    if len(paths) not in (1, 2):
        raise NmtError(
            f"--spm given {len(paths)} times",
            hint="give the SentencePiece model once (both sides) or twice (source, then target)",
        )
    models = []
    for p in paths:
        try:
            models.append(Path(p).read_bytes())
        except OSError as exc:
            raise NmtError(
                f"{p}: cannot read the SentencePiece model ({exc.strerror})",
                hint="give the .model file spm_train wrote",
            ) from None
    return models[0], models[-1]


def import_fairseq(
    path: Path,
    output: Path,
    *,
    spm: list[Path],
    dict_dir: Path | None = None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    force: bool = False,
) -> ImportResult:
    """Write the fairseq Transformer checkpoint `path` as the nmt checkpoint `output` (module docstring).

    Raises NmtError (one paragraph, nothing written) for a pickle that names anything but data, a file
    that is not a fairseq checkpoint or is truncated, an unsupported architecture or option, missing or
    mismatched dictionaries, an unreadable SentencePiece model, or an existing `output` without `force`.
    """
    path, output = Path(path), Path(output)
    if not path.is_file():
        raise NmtError(
            f"{path}: no such file", hint="give a checkpoint written by fairseq-train (e.g. checkpoint_best.pt)"
        )
    if output.exists() and not force:
        raise NmtError(f"{output}: exists", hint="use --force to replace it")
    vocab_models = _read_spm(spm)
    ckpt = load_untrusted(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise _bad(path, "not a fairseq checkpoint (no 'model' state dict)")
    state: dict[str, torch.Tensor] = {k: v for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)}
    given, task = _descriptions(ckpt, path)
    m = {**BASE, **{k: v for k, v in given.items() if v is not None}}
    m.setdefault("decoder_embed_dim", m["encoder_embed_dim"])
    for key in ("decoder_ffn_embed_dim", "decoder_attention_heads", "decoder_layers"):
        m.setdefault(key, m[key.replace("decoder", "encoder")])
    _check_supported(path, m)
    src = src_lang or task.get("source_lang")
    tgt = tgt_lang or task.get("target_lang")
    if not src or not tgt:
        raise NmtError(
            f"{path}: the checkpoint does not name its languages (task.source_lang/target_lang)",
            hint="give them: --src-lang de --tgt-lang en",
        )
    src, tgt = str(src), str(tgt)
    directory = _dictionary_dir(path, task, dict_dir, (src, tgt))
    src_symbols = read_dictionary(directory / f"dict.{src}.txt")
    tgt_symbols = read_dictionary(directory / f"dict.{tgt}.txt")
    share = _sharing(m)
    joint = src_symbols == tgt_symbols
    if share == "all" and not joint:
        raise _bad(
            path,
            f"--share-all-embeddings, but dict.{src}.txt and dict.{tgt}.txt differ",
            hint="give the dictionaries the model was trained with (fairseq-preprocess --joined-dictionary)",
        )
    src_pieces, src_rows = _nmt_ids(src_symbols)
    tgt_pieces, tgt_rows = _nmt_ids(tgt_symbols)

    def get(name: str, fallback: str | None = None) -> torch.Tensor:
        if name in state:
            return state[name]
        if fallback is not None and fallback in state:
            return state[fallback]
        raise _bad(path, f"the weights have no {name}")

    enc, dec = get("encoder.embed_tokens.weight"), get("decoder.embed_tokens.weight")
    out = get("decoder.output_projection.weight", "decoder.embed_tokens.weight")
    for what, symbols, matrix in (
        (f"dict.{src}.txt", src_symbols, enc),
        (f"dict.{tgt}.txt", tgt_symbols, dec),
        (f"dict.{tgt}.txt", tgt_symbols, out),
    ):
        if matrix.size(0) != len(symbols):
            raise _bad(
                path,
                f"{directory / what} gives {len(symbols)} ids (4 special + {len(symbols) - 4} entries) "
                f"but the embedding has {matrix.size(0)} rows",
                hint="give the dictionaries the model was trained with (--dict-dir)",
            )
    learned = bool(m["encoder_learned_pos"])
    if learned:
        tables = get("encoder.embed_positions.weight"), get("decoder.embed_positions.weight")
        if tables[0].size(0) != tables[1].size(0):
            raise _bad(
                path,
                "the encoder and decoder learned position tables differ in length, which nmt cannot hold",
                hint=CANNOT,
            )
        max_len = tables[0].size(0) - LEARNED_OFFSET
    else:
        max_len = max(int(m["max_source_positions"]), int(m["max_target_positions"]))
    cfg = _nmt_config(path, m, src, tgt, share=share, joint=joint, vocab_size=len(src_pieces), max_len=max_len)
    layout = Layout(
        positions="fairseq",
        embed_scale=not m["no_scale_embedding"],
        logits_bias=True,
        layernorm_embedding=bool(m["layernorm_embedding"]),
    )
    weights = layer_weights(state)
    src_index, tgt_index = torch.tensor(src_rows), torch.tensor(tgt_rows)
    weights["src_embed.tokens.weight"] = enc.index_select(0, src_index)
    weights["tgt_embed.tokens.weight"] = dec.index_select(0, tgt_index)
    weights["out_proj.weight"] = out.index_select(0, tgt_index)
    weights["out_proj.bias"] = start_row_bias(torch.zeros(len(tgt_pieces)))
    used = set(IGNORED_KEYS) | {k for k in state if ".".join(k.split(".")[3:-1]) in NMT_LAYER_NAMES}
    used |= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight"}
    for side, stack in (("encoder", "src_embed"), ("decoder", "tgt_embed")):
        if learned:
            weights[f"{stack}.learned.weight"] = get(f"{side}.embed_positions.weight")[LEARNED_OFFSET:]
        for kind in ("weight", "bias"):
            for theirs, ours in (
                (f"{side}.layernorm_embedding", f"{stack}.norm"),
                (f"{side}.layer_norm", "enc_norm" if side == "encoder" else "dec_norm"),
            ):
                if f"{theirs}.{kind}" in state:
                    weights[f"{ours}.{kind}"] = state[f"{theirs}.{kind}"]
        used |= {
            f"{side}.embed_positions.weight",
            f"{side}.layernorm_embedding.weight",
            f"{side}.layernorm_embedding.bias",
            f"{side}.layer_norm.weight",
            f"{side}.layer_norm.bias",
        }
    unknown = sorted(set(state) - used)
    if unknown:
        what = f"the weights hold {len(unknown)} tensors nmt's Transformer has no place for (e.g. {unknown[0]})"
        raise _bad(path, what, hint=CANNOT)
    params = write_imported(
        output=output,
        cfg=cfg,
        layout=layout,
        weights=weights,
        vocab_models=vocab_models,
        pieces=(src_pieces, tgt_pieces),
        bad=lambda what: _bad(path, what),
    )
    return ImportResult(output, src, tgt, params, len(tgt_pieces), share, f"dictionaries from {directory}")
