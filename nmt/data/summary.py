"""What `nmt prepare` shows: the summary table of its splits, or its manifest and timings as JSON."""

from __future__ import annotations

from nmt.config import ExperimentConfig
from nmt.console import emit_json, info, table, warn
from nmt.data.prepare import PrepareResult
from nmt.tokens import lang_piece

COLUMNS = (
    "split", "lines", "kept", "empty", "too long", "ratio", "src tok", "tgt tok",
    "src len mean/p95", "tgt len mean/p95",
)  # fmt: skip


def render_prepare(result: PrepareResult, cfg: ExperimentConfig, *, as_json: bool) -> None:
    """Print what prepare did: up to date, or the vocabulary, repairs, a table per split and timings."""
    if as_json:
        emit_json(
            {
                "up_to_date": result.up_to_date,
                "timings": result.timings,
                "manifest": result.manifest,
                "notes": result.notes,
            }
        )
        return
    for note in result.notes:  # what a multilingual test split leaves out
        warn(note)
    if result.up_to_date:
        info(f"[green]up to date[/green]: {cfg.workdir}/data matches the inputs and config (use --force to rebuild)")
        return
    m = result.manifest
    info(
        f"vocabulary: {'joint' if m['joint'] else 'separate'}, {m['src_vocab_size']:,} source / "
        f"{m['tgt_vocab_size']:,} target pieces"
        + (f", language tokens {', '.join(lang_piece(x) for x in cfg.data.languages)}" if cfg.data.multilingual else "")
    )
    if result.invalid_utf8_lines:
        warn(
            f"{result.invalid_utf8_lines:,} lines had invalid UTF-8, replaced by U+FFFD (data.on_invalid_utf8: replace)"
        )
    rows = [
        (
            s.name,
            s.lines,
            s.kept,
            s.dropped["empty"],
            s.dropped["too_long"],
            s.dropped["ratio"],
            s.src_tokens,
            s.tgt_tokens,
            f"{s.src_len_mean:.1f} / {s.src_len_p95:.0f}",
            f"{s.tgt_len_mean:.1f} / {s.tgt_len_p95:.0f}",
        )  # fmt: skip
        for s in result.splits
    ]
    table(f"prepared {cfg.name} -> {cfg.workdir}/data", list(COLUMNS), rows)
    t = result.timings
    info(
        f"{sum(t.values()):.1f} s: scan {t['scan']:.1f} s, SentencePiece training {t['spm_train']:.1f} s, "
        f"encode {t['encode']:.1f} s"
    )
