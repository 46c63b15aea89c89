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
import functools
import time
from collections.abc import Sequence
from pathlib import Path

from nmt.config import DecodeConfig, load_config
from nmt.console import progress
from nmt.data.corpus import resolve_splits
from nmt.decode.languages import LanguageRequest
from nmt.errors import CheckpointError, ConfigError, NmtError
from nmt.evaluate.buckets import (
    DEFAULT_BOUNDARIES,
    parse_boundaries,
    scores_by_length,
)
from nmt.evaluate.results import EvalReport
from nmt.evaluate.scored_files import check_counts, read_scored, read_source
from nmt.experiment import Experiment
from nmt.fileio import DecodeStats, atomic_open, read_lines
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
    direction: str | None = None,
    glossary: Path | None = None,
) -> list[EvalReport]:
    """Run one evaluation per system; `target` is a checkpoint, a config (.yaml/.yml), or None with `hyps`.

    Args:
        hyps: translations to score, one system each (only without `target`).
        labels: one name per system (default: the hypothesis file's or checkpoint's stem).
        overrides: `--set` strings (decode.* only for a checkpoint; any key for a config).
        fail_under: recorded in each report; see `gate`.
        boundaries: source-length bucket starts (see `nmt.evaluate.buckets`); None = no buckets.
        tgt_lang: the language to translate into, which also picks BLEU's tokenizer (`nmt.metrics`);
            default: the model's target language (needed for a multilingual checkpoint writing
            several), none with `hyps`.
        direction: with a multilingual config, score this direction only (default: every one).
        glossary: a glossary file whose target terms the translations must hold (`nmt.decode.glossary`).
    """
    refs = list(refs)
    _check_form(target, hyps=hyps, src=src, refs=refs, split=split, checkpoint_name=checkpoint_name, out=out)
    if target is None and glossary is not None:
        raise NmtError("--glossary binds the translations a model makes; it cannot be used with --hyp")
    if target is None:
        check_tokenizer(tgt_lang, where="--tgt-lang")
        return _score_files(
            hyps, refs, src=src, labels=labels, fail_under=fail_under, boundaries=boundaries, tgt_lang=tgt_lang
        )
    if target.suffix in CONFIG_SUFFIXES:
        assert split is not None
        systems = _translate_split(
            target,
            split,
            checkpoint_name=checkpoint_name,
            labels=labels,
            overrides=overrides,
            out=out,
            fail_under=fail_under,
            tgt_lang=tgt_lang,
            direction=direction,
            glossary=glossary,
        )
    else:
        assert src is not None
        if direction is not None:
            raise NmtError("--direction picks a direction of a multilingual config; with a checkpoint use --tgt-lang")
        systems = [
            _translate_source(
                target,
                src,
                refs,
                labels=labels,
                overrides=overrides,
                out=out,
                fail_under=fail_under,
                tgt_lang=tgt_lang,
                glossary=glossary,
            )  # fmt: skip
        ]
    return [_with_buckets(report, label, boundaries) for label, report in systems]


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
    direction: str | None,
    glossary: Path | None = None,
) -> list[tuple[str, EvalReport]]:
    """The config form: the experiment's checkpoint translates the split named in the config, every
    direction of it for a multilingual config (or `direction`); (label, report) each."""
    cfg = load_config(config, overrides=list(overrides))
    if split not in cfg.data.splits:
        raise ConfigError(f"{config}: no split {split!r} in data.splits (it has: {', '.join(cfg.data.splits)})")
    if direction is not None and direction not in cfg.data.directions:
        raise ConfigError(
            f"--direction {direction}: {config} has "
            + (f"the directions {', '.join(cfg.data.directions)}" if cfg.data.directions else "no data.directions")
        )
    parts, _ = resolve_splits(cfg.data, only=split)
    name = (checkpoint_name or "best").removesuffix(".pt")
    ckpt = Experiment.from_config(cfg).checkpoint_dir / f"{name}.pt"
    if not ckpt.is_file():
        raise CheckpointError(
            f"{ckpt}: checkpoint not found",
            hint="train first (`nmt train CONFIG`), or pick one with --checkpoint last|averaged|step_N",
        )
    score = functools.partial(
        translate_and_score, ckpt, base=cfg.decode, out=out, split=split, fail_under=fail_under, glossary=glossary
    )
    if not cfg.data.multilingual:
        [label] = _labels(labels, [f"{cfg.name} {name}"])
        request = LanguageRequest(tgt_lang or cfg.data.tgt_lang)
        return [(label, score(parts[0].src, [parts[0].tgt], tag=split, languages=request))]
    chosen = [(f, d) for f in parts if (d := f.name.partition("/")[0]) == (direction or d)]
    if tgt_lang is not None or (out is not None and len(chosen) > 1):
        raise NmtError(
            "with a multilingual config each direction has its own target language and hypothesis file: "
            + ("--tgt-lang does not apply" if tgt_lang is not None else "--out needs --direction"),
            hint="pick one direction with --direction SRC-TGT",
        )
    names = _labels(labels, [f"{cfg.name} {name} {d}" for _, d in chosen])
    return [
        (label, score(f.src, [f.tgt], tag=f"{split}.{d}", languages=LanguageRequest(*d.split("-")[::-1]), direction=d))
        for (f, d), label in zip(chosen, names, strict=True)
    ]


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
    glossary: Path | None = None,
) -> tuple[str, EvalReport]:
    """The checkpoint form: the checkpoint (or export directory) translates `src`; (label, report)."""
    [label] = _labels(labels, [checkpoint.stem])
    tag = Path(src.name.removesuffix(".gz")).stem
    report = translate_and_score(
        checkpoint, src, refs, overrides=overrides, out=out, tag=tag, fail_under=fail_under,
        languages=LanguageRequest(tgt_lang), glossary=glossary,
    )  # fmt: skip
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
    src_text = read_source(src) if src is not None else None
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
    lines = check_counts(hyp, [*([src] if src is not None else []), *refs])
    hyp_text, ref_text = read_scored(hyp), [read_scored(r) for r in refs]
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
        hyps, refs = read_scored(report.hyp), [read_scored(r) for r in report.refs]
        report.by_length = scores_by_length(read_source(report.src), hyps, refs, boundaries, tgt_lang=report.tgt_lang)
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
    languages: LanguageRequest | None = None,
    direction: str | None = None,
    glossary: Path | None = None,
) -> EvalReport:
    """Translate `src` with the best hypothesis per line, write them, and score against `refs`.

    The hypotheses go to `out`, or to `<checkpoint stem>.<tag>.hyp` next to the checkpoint.
    `languages` picks the output language (`nmt.decode.languages`), which also picks BLEU's tokenizer.
    `glossary`: target terms the translations must hold (`nmt.decode.glossary`).
    """
    # imported here so that `--hyp` scoring never loads torch (a CI step then takes a second)
    from nmt.decode.glossary import check_terms, term_source
    from nmt.decode.languages import choose_route
    from nmt.decode.translate import TranslateStats, load_for_decoding, report_terms, translate_route, warn_repairs

    lines = check_counts(src, refs)
    ref_text = [read_scored(r) for r in refs]  # read before translating: a bad reference fails fast
    terms_from = term_source(glossary, constraints=False)  # a bad glossary too
    start = time.perf_counter()
    loaded, decode_cfg, device = load_for_decoding(checkpoint, base=base, overrides=overrides)
    decode_cfg = dataclasses.replace(decode_cfg, nbest=1)
    route = choose_route(loaded.cfg, loaded.vocab, languages or LanguageRequest(), where=str(checkpoint))
    check_tokenizer(tgt_lang := route.tgt_lang, where=f"{checkpoint} target language")  # before translating
    if terms_from is not None:
        check_terms(checkpoint, loaded, route, decode_cfg)
    hyp_path = out if out is not None else checkpoint.with_name(f"{checkpoint.stem}.{tag}.hyp")
    stats, read_stats = TranslateStats(), DecodeStats()
    hyps: list[str] = []
    src_lines = read_lines(src, replace_invalid=True, stats=read_stats)
    with atomic_open(hyp_path, "wb") as fh, progress(total=lines, desc="translating", unit=" lines") as bar:
        for best, *_ in translate_route(
            loaded, src_lines, decode_cfg, route, device=device, stats=stats, on_batch=bar.update, terms_from=terms_from
        ):
            hyps.append(best.text)
            fh.write(f"{best.text}\n".encode())
    stats.invalid_utf8 = read_stats.invalid_utf8_lines
    warn_repairs(stats, max_len=loaded.model.max_len)
    report_terms(stats)
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
        direction=direction,
    )
