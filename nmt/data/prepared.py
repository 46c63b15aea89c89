"""The prepared dataset: the one owner of its format. `nmt prepare` writes through it; training,
the multi-node check and checkpoints read through it; no other module knows a file name or a
manifest key of it.

    <workdir>/data -> data.<12 hex>/      a link swapped whole by `nmt prepare` (fileio.swap_in)
        manifest.json                     FORMAT_VERSION, input hashes, config hash, counts, per-shard
                                          records (binarize.shard_record), vocabulary sizes and hash
        spm.model | spm.src.model + spm.tgt.model
        pieces.src.json, pieces.tgt.json  with train.init_from of an imported model: its id tables (Vocab)
        <split>.<k>.<side>.bin / .idx     token ids and offsets (nmt.data.binarize)
        <split>.ref.txt                   raw target lines of every split but train, one per example
        mono.<lang>.<k>.src.bin / .idx    data.monolingual: source ids only (`nmt pretrain`), held-out
        mono.valid.<lang>.<k>.src.bin     lines in mono.valid.<lang> (the tgt files are empty)

Everything read is checked when opened: the format version and the config hash, the shard
files against the manifest's records, the references' count against the split's examples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt import __version__
from nmt.config import ExperimentConfig, config_to_dict
from nmt.data.binarize import TokenDataset
from nmt.data.corpus import mono_part, source_part
from nmt.data.directions import Marks, Mixture, Part, ValidSet, marks_for
from nmt.data.noising import Denoising
from nmt.data.vocab import Vocab
from nmt.errors import ConfigError, DataError
from nmt.fileio import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 3  # 3: binaries in shards; data/ is a link to data.<id>
MANIFEST = "manifest.json"
JOINT_SPM, SRC_SPM, TGT_SPM = "spm.model", "spm.src.model", "spm.tgt.model"
SRC_PIECES, TGT_PIECES = "pieces.src.json", "pieces.tgt.json"  # an imported model's id tables (train.init_from)


def config_hash(cfg: ExperimentConfig) -> str:
    """Hash of the config sections that determine the prepared data (not the file paths)."""
    data = config_to_dict(cfg.data)
    data.pop("splits")
    data.pop("lang_token")  # where the language token goes is decided when batches are made
    if not cfg.data.multilingual:  # a bilingual config hashes as it did before multilingual data existed
        for key in ("directions", "sampling_temperature"):
            data.pop(key)
    if cfg.data.monolingual:  # the languages (the files are in the inputs' hashes) and the held-out lines
        data["monolingual"] = sorted(cfg.data.monolingual)
        data["sampling_temperature"] = cfg.data.sampling_temperature  # samples the vocabulary's languages
        data["pretrain_valid_lines"] = cfg.pretrain.valid_lines
    else:  # as before monolingual data existed
        data.pop("monolingual")
    sections: dict[str, Any] = {"data": data, "vocab": config_to_dict(cfg.vocab), "v": FORMAT_VERSION}
    if len(cfg.data.sources("train")) > 1 or cfg.data.tags:  # more sources, tags: another vocabulary and data
        sections["train_sources"] = [{"tag": s.tag} for s in cfg.data.sources("train")]
    if cfg.train.init_from is not None:  # the vocabulary is that checkpoint's (others hash as before)
        sections["init_from"] = cfg.train.init_from
    blob = json.dumps(sections, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def references_path(directory: Path, split: str) -> Path:
    """Where prepare writes, and training reads, the raw target lines of `split`."""
    return directory / f"{split}.ref.txt"


# ------------------------------------------------------------------ writing (nmt prepare)


@dataclass
class SplitSummary:
    """What prepare made of one split (its manifest entry, and the summary table's row)."""

    name: str
    lines: int
    kept: int
    shards: int
    dropped: dict[str, int]
    src_tokens: int
    tgt_tokens: int
    src_len_mean: float
    src_len_p95: float
    tgt_len_mean: float
    tgt_len_p95: float
    max_src_len: int
    max_tgt_len: int
    shard_records: list[dict[str, int]] = field(default_factory=list)  # binarize.shard_record per shard


def write_vocab(directory: Path, vocab: Vocab) -> None:
    """The SentencePiece model(s), and an imported model's id tables (`Vocab`) when it has them."""
    if vocab.src_model == vocab.tgt_model:
        atomic_write_bytes(directory / JOINT_SPM, vocab.src_model)
    else:
        atomic_write_bytes(directory / SRC_SPM, vocab.src_model)
        atomic_write_bytes(directory / TGT_SPM, vocab.tgt_model)
    tables = vocab.checkpoint_pieces()
    if tables is not None:
        atomic_write_text(directory / SRC_PIECES, json.dumps(tables[0], ensure_ascii=False))
        atomic_write_text(directory / TGT_PIECES, json.dumps(tables[1], ensure_ascii=False))


def write_manifest(
    directory: Path,
    *,
    cfg_hash: str,
    inputs: dict[str, Any],
    lines: dict[str, int],
    vocab: Vocab,
    splits: list[SplitSummary],
    invalid_utf8_lines: int,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Write the manifest of a complete dataset in `directory`; returns it.

    `inputs`: per split {src, tgt, src_sha256, tgt_sha256}."""
    manifest = {
        "version": FORMAT_VERSION,
        "nmt_version": __version__,
        "config_hash": cfg_hash,
        "inputs": inputs,
        "lines": lines,
        "joint": vocab.joint,
        "src_vocab_size": vocab.src_size,
        "tgt_vocab_size": vocab.tgt_size,
        "spm_sha256": hashlib.sha256(vocab.src_model + vocab.tgt_model).hexdigest(),
        "splits": {
            s.name: {
                "sentences": s.kept,
                "shards": s.shards,
                "dropped": s.dropped,
                "src_tokens": s.src_tokens,
                "tgt_tokens": s.tgt_tokens,
                "max_src_len": s.max_src_len,
                "max_tgt_len": s.max_tgt_len,
                "shard_records": s.shard_records,
            }
            for s in splits
        },
        "invalid_utf8_lines": invalid_utf8_lines,
        **({"init_from": init_from} if init_from is not None else {}),
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def up_to_date(manifest: dict[str, Any] | None, cfg_hash: str, inputs: dict[str, Any]) -> bool:
    """Whether `manifest` was prepared with these settings from inputs with these hashes (paths may differ)."""
    if not manifest or manifest.get("config_hash") != cfg_hash:
        return False
    strip = lambda d: {k: (v["src_sha256"], v["tgt_sha256"]) for k, v in d.items()}  # noqa: E731
    try:
        return strip(manifest.get("inputs", {})) == strip(inputs)
    except (KeyError, TypeError, AttributeError):
        return False


def is_dataset_dir(path: Path) -> bool:
    """Whether the real directory `path` is prepared data (from before `data/` became a link)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"version", "config_hash", "splits"} <= manifest.keys()


# ------------------------------------------------------------------ reading


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The manifest, or None when there are no (readable) prepared data."""
    path = data_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_vocab(data_dir: Path) -> Vocab:
    """The prepared vocabulary, or DataError saying to run prepare."""
    joint, src, tgt = data_dir / JOINT_SPM, data_dir / SRC_SPM, data_dir / TGT_SPM
    tables: tuple[Any, Any] = (None, None)
    if (data_dir / SRC_PIECES).is_file():
        tables = tuple(  # type: ignore[assignment]
            tuple(json.loads((data_dir / name).read_text(encoding="utf-8"))) for name in (SRC_PIECES, TGT_PIECES)
        )
    if joint.is_file():
        model = joint.read_bytes()
        return Vocab(model, model, *tables)
    if src.is_file() and tgt.is_file():
        return Vocab(src.read_bytes(), tgt.read_bytes(), *tables)
    raise DataError(f"{data_dir}: no prepared vocabulary found", hint="run `nmt prepare CONFIG` first")


def open_split(data_dir: Path, split: str, vocab: Vocab, manifest: dict[str, Any] | None = None) -> TokenDataset:
    """A prepared split, its files checked against what prepare recorded in `manifest` (sizes,
    counts and the largest ids; without a manifest, or one from before records: structure only)."""
    records = (((manifest or {}).get("splits") or {}).get(split) or {}).get("shard_records")
    return TokenDataset(data_dir, split, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size, records=records)


def load_references(data_dir: Path, split: str, *, examples: int | None = None) -> list[str]:
    """The raw target lines of a prepared split other than train, one per example, in order;
    DataError when they are not `examples` lines (a truncated or replaced file)."""
    path = references_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: no references for split {split!r}", hint="run `nmt prepare CONFIG` again")
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")[:-1]  # the file ends with a newline
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte {exc.start}", hint="run `nmt prepare CONFIG --force`") from None
    if examples is not None and len(lines) != examples:
        raise DataError(
            f"{path} holds {len(lines):,} references but split {split!r} has {examples:,} prepared examples",
            hint="the prepared data were changed or damaged after prepare: run `nmt prepare CONFIG --force`",
        )
    return lines


def checkpoint_fingerprints(manifest: dict[str, Any]) -> dict[str, str]:
    """What a checkpoint records of the prepared data it trained on: `vocab` (sha256 of the
    SentencePiece models) and `data` (sha256 of the input files' hashes, the data/vocab settings
    and the kept counts; not the paths, not the nmt version), so that a resume can tell a
    different vocabulary from different data under the same vocabulary."""
    inputs = {
        name: [spec.get("src_sha256"), spec.get("tgt_sha256")] for name, spec in (manifest.get("inputs") or {}).items()
    }
    splits = {name: s.get("sentences") for name, s in (manifest.get("splits") or {}).items()}
    blob = json.dumps({"inputs": inputs, "config_hash": manifest.get("config_hash"), "splits": splits}, sort_keys=True)
    return {"vocab": str(manifest.get("spm_sha256")), "data": hashlib.sha256(blob.encode()).hexdigest()}


def node_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest without the input file paths, for the multi-node same-data check.

    Nodes may keep the corpus at different paths; everything else (input sha256s, config
    hash, vocab sizes and model hash, counts, whatever fields the manifest gains) must match.
    """
    inputs = {
        name: {k: v for k, v in spec.items() if k not in ("src", "tgt")} if isinstance(spec, dict) else spec
        for name, spec in (manifest.get("inputs") or {}).items()
    }
    blob = json.dumps({**manifest, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class TrainingData:
    """What training reads of a prepared dataset, opened and checked (`open_for_training`)."""

    data_dir: Path
    manifest: dict[str, Any]
    vocab: Vocab
    train: Mixture  # every direction's train split (one part for a bilingual model)
    valid: list[ValidSet]  # one per direction (one for a bilingual model)

    @property
    def fingerprints(self) -> dict[str, str]:
        return checkpoint_fingerprints(self.manifest)


def check_manifest(manifest: dict[str, Any] | None, cfg: ExperimentConfig, data_dir: Path, config_path: Path) -> None:
    """DataError unless `manifest` is prepared data in this format and with `cfg`'s data/vocab settings."""
    if manifest is None:
        raise DataError(
            f"{data_dir}: no prepared data",
            hint=f"run `nmt prepare {config_path}` (or `nmt prepare CONFIG`) first",
        )
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{data_dir} was prepared by another version of nmt (data format {manifest.get('version')}, "
            f"this one reads {FORMAT_VERSION})",
            hint="run `nmt prepare CONFIG` again (it rebuilds in the current format)",
        )
    if manifest.get("init_from") != cfg.train.init_from:
        raise ConfigError(
            f"train.init_from is {cfg.train.init_from or 'not set'}, but {data_dir} was prepared "
            f"{'for ' + manifest['init_from'] if manifest.get('init_from') else 'with its own vocabulary'}: "
            "prepare and train must fine-tune the same checkpoint",
            hint="give both the same train.init_from (in the config, or --set train.init_from=PATH to both), "
            "then run `nmt prepare CONFIG` again",
        )
    if manifest.get("config_hash") != config_hash(cfg):
        raise DataError(
            f"{data_dir} was prepared with different data/vocab settings than this config",
            hint="run `nmt prepare CONFIG` again (it rebuilds when the settings differ)",
        )


def open_for_training(cfg: ExperimentConfig, data_dir: Path, config_path: Path) -> TrainingData:
    """The vocabulary, the train and valid splits (of every direction) and the valid references,
    each checked: one DataError before any training step for missing, stale or damaged data.
    Validation uses the first `train.valid_max_lines` examples of each direction (all by default)."""
    manifest = read_manifest(data_dir)
    check_manifest(manifest, cfg, data_dir, config_path)
    assert manifest is not None
    vocab = load_vocab(data_dir)
    limit = cfg.train.valid_max_lines
    train_parts, valid = [], []
    names = cfg.data.directions or [""]
    sources = cfg.data.sources("train")
    splits = set(manifest.get("splits") or {})
    for name, (_, tgt_lang) in zip(names, cfg.data.pairs, strict=True):
        marks = marks_for(cfg, vocab, tgt_lang)
        within = lambda s, name=name: f"{name}/{s}" if name else s  # noqa: E731
        for k, source in enumerate(sources):
            split = within(source_part("train", k))
            if k > 0 and split not in splits:  # a multilingual source without this direction's files
                continue
            tag = None if source.tag is None else vocab.tag_id(source.tag)
            data = open_split(data_dir, split, vocab, manifest)
            train_parts.append(Part.of(name, data, marks, tgt_lang, weight=source.weight, tag_id=tag))
        valid_split = within("valid")
        valid_ds = open_split(data_dir, valid_split, vocab, manifest)
        refs = load_references(data_dir, valid_split, examples=len(valid_ds))
        part = Part.of(name, valid_ds, marks, tgt_lang, limit=limit)
        valid.append(ValidSet(name, Mixture([part], "valid"), refs[: part.size]))
    return TrainingData(data_dir, manifest, vocab, Mixture(train_parts, "train"), valid)


def open_for_pretraining(cfg: ExperimentConfig, data_dir: Path, config_path: Path) -> TrainingData:
    """`nmt pretrain`'s data: every `data.monolingual` language's text as `Denoising` examples (train: the
    languages drawn with `data.sampling_temperature`; valid: one set per language, its held-out lines
    noised as epoch 0), each checked as `open_for_training` checks its splits."""
    if not cfg.data.monolingual:
        raise ConfigError(
            "nmt pretrain reads data.monolingual, which this config does not set",
            hint="list monolingual text per language, e.g. data.monolingual: {de: mono.de}, then run `nmt prepare`",
        )
    manifest = read_manifest(data_dir)
    check_manifest(manifest, cfg, data_dir, config_path)
    assert manifest is not None
    vocab = load_vocab(data_dir)
    if vocab.mask_id is None:  # a fine-tuned (init_from) vocabulary that was not prepared for pretraining
        raise ConfigError(
            f"{data_dir}: the vocabulary has no mask token, so it cannot be pretrained with text infilling",
            hint="pretrain a model with its own vocabulary (no train.init_from), prepared with data.monolingual",
        )
    tagged = cfg.data.multilingual or len(cfg.data.monolingual) > 1  # mBART: the language token leads
    train_parts, valid = [], []
    noise = {"mask_id": vocab.mask_id, "seed": cfg.train.seed, "ratio": cfg.pretrain.mask_ratio,
             "lam": cfg.pretrain.poisson_lambda}  # fmt: skip
    for lang in sorted(cfg.data.monolingual):
        token = vocab.lang_id(lang) if tagged else None
        marks = Marks() if token is None else Marks(start_id=token, src_tag=token)
        train_parts.append(Part.of(lang, open_split(data_dir, mono_part(lang), vocab, manifest), marks, lang))
        valid_ds = open_split(data_dir, mono_part(lang, valid=True), vocab, manifest)
        part = Part.of(lang, valid_ds, marks, lang, limit=cfg.train.valid_max_lines)
        valid.append(ValidSet(lang if tagged else "", Denoising([part], "valid", **noise), []))
    return TrainingData(data_dir, manifest, vocab, Denoising(train_parts, "train", **noise), valid)
