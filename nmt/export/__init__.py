"""Export: a checkpoint -> a directory another runtime serves (CTranslate2: `nmt.export.ct2`), or an
Argos Translate package holding one (`nmt.export.argos`). `export_command` is what `nmt export` runs."""

from __future__ import annotations

from pathlib import Path

from nmt.errors import NmtError


def export_command(
    checkpoint: Path,
    *,
    output: Path | None,
    argos: Path | None,
    quantization: str,
    force: bool,
    from_name: str | None,
    to_name: str | None,
    sbd_model: Path | None,
    stanza_model: Path | None,
) -> str:
    """Check which export the options ask for, run it, and return the line that says what was written."""
    if output is not None and argos is None:
        if any(x is not None for x in (from_name, to_name, sbd_model, stanza_model)):
            raise NmtError(
                "--from-name, --to-name, --sbd-model and --stanza-model go with --argos FILE, not with -o DIR"
            )
        from nmt.export.ct2 import export_checkpoint

        r = export_checkpoint(checkpoint, output, quantization=quantization, force=force)
        return (
            f"exported {r.checkpoint} (step {r.step:,}) -> {r.out_dir} ({r.quantization}, "
            f"{r.size_bytes / 1e6:.1f} MB, {r.elapsed_s:.1f} s)"
        )
    if output is not None or argos is None:
        raise NmtError("give one of -o DIR (a CTranslate2 directory) and --argos FILE (an Argos Translate package)")
    if from_name is None or to_name is None:
        raise NmtError(
            "--argos needs --from-name and --to-name: the language names Argos Translate and LibreTranslate show",
            hint="e.g. --from-name German --to-name English",
        )
    from nmt.export.argos import export_argos

    a = export_argos(
        checkpoint,
        argos,
        from_name=from_name,
        to_name=to_name,
        quantization=quantization,
        sbd_model=sbd_model,
        stanza_model=stanza_model,
        force=force,
    )
    return (
        f"exported {a.checkpoint} (step {a.step:,}) -> {a.package} ({a.from_code} -> {a.to_code}, {a.quantization}, "
        f"{a.size_bytes / 1e6:.1f} MB, {a.elapsed_s:.1f} s)"
    )
