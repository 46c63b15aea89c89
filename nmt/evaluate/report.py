"""`evaluate` entry point: translate a test set (or take given translations), score, report.

Three ways in:
  - checkpoint + --src + --ref: translate the source with the checkpoint, then score;
  - config + --split: the experiment's checkpoints/best.pt (or --checkpoint NAME) on the
    split's source/target files as named in the config;
  - --hyp + --ref: score existing translations, no model.
Hypotheses and references are read like the sacrebleu CLI reads them (split on "\\n" only,
trailing whitespace removed), so the scores equal its scores on the same files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.config import DecodeConfig, config_to_dict, load_config
from nmt.console import emit_json, progress, table
from nmt.data.corpus import resolve_split
from nmt.errors import CheckpointError, ConfigError, DataError, NmtError
from nmt.experiment import Experiment
from nmt.fileio import DecodeStats, atomic_open, count_lines, read_lines
from nmt.metrics import MetricScore, corpus_scores

if TYPE_CHECKING:
    from nmt.decode.translate import TranslateStats

CONFIG_SUFFIXES = (".yaml", ".yml")
USAGE = "nmt evaluate CHECKPOINT --src FILE --ref FILE | CONFIG --split NAME | --hyp FILE --ref FILE"


@dataclass
class EvalReport:
    """Scores of one evaluation and everything needed to reproduce them."""

    scores: dict[str, MetricScore]  # "bleu", "chrf", "chrf++", "ter"
    hyp: Path  # the scored hypotheses (written here when a model translated them)
    refs: list[Path]
    lines: int
    elapsed_s: float  # translation (if any) and scoring
    threshold: float | None = None  # --fail-under BLEU
    src: Path | None = None
    checkpoint: Path | None = None
    step: int | None = None  # the checkpoint's optimizer step
    split: str | None = None
    decode: DecodeConfig | None = None
    device: str | None = None
    stats: TranslateStats | None = None

    @property
    def passed(self) -> bool | None:
        """BLEU >= threshold; None without a threshold."""
        return None if self.threshold is None else self.scores["bleu"].score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "scores": {key: s.score for key, s in self.scores.items()},
            "signatures": {key: s.signature for key, s in self.scores.items()},
            "bleu_detail": self.scores["bleu"].detail,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "step": self.step,
            "split": self.split,
            "src": str(self.src) if self.src else None,
            "refs": [str(r) for r in self.refs],
            "hyp": str(self.hyp),
            "lines": self.lines,
            "decode": config_to_dict(self.decode) if self.decode else None,
            "device": self.device,
            "truncated_lines": self.stats.truncated if self.stats else None,
            "invalid_utf8_lines": self.stats.invalid_utf8 if self.stats else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "threshold": self.threshold,
            "passed": self.passed,
        }


def evaluate(
    target: Path | None,
    *,
    src: Path | None = None,
    refs: Sequence[Path] = (),
    hyp: Path | None = None,
    split: str | None = None,
    checkpoint_name: str | None = None,
    out: Path | None = None,
    overrides: Sequence[str] = (),
    fail_under: float | None = None,
) -> EvalReport:
    """Run one evaluation; `target` is a checkpoint, a config (.yaml/.yml), or None with `hyp`.

    Args:
        overrides: `--set` strings (decode.* only for a checkpoint; any key for a config).
        fail_under: recorded in the report; see `gate`.
    """
    refs = list(refs)
    if target is None and hyp is None:
        raise NmtError("nothing to evaluate: give a CHECKPOINT, a CONFIG or --hyp FILE", hint=USAGE)
    if target is None:
        _check_options(
            "--hyp",
            {"--hyp": hyp is not None, "--ref": bool(refs)},
            {"--src": src, "--split": split, "--checkpoint": checkpoint_name, "--out": out},
        )
        assert hyp is not None
        start = time.perf_counter()
        lines = _check_counts(hyp, refs)
        scores = corpus_scores(_read_scored(hyp), [_read_scored(r) for r in refs])
        return EvalReport(scores, hyp, refs, lines, time.perf_counter() - start, fail_under)
    if hyp is not None:
        raise NmtError("give either a CHECKPOINT/CONFIG to translate with or --hyp translations, not both")
    if target.suffix in CONFIG_SUFFIXES:
        _check_options("a config", {"--split": split is not None}, {"--src": src, "--ref": refs or None})
        assert split is not None
        cfg = load_config(target, overrides=list(overrides))
        if split not in cfg.data.splits:
            raise ConfigError(f"{target}: no split {split!r} in data.splits (it has: {', '.join(cfg.data.splits)})")
        files = resolve_split(split, cfg.data.splits[split], cfg.data)
        name = (checkpoint_name or "best").removesuffix(".pt")
        ckpt = Experiment.from_config(cfg).checkpoint_dir / f"{name}.pt"
        if not ckpt.is_file():
            raise CheckpointError(
                f"{ckpt}: checkpoint not found",
                hint="train first (`nmt train CONFIG`), or pick one with --checkpoint last|averaged|step_N",
            )
        return translate_and_score(
            ckpt, files.src, [files.tgt], base=cfg.decode, out=out, tag=split, split=split, fail_under=fail_under
        )
    _check_options(
        "a checkpoint",
        {"--src": src is not None, "--ref": bool(refs)},
        {"--split": split, "--checkpoint": checkpoint_name},
    )
    assert src is not None
    tag = Path(src.name.removesuffix(".gz")).stem
    return translate_and_score(target, src, refs, overrides=overrides, out=out, tag=tag, fail_under=fail_under)


def _check_options(mode: str, required: dict[str, bool], forbidden: dict[str, object]) -> None:
    """NmtError for a missing required option or an option that does not fit the mode."""
    for name, given in required.items():
        if not given:
            raise NmtError(f"evaluating with {mode} needs {name}", hint=USAGE)
    for name, value in forbidden.items():
        if value is not None:
            raise NmtError(f"{name} cannot be used when evaluating with {mode}")


def _check_counts(scored: Path, refs: list[Path]) -> int:
    """Line count shared by `scored` and every reference, or DataError naming both files and counts."""
    n = count_lines(scored)
    for ref in refs:
        m = count_lines(ref)
        if m != n:
            raise DataError(
                f"line counts differ: {scored} has {n:,} lines but {ref} has {m:,}",
                hint="hypotheses, sources and references must be line-aligned",
            )
    return n


def _read_scored(path: Path) -> list[str]:
    """Lines as the sacrebleu CLI reads them: split on newline only, trailing whitespace stripped."""
    return [line.rstrip() for line in read_lines(path)]


def translate_and_score(
    checkpoint: Path,
    src: Path,
    refs: list[Path],
    *,
    base: DecodeConfig | None = None,
    overrides: Sequence[str] = (),
    out: Path | None,
    tag: str,
    split: str | None = None,
    fail_under: float | None = None,
) -> EvalReport:
    """Translate `src` with the best hypothesis per line, write them, and score against `refs`.

    The hypotheses go to `out`, or to `<checkpoint stem>.<tag>.hyp` next to the checkpoint.
    """
    # imported here so that `--hyp` scoring never loads torch (a CI step then takes a second)
    from nmt.decode.translate import TranslateStats, best_translations, load_for_decoding, warn_repairs

    lines = _check_counts(src, refs)
    ref_text = [_read_scored(r) for r in refs]  # read before translating: a bad reference fails fast
    start = time.perf_counter()
    loaded, decode_cfg, device = load_for_decoding(checkpoint, base=base, overrides=overrides)
    decode_cfg = dataclasses.replace(decode_cfg, nbest=1)
    hyp_path = out if out is not None else checkpoint.with_name(f"{checkpoint.stem}.{tag}.hyp")
    stats, read_stats = TranslateStats(), DecodeStats()
    hyps: list[str] = []
    src_lines = read_lines(src, replace_invalid=True, stats=read_stats)
    with atomic_open(hyp_path, "wb") as fh, progress(total=lines, desc="translating", unit=" lines") as bar:
        for text in best_translations(loaded, src_lines, decode_cfg, device=device, stats=stats, on_batch=bar.update):
            hyps.append(text)
            fh.write(f"{text}\n".encode())
    stats.invalid_utf8 = read_stats.invalid_utf8_lines
    warn_repairs(stats, max_len=loaded.model.max_len)
    scores = corpus_scores([h.rstrip() for h in hyps], ref_text)
    return EvalReport(
        scores,
        hyp_path,
        refs,
        lines,
        time.perf_counter() - start,
        fail_under,
        src=src,
        checkpoint=checkpoint,
        step=loaded.step,
        split=split,
        decode=decode_cfg,
        device=device.type,
        stats=stats,
    )


def render(report: EvalReport, *, as_json: bool) -> None:
    """The scores as one JSON document on stdout, or as a table on stderr."""
    if as_json:
        emit_json(report.to_json())
        return
    what = f"{report.checkpoint} (step {report.step:,})" if report.checkpoint else str(report.hyp)
    rows = [
        (s.name + (" (lower is better)" if key == "ter" else ""), s.score, s.signature)
        for key, s in report.scores.items()
    ]
    table(f"{what}: {report.lines:,} lines, {report.elapsed_s:.1f} s", ["metric", "score", "signature"], rows)


def gate(report: EvalReport) -> None:
    """NmtError with exit code 1 when BLEU is below the --fail-under threshold."""
    if report.passed is False:
        assert report.threshold is not None
        bleu = report.scores["bleu"].score
        raise NmtError(f"BLEU {bleu:.2f} is below --fail-under {report.threshold:.2f}", exit_code=1)
