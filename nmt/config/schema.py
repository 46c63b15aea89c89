"""The config schema: one frozen dataclass per section, cross-field rules in `__post_init__`.

Fields left null in YAML that the section derives (a preset's sizes, the length penalty's
alpha) carry `RESOLVED` metadata and are always set once a section is built, so code
downstream reads plain values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PATH = {"path": True}  # field metadata: expand ${VAR} and resolve against the CWD
RESOLVED = {"resolved": True}  # field metadata: null in YAML = derived at load (preset, mode default)


def _resolved() -> Any:
    """A field that may be left out (null) in YAML and is always set once the config is built.

    Its type is the resolved one (`int`, `float`, `bool`), so code downstream never sees None.
    """
    return field(default=None, metadata=RESOLVED)


TAG = re.compile(r"[a-z][a-z0-9_]{0,15}")  # a training source's tag, e.g. bt


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """One parallel split, or one source of the train split: a prefix (`<dir>/train` + `.de`/`.en`; `path`
    in a list of sources) or explicit files. The train split may be a list of sources, each with a weight
    (examples drawn per epoch = weight x its size) and an optional tag (a control token leading the source
    side of its pairs, e.g. for back-translated data)."""

    prefix: str | None = field(default=None, metadata=PATH)
    src: str | None = field(default=None, metadata=PATH)  # explicit source file
    tgt: str | None = field(default=None, metadata=PATH)  # explicit target file
    weight: float = 1.0  # train sources: examples drawn per epoch = weight x size (0.5: half, 2: each twice)
    tag: str | None = None  # train sources: its pairs' source starts with the control token <tag:NAME>

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.src is None or self.tgt is None):
            raise ValueError("give either a prefix string (path) or both src and tgt files")
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight!r}")
        if self.tag is not None and not TAG.fullmatch(self.tag):
            raise ValueError(f"tag {self.tag!r} is not a lowercase name of at most 16 letters, digits or _ (e.g. bt)")

    @property
    def plain(self) -> bool:
        """Weight 1, no tag: a source as every split had before sources could be mixed."""
        return self.weight == 1.0 and self.tag is None


Sources = SplitSpec | tuple[SplitSpec, ...]  # a split's files: one source, or (train) several

LANG_CODE = re.compile(r"[a-z]{2,3}(?:_[A-Za-z0-9]{2,8})?")  # ISO 639-1/3, optionally _Script or _REGION


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    # bilingual: the two languages (suffixes of the split files); left out with directions
    src_lang: str | None = None  # suffix of source files when a split is a prefix; default de
    tgt_lang: str | None = None  # suffix of target files when a split is a prefix; default en
    directions: list[str] = field(default_factory=list)  # multilingual: e.g. [de-en, en-de]; one model for all
    lang_token: Literal["target", "source"] = "target"  # multilingual: >>xx<< starts the decoder, or leads the source
    sampling_temperature: float = 5.0  # multilingual: direction (and vocabulary language) sampling, p ~ n^(1/T)
    splits: dict[str, Sources] = field(default_factory=dict)  # name -> files (train, valid, ...); train may be a list
    monolingual: dict[str, str] = field(default_factory=dict, metadata=PATH)  # nmt pretrain: language -> text file

    max_len: int = 250  # training pairs longer than this (SentencePiece tokens) are dropped
    max_ratio: float = 3.0  # training pairs with a longer/shorter token ratio above this are dropped
    on_invalid_utf8: Literal["error", "replace"] = "error"  # replace: U+FFFD and count
    shard_size: int = 1_000_000  # sentences per binary shard file of a prepared split

    def __post_init__(self) -> None:
        object.__setattr__(self, "directions", tuple(self.directions))  # frozen, as every list a config holds
        if self.directions:
            _check_directions(self)
        else:
            object.__setattr__(self, "src_lang", self.src_lang or "de")
            object.__setattr__(self, "tgt_lang", self.tgt_lang or "en")
        if self.splits and not {"train", "valid"} <= set(self.splits):
            raise ValueError("data.splits needs at least 'train' and 'valid'")
        _check_sources(self)
        _check_monolingual(self)
        _check_range("data.max_len", self.max_len, low=1)
        _check_range("data.max_ratio", self.max_ratio, low=1.0)
        _check_range("data.shard_size", self.shard_size, low=1)
        if self.sampling_temperature <= 0:
            raise ValueError(f"data.sampling_temperature must be > 0, got {self.sampling_temperature!r}")

    @property
    def multilingual(self) -> bool:
        return bool(self.directions)

    def sources(self, split: str) -> tuple[SplitSpec, ...]:
        """The sources of a split: one, or (train) the listed ones in order."""
        spec = self.splits[split]
        return spec if isinstance(spec, tuple) else (spec,)

    @property
    def tags(self) -> list[str]:
        """The train sources' tags, sorted (each a control token of the vocabulary)."""
        return sorted({s.tag for s in self.sources("train") if s.tag is not None}) if "train" in self.splits else []

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(source, target) language of every direction; the one pair of a bilingual config."""
        if not self.directions:
            return [(str(self.src_lang), str(self.tgt_lang))]
        return [(d.split("-")[0], d.split("-")[1]) for d in self.directions]

    @property
    def languages(self) -> list[str]:
        """Every language a direction reads or writes, sorted (the order of the language tokens' ids)."""
        return sorted({lang for pair in self.pairs for lang in pair})


def _check_sources(cfg: DataConfig) -> None:
    """Only the train split mixes sources (weights, tags); the first train source is a plain one."""
    for name, spec in cfg.splits.items():
        sources = spec if isinstance(spec, tuple) else (spec,)
        if not sources:
            raise ValueError(f"data.splits.{name}: an empty list of sources")
        if name != "train" and (len(sources) > 1 or not sources[0].plain):
            raise ValueError(
                f"data.splits.{name}: only the train split mixes sources or takes a weight or tag; "
                f"{name} is scored as one set of files"
            )
    if "train" in cfg.splits:
        first = cfg.sources("train")[0]
        if first.tag is not None:
            raise ValueError("data.splits.train: the first source is the real parallel data: give it no tag")


def _check_monolingual(cfg: DataConfig) -> None:
    """data.monolingual: each key a language this model reads or writes (its files are checked by prepare)."""
    for lang in cfg.monolingual:
        if lang not in cfg.languages:
            where = "data.directions" if cfg.directions else "data.src_lang/tgt_lang"
            raise ValueError(
                f"data.monolingual: {lang!r} is not a language of this model ({', '.join(cfg.languages)}, from "
                f"{where}); pretraining text must be in a language the model translates from or into"
            )


def _check_directions(cfg: DataConfig) -> None:
    """data.directions: well-formed, distinct, and not together with data.src_lang/tgt_lang."""
    given = [k for k in ("src_lang", "tgt_lang") if getattr(cfg, k) is not None]
    if given:
        raise ValueError(
            f"data.directions lists the directions of a multilingual model; data.{' and data.'.join(given)} "
            f"{'belong' if len(given) > 1 else 'belongs'} to a bilingual one: remove one or the other"
        )
    for d in cfg.directions:
        src, sep, tgt = str(d).partition("-")
        if not sep or not LANG_CODE.fullmatch(src) or not LANG_CODE.fullmatch(tgt):
            raise ValueError(
                f"data.directions: {d!r} is not a direction; write SRC-TGT with language codes as the split "
                "files' suffixes, e.g. de-en"
            )
        if src == tgt:
            raise ValueError(f"data.directions: {d!r} translates a language into itself")
    twice = sorted({d for d in cfg.directions if list(cfg.directions).count(d) > 1})
    if twice:
        raise ValueError(f"data.directions: {', '.join(twice)} listed twice")


@dataclass(frozen=True, kw_only=True)
class VocabConfig:
    type: Literal["bpe", "unigram"] = "bpe"  # SentencePiece model type
    size: int = 8000  # pieces per vocabulary (including the 4 special ids)
    joint: bool = True  # one vocabulary for both sides (needed for share_embeddings: all)
    character_coverage: float = 1.0  # fraction of characters covered by the model
    max_sentences: int = 1_000_000  # sentences sampled to train SentencePiece
    byte_fallback: bool = False  # characters outside the vocabulary become byte pieces, not <unk>
    sample_seed: int = 1  # seeds which sentences SentencePiece trains on when there are over max_sentences

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
    activation: Literal["relu", "gelu", "swish"] = "relu"  # transformer: FFN non-linearity (swish: x * sigmoid(x))
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, bf16 on native-bf16 CPUs
    compile: Literal["auto", True, False] = "auto"  # torch.compile the training step; auto: on CUDA only
    seed: int = 1  # seeds model init, shuffling and dropout
    init_from: str | None = None  # fine-tune: start from this checkpoint's weights and vocabulary (nmt train --init)
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
    save_every: int | None = None  # steps between checkpoints (step_N.pt, last.pt); default valid_every
    keep_last: int = 5  # numbered step_N.pt checkpoints kept
    average_last: int | None = None  # at the end, average the last N step_N.pt into averaged.pt and validate it
    valid_max_lines: int | None = None  # validate on the first N valid lines (of each direction); None: all
    best_metric: Literal["bleu", "loss"] = "bleu"  # what best.pt and early stopping track (multilingual: the mean)
    patience: int | None = None  # validations without improvement before stopping
    max_nonfinite: int = 10  # consecutive non-finite losses before giving up

    def __post_init__(self) -> None:
        for key in ("batch_tokens", "accum_steps", "max_steps", "log_every", "valid_every", "keep_last"):
            _check_range(f"train.{key}", getattr(self, key), low=1)
        _check_range("train.lr", self.lr, low=0.0)
        _check_range("train.label_smoothing", self.label_smoothing, low=0.0, high=0.99)
        _check_range("train.warmup_steps", self.warmup_steps, low=0)
        _check_range("train.valid_max_lines", self.valid_max_lines, low=1)
        _check_range("train.average_last", self.average_last, low=2)
        if self.average_last is not None and self.average_last > self.keep_last:
            raise ValueError(
                f"train.average_last ({self.average_last}) is more than train.keep_last ({self.keep_last}): only the "
                f"last {self.keep_last} step_N.pt checkpoints are kept to average; raise train.keep_last or lower "
                "train.average_last"
            )


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where translate/evaluate run
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # dtype; auto: bf16 on CPUs with native bf16
    beam: int = 5  # beam size; 1 = greedy
    nbest: int = 1  # hypotheses written per input line (<= beam; with sampling: samples per line)
    length_penalty: Literal["average", "gnmt", "none"] = "average"  # score normalisation
    alpha: float = _resolved()  # length-penalty strength; default 1.0 (average) / 0.6 (gnmt)
    max_len_a: float = 1.2  # max output length = a * source length + b
    max_len_b: int = 10  # (tokens) the b of max_len_a
    min_len: int = 1  # shortest output (tokens, EOS excluded)
    early_stopping: bool = False  # beam: stop at K hypotheses ended among each step's K best (fairseq's); else exact
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
class PretrainConfig:
    """`nmt pretrain`: BART's text infilling on `data.monolingual` (nmt.data.noising)."""

    mask_ratio: float = 0.35  # share of each sentence's tokens masked (BART: 0.3, mBART: 0.35)
    poisson_lambda: float = 3.0  # mean length of a masked span (Poisson); each span becomes one <mask>
    valid_lines: int = 1000  # the last N lines of each monolingual file (at most a tenth of it) are held out

    def __post_init__(self) -> None:
        _check_range("pretrain.mask_ratio", self.mask_ratio, low=0.0, high=0.9)
        _check_range("pretrain.poisson_lambda", self.poisson_lambda, low=0.1, high=100.0)
        _check_range("pretrain.valid_lines", self.valid_lines, low=1)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    name: str = "experiment"  # shown in logs and tables
    workdir: str = field(default="data/exp/experiment", metadata=PATH)  # the experiment directory
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workdir", str(Path(self.workdir).absolute()))
        if self.data.monolingual and not self.vocab.joint:
            raise ValueError(
                "data.monolingual needs vocab.joint: true: denoising pretraining reads and writes the same text, so "
                "the encoder and the decoder share one vocabulary"
            )
        if self.data.directions and not self.vocab.joint:
            raise ValueError(
                "data.directions needs vocab.joint: true: a multilingual model has one SentencePiece vocabulary "
                "for every language (its language tokens included), on both sides"
            )


def _check_range(key: str, value: Any, *, low: float | None = None, high: float | None = None) -> None:
    if value is None:
        return
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{key} must be {bounds}, got {value!r}")
