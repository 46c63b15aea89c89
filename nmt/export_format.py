"""The export format: what a directory written by `nmt export` holds, and its one writer and reader
of nmt's part of it. A leaf like `nmt.checkpoint`: `nmt.export` writes through it, the
CTranslate2 engine (`nmt.decode.ct2`) reads through it, and neither imports the other.

    <export>/model.bin, config.json, shared_vocabulary.json | source/target_vocabulary.json
                        CTranslate2's own files (its converter API)
    <export>/spm.model | spm.src.model + spm.tgt.model
                        the checkpoint's SentencePiece model(s)
    <export>/nmt.json   FORMAT, VERSION, the source checkpoint and step, languages (a multilingual
                        model's `directions` and `lang_token`), max_len, quantization, model.* and
                        decode.* settings, nmt and CTranslate2 versions

A multilingual model whose language token starts the decoder (`data.lang_token: target`) is
exported with CTranslate2's `decoder_start_token` None (`prefix_start`): every call passes the
token as `target_prefix`, as for M2M-100, and that is how Argos packages run it. A source-side
tag is a source piece like any other.

So `nmt translate DIR` and `nmt evaluate DIR` work anywhere, like a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt import __version__
from nmt.config import ExperimentConfig, config_from_dict, config_to_dict
from nmt.errors import CheckpointError, ConfigError, NmtError
from nmt.fileio import atomic_write_bytes, atomic_write_text

MANIFEST = "nmt.json"  # what makes a directory an nmt export (with CTranslate2's model.bin)
MODEL_BIN = "model.bin"
FORMAT = "nmt-ctranslate2"
VERSION = 1
SPM_JOINT, SPM_SRC, SPM_TGT = "spm.model", "spm.src.model", "spm.tgt.model"
INSTALL_HINT = "pip install 'nmt[ct2]'  (CTranslate2 4.x)"


def require_ctranslate2() -> Any:
    """The `ctranslate2` module, or NmtError with the install hint."""
    try:
        import ctranslate2
    except ImportError:
        raise NmtError("the CTranslate2 engine needs the ctranslate2 package, which is not installed",
                       hint=INSTALL_HINT) from None  # fmt: skip
    return ctranslate2


def is_export_dir(path: str | Path) -> bool:
    """True for a directory written by `nmt export` (it holds nmt.json and model.bin)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file() and (path / MODEL_BIN).is_file()


def prefix_start(cfg: ExperimentConfig) -> bool:
    """Whether an export of a model of `cfg` starts its decoder with a `target_prefix` (the target
    language token) rather than bos: a multilingual model with `data.lang_token: target`."""
    return cfg.data.multilingual and cfg.data.lang_token == "target"


def write_nmt_files(
    directory: Path,
    *,
    cfg: ExperimentConfig,
    vocab_models: tuple[bytes, bytes],
    checkpoint: Path,
    step: int,
    quantization: str,
    ctranslate2_version: str,
    id_table: bool = False,
) -> dict[str, Any]:
    """Write nmt's files of an export (beside CTranslate2's) into `directory`; returns the manifest.

    `vocab_models`: the (source, target) SentencePiece model bytes, the same bytes when joint.
    `id_table`: the model's ids are an imported model's own (`nmt.data.vocab.Vocab`): the export's
    CTranslate2 vocabulary files, which list the piece of every id, are then the id tables."""
    src_model, tgt_model = vocab_models
    if src_model == tgt_model:
        atomic_write_bytes(directory / SPM_JOINT, src_model)
    else:
        atomic_write_bytes(directory / SPM_SRC, src_model)
        atomic_write_bytes(directory / SPM_TGT, tgt_model)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "nmt_version": __version__,
        "ctranslate2_version": ctranslate2_version,
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": step,
        "name": cfg.name,
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        **(
            {"directions": list(cfg.data.directions), "lang_token": cfg.data.lang_token}
            if cfg.data.multilingual
            else {}
        ),
        "max_len": cfg.model.max_len,
        "quantization": quantization,
        "joint_vocab": src_model == tgt_model,
        "id_table": id_table,
        "model": config_to_dict(cfg.model),
        "decode": config_to_dict(cfg.decode),
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def joint_spm(directory: Path) -> Path:
    """The joint SentencePiece model of an export (Argos packages need one model for both sides)."""
    return directory / SPM_JOINT


@dataclass(frozen=True)
class ExportInfo:
    """What `nmt.json` and the SentencePiece files of an export say."""

    path: Path
    cfg: ExperimentConfig  # data languages, model.* and decode.* of the source checkpoint
    vocab_models: tuple[bytes, bytes]  # (source, target) SentencePiece model bytes
    pieces: tuple[tuple[str, ...], tuple[str, ...]] | None  # an imported model's id tables (source, target)
    step: int
    quantization: str  # as exported: none, int8, ...
    manifest: dict[str, Any]


def read_export(path: str | Path) -> ExportInfo:
    """Read an export's nmt.json and SentencePiece models; CheckpointError when it is not one."""
    path = Path(path)
    if not is_export_dir(path):
        what = "not found" if not path.exists() else f"not an nmt export (no {MANIFEST} and {MODEL_BIN})"
        raise CheckpointError(
            f"{path}: {what}",
            hint="give a checkpoint (.pt) or a directory written by `nmt export CHECKPOINT -o DIR`",
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise ValueError(f"version {manifest.get('version')} is not supported (this nmt reads {VERSION})")
        if (path / SPM_JOINT).is_file():
            src_model = tgt_model = (path / SPM_JOINT).read_bytes()
        else:
            src_model, tgt_model = (path / SPM_SRC).read_bytes(), (path / SPM_TGT).read_bytes()
        raw = {
            "name": manifest.get("name", path.name),
            "data": (
                {"directions": manifest["directions"], "lang_token": manifest["lang_token"]}
                if manifest.get("directions")
                else {"src_lang": manifest["src_lang"], "tgt_lang": manifest["tgt_lang"]}
            ),
            "model": manifest["model"],
            "decode": manifest["decode"],
        }
        cfg = config_from_dict(raw, where=f"{path / MANIFEST}")
        pieces = _id_tables(path) if manifest.get("id_table") else None
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable nmt export ({first[:200]})", hint="export the checkpoint again with `nmt export`"
        ) from None
    return ExportInfo(
        path, cfg, (src_model, tgt_model), pieces, int(manifest.get("step", 0)),
        str(manifest.get("quantization", "none")), manifest,
    )  # fmt: skip


def _id_tables(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (source, target) piece of every id, from CTranslate2's vocabulary files (shared or one per side)."""
    shared = path / "shared_vocabulary.json"
    if shared.is_file():
        table = tuple(json.loads(shared.read_text(encoding="utf-8")))
        return table, table
    src = tuple(json.loads((path / "source_vocabulary.json").read_text(encoding="utf-8")))
    return src, tuple(json.loads((path / "target_vocabulary.json").read_text(encoding="utf-8")))
