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
    lang_names: list[str] | None = None,
    directions: list[str] | None = None,
    hf: Path | None = None,
) -> str:
    """Check which export the options ask for, run it, and return the line that says what was written."""
    if hf is not None:
        if output is not None or argos is not None:
            raise NmtError("give one of -o DIR, --argos FILE|DIR and --hf DIR")
        from nmt.export.hf import export_hf

        h = export_hf(checkpoint, hf, force=force)
        order = ", residual stream permuted into Marian's position order" if h.permuted else ""
        return (
            f"exported {h.checkpoint} (step {h.step:,}) -> {h.out_dir} "
            f"(Hugging Face MarianMT{order}, {h.elapsed_s:.1f} s)"
        )
    argos_only = {
        "--from-name": from_name, "--to-name": to_name, "--sbd-model": sbd_model, "--stanza-model": stanza_model,
        "--lang-name": lang_names or None, "--direction": directions or None,
    }  # fmt: skip
    if output is not None and argos is None:
        if any(value is not None for value in argos_only.values()):
            given = ", ".join(flag for flag, value in argos_only.items() if value is not None)
            raise NmtError(f"{given}: these go with --argos FILE|DIR, not with -o DIR")
        from nmt.export.ct2 import export_checkpoint

        r = export_checkpoint(checkpoint, output, quantization=quantization, force=force)
        return (
            f"exported {r.checkpoint} (step {r.step:,}) -> {r.out_dir} ({r.quantization}, "
            f"{r.size_bytes / 1e6:.1f} MB, {r.elapsed_s:.1f} s)"
        )
    if output is not None or argos is None:
        raise NmtError(
            "give one of -o DIR (a CTranslate2 directory) and --argos FILE|DIR (Argos Translate packages: a file "
            "for a bilingual model, a directory of one package per direction for a multilingual one)"
        )
    from nmt.export.argos import export_argos_packages, parse_lang_names

    packages = export_argos_packages(
        checkpoint,
        argos,
        from_name=from_name,
        to_name=to_name,
        lang_names=parse_lang_names(lang_names or []),
        directions=directions,
        quantization=quantization,
        sbd_model=sbd_model,
        stanza_model=stanza_model,
        force=force,
    )
    return "\n".join(
        f"exported {a.checkpoint} (step {a.step:,}) -> {a.package} ({a.from_code} -> {a.to_code}, {a.quantization}, "
        f"{a.size_bytes / 1e6:.1f} MB{f', target_prefix {a.target_prefix}' if a.target_prefix else ''}, "
        f"{a.elapsed_s:.1f} s)"
        for a in packages
    )
