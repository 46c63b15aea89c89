"""`export` entry point: a checkpoint -> a self-contained CTranslate2 model directory.

The directory holds CTranslate2's own files (written by its converter API from a filled
`TransformerSpec`, see `nmt.export.spec`), the checkpoint's SentencePiece model(s) and
`nmt.json` (decode settings, languages, `model.*`, step, source checkpoint, versions), so
`nmt translate DIR` and `nmt evaluate DIR` work anywhere, like a checkpoint; the format is
read by `nmt.decode.ct2`. It is written into a temp directory next to `out_dir` and renamed
into place, so `out_dir` is never half-written.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nmt import __version__
from nmt.config import config_to_dict
from nmt.decode.ct2 import FORMAT, MANIFEST, SPM_JOINT, SPM_SRC, SPM_TGT, VERSION, require_ctranslate2
from nmt.decode.load import LoadedModel, load_model
from nmt.errors import CheckpointError, ConfigError, NmtError

# nmt name -> CTranslate2 quantization (None: keep the float32 weights)
QUANTIZATIONS: dict[str, str | None] = {
    "none": None,
    "int8": "int8",
    "int8_float32": "int8_float32",
    "int8_bfloat16": "int8_bfloat16",
    "bfloat16": "bfloat16",
    "float16": "float16",
}


@dataclass(frozen=True)
class ExportResult:
    """Summary of `export_checkpoint`."""

    out_dir: Path
    checkpoint: Path
    step: int
    quantization: str
    size_bytes: int  # model.bin
    elapsed_s: float


def check_quantization(name: str) -> str | None:
    """CTranslate2's name for an nmt quantization choice; ConfigError naming the nearest valid one."""
    if name in QUANTIZATIONS:
        return QUANTIZATIONS[name]
    near = difflib.get_close_matches(name, list(QUANTIZATIONS), n=1)
    choices = ", ".join(QUANTIZATIONS)
    raise ConfigError(
        f"quantization {name!r} is not one of {choices}" + (f"; did you mean {near[0]}?" if near else ""),
        hint="int8 is the usual choice for CPUs; none keeps float32 weights",
    )


def _check_target(checkpoint: Path, out_dir: Path, *, force: bool) -> None:
    """Refuse to overwrite a non-empty `out_dir` without force, or anything that is not an export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NmtError(f"{out_dir}: exists and is not a directory", hint="choose another output directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise NmtError(f"{out_dir}: directory exists and is not empty", hint="use --force to replace it")
    if not (out_dir / MANIFEST).is_file():
        raise NmtError(
            f"{out_dir}: not an nmt export (no {MANIFEST}); --force only replaces an earlier export",
            hint="choose a new or empty output directory",
        )
    if checkpoint.resolve().is_relative_to(out_dir.resolve()):
        raise NmtError(f"{out_dir}: holds the checkpoint being exported", hint="choose another output directory")


def _load_transformer(checkpoint: Path) -> LoadedModel:
    """The checkpoint's model (as `nmt translate` loads it), or CheckpointError for a recurrent one."""
    loaded = load_model(checkpoint, device="cpu")
    if loaded.cfg.model.arch != "transformer":
        raise CheckpointError(
            f"{checkpoint}: a recurrent model (model.arch: {loaded.cfg.model.arch}) cannot be exported: "
            "CTranslate2 runs Transformers only",
            hint=f"translate it with the checkpoint itself: nmt translate {checkpoint}",
        )
    return loaded


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_checkpoint(
    checkpoint: Path, out_dir: Path, *, quantization: str = "none", force: bool = False
) -> ExportResult:
    """Write `checkpoint` as a CTranslate2 model directory `out_dir` (see the module docstring).

    Args:
        quantization: none (float32), int8, int8_float32, int8_bfloat16, bfloat16 or float16.
        force: replace an existing, non-empty `out_dir` that holds an earlier export.

    Raises:
        ConfigError: unknown quantization. CheckpointError: corrupt or recurrent checkpoint.
        NmtError: ctranslate2 missing; `out_dir` not empty (without force) or not an export.
    """
    start = time.perf_counter()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    ct2_quantization = check_quantization(quantization)
    ctranslate2 = require_ctranslate2()
    _check_target(checkpoint, out_dir, force=force)
    loaded = _load_transformer(checkpoint)
    model, cfg, vocab, step = loaded.model, loaded.cfg, loaded.vocab, loaded.step

    from nmt.export.spec import NmtConverter  # imports ctranslate2, known to be installed by now

    src_pieces = [vocab.src.id_to_piece(i) for i in range(vocab.src_size)]
    tgt_pieces = [vocab.tgt.id_to_piece(i) for i in range(vocab.tgt_size)]
    converter = NmtConverter(
        model,  # type: ignore[arg-type]
        norm=cfg.model.norm,
        activation=cfg.model.activation,
        n_heads=cfg.model.n_heads,
        src_pieces=src_pieces,
        tgt_pieces=tgt_pieces,
    )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "nmt_version": __version__,
        "ctranslate2_version": ctranslate2.__version__,
        "checkpoint": str(checkpoint.resolve()),
        "step": step,
        "name": cfg.name,
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "max_len": cfg.model.max_len,
        "quantization": quantization,
        "joint_vocab": vocab.joint,
        "model": config_to_dict(cfg.model),
        "decode": config_to_dict(cfg.decode),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        converter.convert(str(tmp), quantization=ct2_quantization, force=True)
        if vocab.joint:
            (tmp / SPM_JOINT).write_bytes(vocab.src_model)
        else:
            (tmp / SPM_SRC).write_bytes(vocab.src_model)
            (tmp / SPM_TGT).write_bytes(vocab.tgt_model)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for file in tmp.iterdir():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        tmp.chmod(0o777 & ~_umask())
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        out_dir, checkpoint, step, quantization, (out_dir / "model.bin").stat().st_size, time.perf_counter() - start
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished `tmp` to `out_dir`; an earlier export there is moved aside first and then removed.

    `out_dir` always holds either the old export or the new one in full; only between the two
    renames (microseconds) does it not exist.
    """
    old = None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    elif out_dir.is_dir():
        out_dir.rmdir()
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:  # put the earlier export back
            os.replace(old / out_dir.name, out_dir)
            old.rmdir()
        raise
    _fsync_dir(out_dir.parent)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
