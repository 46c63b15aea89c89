"""Typed experiment config: frozen dataclasses, strict YAML loading, `--set` overrides.

Every value is converted by its dataclass field's type (not by YAML's scalar rules),
unknown keys are rejected with the nearest valid key, and cross-field rules live in
`__post_init__`. Paths may use `${VAR}` / `${VAR:-default}`; after expansion, a
relative path is resolved against the current working directory, and the loaded
config holds absolute paths only (so the copy written into the experiment directory
and into checkpoints means the same thing from anywhere).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.errors import ConfigError

PATH = {"path": True}  # field metadata: expand ${VAR} and resolve against the CWD
RESOLVED = {"resolved": True}  # field metadata: null in YAML = derived at load (preset, mode default)


def _resolved() -> Any:
    """A field that may be left out (null) in YAML and is always set once the config is built.

    Its type is the resolved one (`int`, `float`, `bool`), so code downstream never sees None.
    """
    return field(default=None, metadata=RESOLVED)


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """One parallel split: a prefix (`<dir>/train` + `.de`/`.en`) or explicit files."""

    prefix: str | None = field(default=None, metadata=PATH)
    src: str | None = field(default=None, metadata=PATH)  # explicit source file
    tgt: str | None = field(default=None, metadata=PATH)  # explicit target file

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.src is None or self.tgt is None):
            raise ValueError("give either a prefix string or both src and tgt files")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    src_lang: str = "de"  # suffix of source files when a split is a prefix
    tgt_lang: str = "en"  # suffix of target files when a split is a prefix
    splits: dict[str, SplitSpec] = field(default_factory=dict)  # name -> files; needs train and valid
    max_len: int = 250  # training pairs longer than this (SentencePiece tokens) are dropped
    max_ratio: float = 3.0  # training pairs with a longer/shorter token ratio above this are dropped
    on_invalid_utf8: Literal["error", "replace"] = "error"  # replace: U+FFFD and count

    def __post_init__(self) -> None:
        if self.splits and not {"train", "valid"} <= set(self.splits):
            raise ValueError("data.splits needs at least 'train' and 'valid'")
        _check_range("data.max_len", self.max_len, low=1)
        _check_range("data.max_ratio", self.max_ratio, low=1.0)


@dataclass(frozen=True, kw_only=True)
class VocabConfig:
    type: Literal["bpe", "unigram"] = "bpe"  # SentencePiece model type
    size: int = 8000  # pieces per vocabulary (including the 4 special ids)
    joint: bool = True  # one vocabulary for both sides (needed for share_embeddings: all)
    character_coverage: float = 1.0  # fraction of characters covered by the model
    max_sentences: int = 1_000_000  # sentences sampled to train SentencePiece

    def __post_init__(self) -> None:
        _check_range("vocab.size", self.size, low=8)
        _check_range("vocab.character_coverage", self.character_coverage, low=0.9, high=1.0)
        _check_range("vocab.max_sentences", self.max_sentences, low=1)


# The sizes of fairseq's transformer_iwslt_de_en-like small models and of Vaswani et al.'s base
# and big (big: fairseq's transformer_wmt_en_de_big, attention dropout 0.1).
_SIZES = ("d_model", "n_heads", "ffn_dim", "enc_layers", "dec_layers", "dropout", "attention_dropout")
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(zip(_SIZES, (64, 2, 256, 2, 2, 0.1, 0.0), strict=True)),
    "small": dict(zip(_SIZES, (256, 4, 1024, 3, 3, 0.1, 0.0), strict=True)),
    "base": dict(zip(_SIZES, (512, 8, 2048, 6, 6, 0.1, 0.0), strict=True)),
    "big": dict(zip(_SIZES, (1024, 16, 4096, 6, 6, 0.3, 0.1), strict=True)),
}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    arch: Literal["transformer", "rnn"] = "transformer"  # model family: Transformer or recurrent (LSTM/GRU)
    preset: Literal["tiny", "small", "base", "big"] = "small"  # the fields below left null take its values
    d_model: int = _resolved()  # model width (rnn: embedding and hidden size)
    n_heads: int = _resolved()  # transformer: attention heads
    ffn_dim: int = _resolved()  # transformer: feed-forward inner width
    enc_layers: int = _resolved()  # encoder layers
    dec_layers: int = _resolved()  # decoder layers
    dropout: float = _resolved()  # dropout on embeddings and sublayer outputs (rnn: also between layers)
    attention_dropout: float = _resolved()  # transformer: dropout on attention weights (fairseq's)
    activation_dropout: float = 0.0  # transformer: dropout after the FFN non-linearity (fairseq's)
    activation: Literal["relu", "gelu"] = "relu"  # transformer: FFN non-linearity
    norm: Literal["pre", "post"] = "pre"  # transformer: LayerNorm before (stable) or after (paper) sublayers
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"  # transformer: position embeddings
    share_embeddings: Literal["all", "decoder", "none"] = "all"  # weight tying
    max_len: int = 256  # longest source/target in tokens the model accepts
    cell: Literal["lstm", "gru"] = "lstm"  # rnn: recurrent cell
    bidirectional: bool = True  # rnn: bidirectional encoder (d_model / 2 per direction)
    attention: Literal["none", "bahdanau", "luong_dot", "luong_general"] = "luong_general"  # rnn: none = Sutskever
    input_feeding: bool = _resolved()  # rnn: feed the last attentional vector back in (Luong); default on for luong_*
    residual: bool = True  # rnn: residual connections between stacked layers, from the third layer on (GNMT)

    def __post_init__(self) -> None:
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.input_feeding is None:
            object.__setattr__(self, "input_feeding", self.arch == "rnn" and self.attention.startswith("luong"))
        if self.arch == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.arch == "rnn":
            if self.input_feeding and self.attention == "none":
                raise ValueError(
                    "model.input_feeding needs attention (it feeds the attentional vector back in), but "
                    "model.attention is none; set model.input_feeding: false or choose an attention"
                )
            if self.bidirectional and self.d_model % 2:
                raise ValueError(f"model.d_model ({self.d_model}) must be even with a bidirectional encoder")
        for key in ("d_model", "n_heads", "ffn_dim", "enc_layers", "dec_layers", "max_len"):
            _check_range(f"model.{key}", getattr(self, key), low=1)
        for key in ("dropout", "attention_dropout", "activation_dropout"):
            _check_range(f"model.{key}", getattr(self, key), low=0.0, high=0.99)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU
    seed: int = 1  # seeds model init, shuffling and dropout
    batch_tokens: int = 4096  # padded tokens per batch (max of source and target side)
    max_sentences: int | None = None  # optional cap on sentences per batch
    accum_steps: int = 1  # batches per optimizer step
    lr: float = 5e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    schedule: Literal["inverse_sqrt", "noam", "cosine", "constant"] = "inverse_sqrt"  # learning-rate schedule
    warmup_steps: int = 1000  # linear warmup steps
    clip_norm: float = 0.0  # gradient-norm clipping; 0 disables
    label_smoothing: float = 0.1  # mass spread uniformly over the vocabulary
    max_steps: int = 100_000  # stop after this many optimizer steps
    max_epochs: int | None = None  # or after this many epochs
    max_minutes: float | None = None  # or after this much training wall time (minutes)
    log_every: int = 100  # steps between log lines / metrics.jsonl records
    valid_every: int = 1000  # steps between validations (and checkpoints)
    save_every: int | None = None  # steps between last.pt saves; default valid_every
    keep_last: int = 5  # numbered step_N.pt checkpoints kept
    best_metric: Literal["bleu", "loss"] = "bleu"  # what best.pt and early stopping track
    patience: int | None = None  # validations without improvement before stopping
    max_nonfinite: int = 10  # consecutive non-finite losses before giving up

    def __post_init__(self) -> None:
        for key in ("batch_tokens", "accum_steps", "max_steps", "log_every", "valid_every", "keep_last"):
            _check_range(f"train.{key}", getattr(self, key), low=1)
        _check_range("train.lr", self.lr, low=0.0)
        _check_range("train.label_smoothing", self.label_smoothing, low=0.0, high=0.99)
        _check_range("train.warmup_steps", self.warmup_steps, low=0)


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where translate/evaluate run
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # inference dtype
    beam: int = 5  # beam size; 1 = greedy
    nbest: int = 1  # hypotheses written per input line (<= beam; with sampling: samples per line)
    length_penalty: Literal["average", "gnmt", "none"] = "average"  # score normalisation
    alpha: float = _resolved()  # length-penalty strength; default 1.0 (average) / 0.6 (gnmt)
    max_len_a: float = 1.2  # max output length = a * source length + b
    max_len_b: int = 10  # (tokens) the b of max_len_a
    min_len: int = 1  # shortest output (tokens, EOS excluded)
    no_repeat_ngram: int = 0  # forbid repeating n-grams of this size; 0 disables
    batch_tokens: int = 4096  # source tokens per translation batch
    sampling: bool = False  # sample instead of searching (back-translation)
    temperature: float = 1.0  # sampling temperature
    top_k: int = 0  # sample from the k most likely tokens; 0 = all
    top_p: float = 1.0  # nucleus sampling mass

    def __post_init__(self) -> None:
        _check_range("decode.beam", self.beam, low=1)
        _check_range("decode.nbest", self.nbest, low=1, high=None if self.sampling else self.beam)
        _check_range("decode.batch_tokens", self.batch_tokens, low=1)
        for key in ("min_len", "max_len_a", "max_len_b", "no_repeat_ngram", "top_k"):
            _check_range(f"decode.{key}", getattr(self, key), low=0)
        if self.temperature <= 0:
            raise ValueError(f"decode.temperature must be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"decode.top_p must be in (0, 1], got {self.top_p!r}")
        if self.alpha is None:
            object.__setattr__(self, "alpha", 0.6 if self.length_penalty == "gnmt" else 1.0)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str = "experiment"  # shown in logs and tables
    workdir: str = field(default="data/exp/experiment", metadata=PATH)  # the experiment directory
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workdir", str(Path(self.workdir).absolute()))


def _check_range(key: str, value: Any, *, low: float | None = None, high: float | None = None) -> None:
    if value is None:
        return
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{key} must be {bounds}, got {value!r}")


# ---------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str, where: str) -> str:
    """Expand `${VAR}` / `${VAR:-default}` and `~`, and make the path absolute (CWD)."""

    def sub(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {var} is not set",
            hint=f"export {var}=... (e.g. NMT_DATA=$(realpath ../shared/data)) or write ${{{var}:-default}}",
        )

    expanded = os.path.expanduser(_ENV.sub(sub, value))
    return str(Path(expanded).absolute())


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))


def _closest(key: str, options: list[str]) -> str | None:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return match[0] if match else None


def _convert(value: Any, tp: Any, key: str, where: str, meta: Any) -> Any:
    """Convert a YAML or --set value to the field type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: expected {expected}, got {value!r}")

    if meta.get("resolved") and _is_null(value):
        return None  # filled in by the section's __post_init__

    if origin in (typing.Union, types.UnionType):
        if _is_null(value) and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where, meta)
    if origin is Literal:
        if value in args:
            return value
        hint = _closest(str(value), [str(a) for a in args])
        choices = ", ".join(str(a) for a in args)
        msg = f"{where}: {key}: invalid value {value!r}; expected one of {choices}"
        raise ConfigError(msg + (f"; did you mean {hint}?" if hint else ""))
    if dataclasses.is_dataclass(tp):
        if tp is SplitSpec and isinstance(value, str):
            value = {"prefix": value}
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(tp, value, key, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        # `--set data.splits.NAME=null` removes an entry
        return {str(k): _convert(v, args[1], f"{key}.{k}", where, meta) for k, v in value.items() if not _is_null(v)}
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list of {len(args)}")
        if origin is tuple and len(value) != len(args):
            raise bad(f"a list of {len(args)}")
        item_types = args if origin is tuple else [args[0]] * len(value)
        return tuple(_convert(v, t, key, where, meta) for v, t in zip(value, item_types))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise bad("an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        text = str(value)
        return expand_path(text, f"{where}: {key}") if meta.get("path") else text
    raise AssertionError(f"unsupported config type {tp}")


def _build(cls: type, raw: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            near = _closest(str(key), list(fields))
            msg = f"{where}: {path}: unknown key"
            if near:
                msg += f"; did you mean {prefix + '.' if prefix else ''}{near}?"
            else:
                msg += f"; valid keys: {', '.join(fields)}"
            raise ConfigError(msg)
        kwargs[key] = _convert(value, hints[key], path, where, fields[key].metadata)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        if prefix and not message.startswith(prefix.split(".")[0]):
            message = f"{prefix}: {message}"
        raise ConfigError(f"{where}: {message}") from None


def _set_override(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. train.lr=5e-4")
    path, value = assignment.split("=", 1)
    node = raw
    parts = path.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {part} is not a section")
        node = child
    node[parts[-1]] = value  # a string: converted by the field type, not by YAML


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply `--set` overrides."""
    raw: dict[str, Any] = {}
    where = str(path) if path is not None else "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist", hint="check the path (relative to the current directory)"
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            pos = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{p}:{pos}: YAML syntax error: {problem}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not valid UTF-8 ({exc.reason})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        raw = loaded
    for assignment in overrides:
        _set_override(raw, assignment)
    if overrides and path is not None:
        where = f"{path} (with --set)"
    cfg = _build(ExperimentConfig, raw, "", where)
    check_new_experiment(cfg, where=where)
    return cfg


def check_new_experiment(cfg: ExperimentConfig, *, where: str) -> None:
    """Rules for configs that will prepare or train, but not for those stored in old checkpoints.

    A checkpoint trained before a rule existed still loads (`nmt.checkpoint` warns instead).
    """
    if cfg.model.share_embeddings == "all" and not cfg.vocab.joint:
        raise ConfigError(
            f"{where}: model.share_embeddings: all ties the source and target embeddings, but vocab.joint is "
            "false: source id i and target id i would be unrelated pieces of two vocabularies",
            hint="set vocab.joint: true (one vocabulary for both sides), or model.share_embeddings: decoder",
        )


def apply_decode_overrides(base: DecodeConfig, overrides: Sequence[str], *, where: str) -> DecodeConfig:
    """`base` (e.g. a checkpoint's stored decode section) with `decode.KEY=VALUE` overrides applied.

    Values are converted and checked like a config file's, so a bad value or an unknown
    key is a ConfigError naming the key (and the nearest valid one). Only decode.* may
    change: the rest is fixed by the checkpoint. When the length penalty changes but alpha
    does not, alpha follows the new mode's default unless the stored alpha was set to
    something other than the old mode's default.
    """
    raw: dict[str, Any] = {"decode": config_to_dict(base)}
    changed = set()
    for item in overrides:
        key = item.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if "=" in item and (section != "decode" or not name or "." in name):
            raise ConfigError(
                f"--set {key}: only decode.* settings can change when translating",
                hint="the model, vocabulary and data settings are fixed by the checkpoint",
            )
        _set_override(raw, item)
        changed.add(name)
    if "length_penalty" in changed and "alpha" not in changed:
        if base.alpha == DecodeConfig(length_penalty=base.length_penalty).alpha:
            raw["decode"]["alpha"] = None
    return _build(ExperimentConfig, raw, "", where).decode


def config_from_dict(raw: dict[str, Any], where: str = "checkpoint") -> ExperimentConfig:
    """Rebuild a config from `config_to_dict` output (e.g. stored in a checkpoint)."""
    return _build(ExperimentConfig, raw, "", where)


def config_to_dict(cfg: Any) -> Any:
    """Plain dict/list/scalar form of a config, suitable for YAML, JSON and checkpoints."""
    if isinstance(cfg, SplitSpec):
        return cfg.prefix if cfg.prefix is not None else {"src": cfg.src, "tgt": cfg.tgt}
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return [config_to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def diff_configs(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_configs(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix]


def field_docs() -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) for every config field, read from this source file."""
    rows = []
    for section, cls in (
        ("data", DataConfig),
        ("vocab", VocabConfig),
        ("model", ModelConfig),
        ("train", TrainConfig),
        ("decode", DecodeConfig),
    ):
        hints = typing.get_type_hints(cls)
        source = inspect.getsource(cls).splitlines()
        for f in dataclasses.fields(cls):
            comment = ""
            for line in source:
                stripped = line.strip()
                if stripped.startswith(f"{f.name}:") and "#" in stripped:
                    comment = stripped.split("#", 1)[1].strip()
                    break
            default = f.default if f.default is not dataclasses.MISSING else "{}"
            tp = _type_name(hints[f.name]) + (" | null" if f.metadata.get("resolved") else "")
            rows.append((f"{section}.{f.name}", tp, repr(default), comment))
    return rows


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("SplitSpec", "split")


def reference_markdown() -> str:
    """The README's config reference table, generated from the dataclasses."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, comment in field_docs():
        lines.append(f"| `{key}` | {tp.replace('|', '&#124;')} | `{default}` | {comment.replace('|', '&#124;')} |")
    return "\n".join(lines)
