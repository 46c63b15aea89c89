"""`evaluate` entry point: translate a test set (or take given translations), score, report.

Three ways in:
  - checkpoint + --src + --ref: translate the source with the checkpoint, then score;
  - config + --split: the experiment's checkpoints/best.pt (or --checkpoint NAME) on the
    split's source/target files as named in the config;
  - --hyp + --ref: score existing translations (one or several systems), no model.
With length buckets (`--by-length`), BLEU and chrF are also reported per source-length
bucket (see `nmt.evaluate.buckets`), and `--plot` draws them for every system on one axis.
Hypotheses and references are read like the sacrebleu CLI reads them (split on "\\n" only,
trailing whitespace removed), so the scores equal its scores on the same files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from nmt.config import DecodeConfig, load_config
from nmt.console import progress
from nmt.data.corpus import resolve_split
from nmt.errors import CheckpointError, ConfigError, DataError, NmtError
from nmt.evaluate.buckets import (
    DEFAULT_BOUNDARIES,
    parse_boundaries,
    scores_by_length,
)
from nmt.evaluate.results import EvalReport
from nmt.experiment import Experiment
from nmt.fileio import DecodeStats, atomic_open, count_lines, read_lines
from nmt.metrics import check_tokenizer, corpus_scores

CONFIG_SUFFIXES = (".yaml", ".yml")
USAGE = "nmt evaluate CHECKPOINT --src FILE --ref FILE | CONFIG --split NAME | --hyp FILE [--hyp FILE ...] --ref FILE"


def evaluate(
    target: Path | None,
    *,
    src: Path | None = None,
    refs: Sequence[Path] = (),
    hyps: Sequence[Path] = (),
    labels: Sequence[str] = (),
    split: str | None = None,
    checkpoint_name: str | None = None,
    out: Path | None = None,
    overrides: Sequence[str] = (),
    fail_under: float | None = None,
    boundaries: Sequence[int] | None = None,
    tgt_lang: str | None = None,
) -> list[EvalReport]:
    """Run one evaluation per system; `target` is a checkpoint, a config (.yaml/.yml), or None with `hyps`.

    Args:
        hyps: translations to score, one system each (only without `target`).
        labels: one name per system (default: the hypothesis file's or checkpoint's stem).
        overrides: `--set` strings (decode.* only for a checkpoint; any key for a config).
        fail_under: recorded in each report; see `gate`.
        boundaries: source-length bucket starts (see `nmt.evaluate.buckets`); None = no buckets.
        tgt_lang: the hypotheses' language, which picks BLEU's tokenizer (`nmt.metrics`); default: the
            config's or checkpoint's `data.tgt_lang`, none with `hyps`.
    """
    refs = list(refs)
    _check_form(target, hyps=hyps, src=src, refs=refs, split=split, checkpoint_name=checkpoint_name, out=out)
    if target is None:
        check_tokenizer(tgt_lang, where="--tgt-lang")
        return _score_files(
            hyps, refs, src=src, labels=labels, fail_under=fail_under, boundaries=boundaries, tgt_lang=tgt_lang
        )
    if target.suffix in CONFIG_SUFFIXES:
        assert split is not None
        label, report = _translate_split(
            target,
            split,
            checkpoint_name=checkpoint_name,
            labels=labels,
            overrides=overrides,
            out=out,
            fail_under=fail_under,
            tgt_lang=tgt_lang,
        )
    else:
        assert src is not None
        label, report = _translate_source(
            target, src, refs, labels=labels, overrides=overrides, out=out, fail_under=fail_under, tgt_lang=tgt_lang
        )
    return [_with_buckets(report, label, boundaries)]


def _check_form(
    target: Path | None,
    *,
    hyps: Sequence[Path],
    src: Path | None,
    refs: list[Path],
    split: str | None,
    checkpoint_name: str | None,
    out: Path | None,
) -> None:
    """NmtError unless the options fit the form `target` picks: --hyp, a config or a checkpoint (see USAGE)."""
    if target is None and not hyps:
        raise NmtError("nothing to evaluate: give a CHECKPOINT, a CONFIG or --hyp FILE", hint=USAGE)
    if target is None:
        _check_options(
            "--hyp",
            {"--hyp": bool(hyps), "--ref": bool(refs)},
            {"--split": split, "--checkpoint": checkpoint_name, "--out": out},
        )
    elif hyps:
        raise NmtError("give either a CHECKPOINT/CONFIG to translate with or --hyp translations, not both")
    elif target.suffix in CONFIG_SUFFIXES:
        _check_options("a config", {"--split": split is not None}, {"--src": src, "--ref": refs or None})
    else:
        _check_options(
            "a checkpoint",
            {"--src": src is not None, "--ref": bool(refs)},
            {"--split": split, "--checkpoint": checkpoint_name},
        )


def _translate_split(
    config: Path,
    split: str,
    *,
    checkpoint_name: str | None,
    labels: Sequence[str],
    overrides: Sequence[str],
    out: Path | None,
    fail_under: float | None,
    tgt_lang: str | None,
) -> tuple[str, EvalReport]:
    """The config form: the experiment's checkpoint translates the split named in the config; (label, report)."""
    cfg = load_config(config, overrides=list(overrides))
    if split not in cfg.data.splits:
        raise ConfigError(f"{config}: no split {split!r} in data.splits (it has: {', '.join(cfg.data.splits)})")
    files = resolve_split(split, cfg.data.splits[split], cfg.data)
    name = (checkpoint_name or "best").removesuffix(".pt")
    ckpt = Experiment.from_config(cfg).checkpoint_dir / f"{name}.pt"
    if not ckpt.is_file():
        raise CheckpointError(
            f"{ckpt}: checkpoint not found",
            hint="train first (`nmt train CONFIG`), or pick one with --checkpoint last|averaged|step_N",
        )
    [label] = _labels(labels, [f"{cfg.name} {name}"])
    report = translate_and_score(
        ckpt,
        files.src,
        [files.tgt],
        base=cfg.decode,
        out=out,
        tag=split,
        split=split,
        fail_under=fail_under,
        tgt_lang=tgt_lang or cfg.data.tgt_lang,
    )
    return label, report


def _translate_source(
    checkpoint: Path,
    src: Path,
    refs: list[Path],
    *,
    labels: Sequence[str],
    overrides: Sequence[str],
    out: Path | None,
    fail_under: float | None,
    tgt_lang: str | None,
) -> tuple[str, EvalReport]:
    """The checkpoint form: the checkpoint (or export directory) translates `src`; (label, report)."""
    [label] = _labels(labels, [checkpoint.stem])
    tag = Path(src.name.removesuffix(".gz")).stem
    report = translate_and_score(
        checkpoint, src, refs, overrides=overrides, out=out, tag=tag, fail_under=fail_under, tgt_lang=tgt_lang
    )
    return label, report


def length_boundaries(buckets: str | None, *, enabled: bool) -> tuple[int, ...] | None:
    """The bucket starts from `--buckets` (or the defaults) when scores by length are asked for, else None."""
    if buckets is not None:
        return parse_boundaries(buckets)
    return DEFAULT_BOUNDARIES if enabled else None


def _labels(given: Sequence[str], defaults: list[str], *, fallback: list[str] | None = None) -> list[str]:
    """One label per system: the --label values, else `defaults` (else `fallback` when defaults repeat)."""
    if given:
        if len(given) != len(defaults):
            raise NmtError(
                f"--label was given {len(given)} time(s) for {len(defaults)} system(s)",
                hint="give one --label per --hyp, in the same order (or none: the file names are used)",
            )
        return list(given)
    if fallback is not None and len(set(defaults)) < len(defaults):
        return fallback
    return defaults


def _read_source(path: Path) -> list[str]:
    """Source lines for length buckets; invalid UTF-8 is replaced, as translation reads it."""
    return list(read_lines(path, replace_invalid=True))


def _score_files(
    hyps: Sequence[Path],
    refs: list[Path],
    *,
    src: Path | None,
    labels: Sequence[str],
    fail_under: float | None,
    boundaries: Sequence[int] | None,
    tgt_lang: str | None,
) -> list[EvalReport]:
    """One report per hypothesis file (the --hyp form)."""
    if boundaries is not None and src is None:
        raise NmtError(
            "--by-length (also implied by --plot and --buckets) needs the source sentences to measure their "
            "length, and --hyp gives only translations",
            hint="add --src FILE, the source the hypotheses translate (line-aligned with them)",
        )
    names = _labels(labels, [h.stem for h in hyps], fallback=[str(h) for h in hyps])
    src_text = _read_source(src) if src is not None else None
    return [
        _score_file(
            hyp,
            refs,
            src=src,
            src_text=src_text,
            label=name,
            fail_under=fail_under,
            boundaries=boundaries,
            tgt_lang=tgt_lang,
        )
        for hyp, name in zip(hyps, names, strict=True)
    ]


def _score_file(
    hyp: Path,
    refs: list[Path],
    *,
    src: Path | None,
    src_text: list[str] | None,
    label: str,
    fail_under: float | None,
    boundaries: Sequence[int] | None,
    tgt_lang: str | None,
) -> EvalReport:
    """Score one hypothesis file against `refs` (and by source length with `boundaries`)."""
    start = time.perf_counter()
    lines = _check_counts(hyp, [*([src] if src is not None else []), *refs])
    hyp_text, ref_text = _read_scored(hyp), [_read_scored(r) for r in refs]
    scores = corpus_scores(hyp_text, ref_text, tgt_lang=tgt_lang)
    by_length = None
    if boundaries is not None:
        assert src_text is not None
        by_length = scores_by_length(src_text, hyp_text, ref_text, boundaries, tgt_lang=tgt_lang)
    elapsed_s = time.perf_counter() - start
    return EvalReport(
        scores, hyp, refs, lines, elapsed_s, fail_under, src=src, label=label, by_length=by_length, tgt_lang=tgt_lang
    )


def _with_buckets(report: EvalReport, label: str, boundaries: Sequence[int] | None) -> EvalReport:
    """`report` labelled, with scores by source length when `boundaries` are given."""
    report.label = label
    if boundaries is not None:
        assert report.src is not None
        start = time.perf_counter()
        hyps, refs = _read_scored(report.hyp), [_read_scored(r) for r in report.refs]
        report.by_length = scores_by_length(_read_source(report.src), hyps, refs, boundaries, tgt_lang=report.tgt_lang)
        report.elapsed_s += time.perf_counter() - start
    return report


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
    tgt_lang: str | None = None,
) -> EvalReport:
    """Translate `src` with the best hypothesis per line, write them, and score against `refs`.

    The hypotheses go to `out`, or to `<checkpoint stem>.<tag>.hyp` next to the checkpoint.
    `tgt_lang` defaults to the checkpoint's `data.tgt_lang`.
    """
    # imported here so that `--hyp` scoring never loads torch (a CI step then takes a second)
    from nmt.decode.translate import TranslateStats, best_translations, load_for_decoding, warn_repairs

    lines = _check_counts(src, refs)
    ref_text = [_read_scored(r) for r in refs]  # read before translating: a bad reference fails fast
    start = time.perf_counter()
    loaded, decode_cfg, device = load_for_decoding(checkpoint, base=base, overrides=overrides)
    decode_cfg = dataclasses.replace(decode_cfg, nbest=1)
    tgt_lang = tgt_lang or loaded.cfg.data.tgt_lang
    check_tokenizer(tgt_lang, where=f"{checkpoint} target language")  # before translating, not after
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
    scores = corpus_scores([h.rstrip() for h in hyps], ref_text, tgt_lang=tgt_lang)
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
        tgt_lang=tgt_lang,
    )
