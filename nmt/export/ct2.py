"""`export` entry point: a checkpoint -> a self-contained CTranslate2 model directory.

The directory holds CTranslate2's own files (written by its converter API from a filled
`TransformerSpec`, see `nmt.export.spec`), the checkpoint's SentencePiece model(s) and
`nmt.json` (decode settings, languages, `model.*`, step, source checkpoint, versions), so
`nmt translate DIR` and `nmt evaluate DIR` work anywhere, like a checkpoint; nmt's files
are defined by `nmt.export_format` (read by the CTranslate2 engine, `nmt.decode.ct2`). The
directory is written whole (`fileio.atomic_directory`), so `out_dir` is never half-written.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.checkpoint import checkpoint_config, load_weights, read_checkpoint
from nmt.config import ExperimentConfig
from nmt.data.vocab import Vocab
from nmt.errors import CheckpointError, ConfigError, NmtError
from nmt.export_format import MANIFEST, MODEL_BIN, prefix_start, require_ctranslate2, write_nmt_files
from nmt.fileio import atomic_directory
from nmt.model import build_model
from nmt.model.layout import checkpoint_layout

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


def _load_transformer(checkpoint: Path) -> tuple[torch.nn.Module, ExperimentConfig, Vocab, int]:
    """The checkpoint's model in eval mode, config, vocabulary and step; CheckpointError for a recurrent one."""
    ckpt = read_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt, checkpoint)
    if cfg.model.arch != "transformer":
        raise CheckpointError(
            f"{checkpoint}: a recurrent model (model.arch: {cfg.model.arch}) cannot be exported: "
            "CTranslate2 runs Transformers only",
            hint=f"translate it with the checkpoint itself: nmt translate {checkpoint}",
        )
    vocab = Vocab.from_checkpoint(ckpt["vocab"])
    model = build_model(
        cfg.model,
        src_vocab_size=vocab.src_size,
        tgt_vocab_size=vocab.tgt_size,
        layout=checkpoint_layout(ckpt, checkpoint),
    )
    load_weights(model, ckpt, checkpoint)
    return model.eval(), cfg, vocab, int(ckpt.get("step", 0))


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
    model, cfg, vocab, step = _load_transformer(checkpoint)

    from nmt.export.spec import NmtConverter  # imports ctranslate2, known to be installed by now

    src_pieces = vocab.src_piece_list(list(range(vocab.src_size)))
    tgt_pieces = vocab.tgt_piece_list(list(range(vocab.tgt_size)))
    converter = NmtConverter(
        model,  # type: ignore[arg-type]
        norm=cfg.model.norm,
        activation=cfg.model.activation,
        n_heads=cfg.model.n_heads,
        src_pieces=src_pieces,
        tgt_pieces=tgt_pieces,
        prefix_start=prefix_start(cfg),
    )
    with atomic_directory(out_dir) as staging:
        converter.convert(str(staging), quantization=ct2_quantization, force=True)
        write_nmt_files(
            staging,
            cfg=cfg,
            vocab_models=(vocab.src_model, vocab.tgt_model),
            checkpoint=checkpoint,
            step=step,
            quantization=quantization,
            ctranslate2_version=ctranslate2.__version__,
            id_table=vocab.src_pieces is not None,
        )
    return ExportResult(
        out_dir, checkpoint, step, quantization, (out_dir / MODEL_BIN).stat().st_size, time.perf_counter() - start
    )
