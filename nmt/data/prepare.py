"""`nmt prepare`: parallel text -> cleaned pairs -> SentencePiece -> binarized splits.

Splits other than train are never cleaned, so their examples align with their input lines;
their raw target text is kept too (`<split>.ref.txt`, one line per example), because
validation scores against the references as written, not as decoded back from token ids
(NFKC-normalised, unknown characters lost). It lives in the prepared data so that a resume
on another machine does not need the original files.

Everything is built in a staging directory next to `<workdir>/data` and swapped in only
when complete, so an interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmt import __version__
from nmt.config import ExperimentConfig, config_to_dict
from nmt.console import progress
from nmt.data.binarize import write_side
from nmt.data.corpus import CleanStats, SplitFiles, check_line_counts, keep_pair, read_pairs, resolve_split
from nmt.data.vocab import Vocab, train_vocab
from nmt.errors import ConfigError, DataError
from nmt.experiment import Experiment
from nmt.fileio import DecodeStats, atomic_write_bytes, atomic_write_text

MANIFEST_VERSION = 2  # 2: <split>.ref.txt for every split but train
ENCODE_CHUNK = 10_000


@dataclass
class SplitSummary:
    name: str
    lines: int
    kept: int
    dropped: dict[str, int]
    src_tokens: int
    tgt_tokens: int
    src_len_mean: float
    src_len_p95: float
    tgt_len_mean: float
    tgt_len_p95: float
    max_src_len: int
    max_tgt_len: int


@dataclass
class PrepareResult:
    up_to_date: bool
    manifest: dict[str, Any]
    splits: list[SplitSummary] = field(default_factory=list)
    invalid_utf8_lines: int = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def relevant_config_hash(cfg: ExperimentConfig) -> str:
    """Hash of the config sections that determine the prepared data (not the file paths)."""
    data = config_to_dict(cfg.data)
    data.pop("splits")
    blob = json.dumps({"data": data, "vocab": config_to_dict(cfg.vocab), "v": MANIFEST_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_manifest(exp: Experiment) -> dict[str, Any] | None:
    if not exp.manifest_path.is_file():
        return None
    try:
        return json.loads(exp.manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_vocab(exp: Experiment) -> Vocab:
    """The prepared vocabulary of an experiment, or DataError saying to run prepare."""
    joint, src, tgt = exp.data_dir / "spm.model", exp.data_dir / "spm.src.model", exp.data_dir / "spm.tgt.model"
    if joint.is_file():
        model = joint.read_bytes()
        return Vocab(model, model)
    if src.is_file() and tgt.is_file():
        return Vocab(src.read_bytes(), tgt.read_bytes())
    raise DataError(f"{exp.data_dir}: no prepared vocabulary found", hint="run `nmt prepare CONFIG` first")


def load_references(exp: Experiment, split: str) -> list[str]:
    """The raw target lines of a prepared split other than train, one per example, in order."""
    path = exp.data_dir / f"{split}.ref.txt"
    if not path.is_file():
        raise DataError(f"{path}: no references for split {split!r}", hint="run `nmt prepare CONFIG` again")
    lines = path.read_bytes().decode("utf-8").split("\n")
    return lines[:-1]  # the file ends with a newline


def prepare(cfg: ExperimentConfig, *, force: bool = False) -> PrepareResult:
    """Build (or confirm up to date) the vocabulary and binarized splits of an experiment."""
    exp = Experiment.from_config(cfg)
    if not cfg.data.splits:
        raise ConfigError(
            "data.splits is empty", hint="list at least train and valid, e.g. train: ${NMT_DATA}/multi30k/train"
        )
    files = [resolve_split(name, spec, cfg.data) for name, spec in cfg.data.splits.items()]
    inputs = {
        f.name: {"src": str(f.src), "tgt": str(f.tgt), "src_sha256": _sha256(f.src), "tgt_sha256": _sha256(f.tgt)}
        for f in files
    }
    config_hash = relevant_config_hash(cfg)
    old = load_manifest(exp)
    if not force and old and old.get("config_hash") == config_hash and _same_inputs(old.get("inputs", {}), inputs):
        return PrepareResult(up_to_date=True, manifest=old)
    line_counts = {f.name: check_line_counts(f) for f in files}

    stats = DecodeStats()
    replace = cfg.data.on_invalid_utf8 == "replace"
    texts = {f.name: list(read_pairs(f, replace_invalid=replace, stats=stats)) for f in files}
    train_pairs = [(s, t) for s, t in texts["train"] if s and t]
    if not train_pairs:
        raise DataError(f"split 'train': {files[0].src} and {files[0].tgt} contain no non-empty pairs")
    vocab = train_vocab((s for s, _ in train_pairs), (t for _, t in train_pairs), cfg.vocab, seed=cfg.train.seed)

    exp.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".data.", suffix=".tmp", dir=exp.root))
    staging.chmod(0o755)
    try:
        summaries = [_encode_split(f, texts[f.name], vocab, cfg, staging) for f in files]
        if vocab.joint:
            atomic_write_bytes(staging / "spm.model", vocab.src_model)
        else:
            atomic_write_bytes(staging / "spm.src.model", vocab.src_model)
            atomic_write_bytes(staging / "spm.tgt.model", vocab.tgt_model)
        manifest = {
            "version": MANIFEST_VERSION,
            "nmt_version": __version__,
            "config_hash": config_hash,
            "inputs": inputs,
            "lines": line_counts,
            "joint": vocab.joint,
            "src_vocab_size": vocab.src_size,
            "tgt_vocab_size": vocab.tgt_size,
            "spm_sha256": hashlib.sha256(vocab.src_model + vocab.tgt_model).hexdigest(),
            "splits": {
                s.name: {
                    "sentences": s.kept,
                    "dropped": s.dropped,
                    "src_tokens": s.src_tokens,
                    "tgt_tokens": s.tgt_tokens,
                    "max_src_len": s.max_src_len,
                    "max_tgt_len": s.max_tgt_len,
                }
                for s in summaries
            },
            "invalid_utf8_lines": stats.invalid_utf8_lines,
        }
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        _swap_in(staging, exp.data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    exp.write_config(cfg)
    return PrepareResult(
        up_to_date=False, manifest=manifest, splits=summaries, invalid_utf8_lines=stats.invalid_utf8_lines
    )


def _same_inputs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    strip = lambda d: {k: (v["src_sha256"], v["tgt_sha256"]) for k, v in d.items()}  # noqa: E731
    try:
        return strip(old) == strip(new)
    except (KeyError, TypeError):
        return False


def _encode_split(
    files: SplitFiles, pairs: list[tuple[str, str]], vocab: Vocab, cfg: ExperimentConfig, out_dir: Path
) -> SplitSummary:
    src_ids: list[list[int]] = []
    tgt_ids: list[list[int]] = []
    bar = progress(total=len(pairs), desc=f"encode {files.name}", unit="pair")
    for start in range(0, len(pairs), ENCODE_CHUNK):
        chunk = pairs[start : start + ENCODE_CHUNK]
        src_ids += vocab.encode_src([s for s, _ in chunk])
        tgt_ids += vocab.encode_tgt([t for _, t in chunk])
        bar.update(len(chunk))
    bar.close()
    clean = CleanStats()
    if files.name == "train":
        keep = [
            keep_pair(len(s), len(t), max_len=cfg.data.max_len, max_ratio=cfg.data.max_ratio, stats=clean)
            for s, t in zip(src_ids, tgt_ids)
        ]
        src_ids = [s for s, k in zip(src_ids, keep) if k]
        tgt_ids = [t for t, k in zip(tgt_ids, keep) if k]
        if not src_ids:
            raise DataError(
                f"split 'train': every pair was dropped by cleaning ({clean.dropped})",
                hint="check data.max_len / data.max_ratio and that source and target files are the right ones",
            )
    else:
        clean.kept = len(src_ids)
        atomic_write_text(out_dir / f"{files.name}.ref.txt", "".join(f"{t}\n" for _, t in pairs))
    write_side(out_dir, files.name, "src", src_ids, vocab_size=vocab.src_size)
    write_side(out_dir, files.name, "tgt", tgt_ids, vocab_size=vocab.tgt_size)
    src_lens = np.array([len(s) for s in src_ids] or [0])
    tgt_lens = np.array([len(t) for t in tgt_ids] or [0])
    return SplitSummary(
        name=files.name,
        lines=len(pairs),
        kept=clean.kept,
        dropped=clean.dropped,
        src_tokens=int(src_lens.sum()),
        tgt_tokens=int(tgt_lens.sum()),
        src_len_mean=float(src_lens.mean()),
        src_len_p95=float(np.percentile(src_lens, 95)),
        tgt_len_mean=float(tgt_lens.mean()),
        tgt_len_p95=float(np.percentile(tgt_lens, 95)),
        max_src_len=int(src_lens.max()),
        max_tgt_len=int(tgt_lens.max()),
    )


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by the complete `staging` directory (two renames)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
