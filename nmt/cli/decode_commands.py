"""`nmt translate` and `nmt evaluate`: each parses its options (the decode flags from one table,
`DECODE_FLAGS`), calls one stage function and renders the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import app
from nmt.cli.options import SAMPLING_FLAGS, SEARCH_FLAGS, DecodeSetOption, SetOption, guarded, with_decode_flags

Model = Annotated[
    Path, typer.Argument(help="Checkpoint (.pt) or `nmt export` directory; needs nothing else.", show_default=False)
]
Input = Annotated[
    Path | None,
    typer.Option("-i", "--input", help="Text to translate (plain or .gz); default stdin.", show_default=False),
]
Output = Annotated[
    Path | None, typer.Option("-o", "--output", help="Where to write; default stdout.", show_default=False)
]
Scores = Annotated[bool, typer.Option("--scores", help="Write 'score<TAB>translation' lines.")]
Confidence = Annotated[
    bool,
    typer.Option(
        "--confidence",
        help="Write each translation's confidence (its tokens' mean probability, 0-1) before it, after the score.",
    ),
]
MarkupFormat = Annotated[
    str,
    typer.Option(
        "--format", metavar="text|html", help="html: each line is an HTML fragment, translated with its markup kept."
    ),
]
GlossaryFile = Annotated[
    Path | None,
    typer.Option(
        "--glossary",
        metavar="TSV",
        help="'source term<TAB>target term' lines: where a source term occurs (any case, whole words), its "
        "target term must appear in the translation (constrained beam search).",
    ),
]
InlineConstraints = Annotated[
    bool,
    typer.Option(
        "--constraints",
        help="Input lines are 'text<TAB>term<TAB>...' (as fairseq-interactive --constraints): each "
        "translation must hold its line's target terms.",
    ),
]
Alignments = Annotated[
    bool,
    typer.Option(
        "--alignments",
        help="Write Pharaoh word links 'i-j ...' (source word i -> output word j, from cross-attention) before "
        "the translation: 'links<TAB>translation' (after the score with --scores).",
    ),
]
AttentionDir = Annotated[
    Path | None,
    typer.Option(
        "--attention-dir", help="Write an attention heatmap PNG per line (line_000001.png, ...) to this folder."
    ),
]
AttentionLines = Annotated[
    int | None,
    typer.Option("--attention-lines", min=1, metavar="N", help="Heatmaps for the first N lines (default 10)."),
]
Target = Annotated[
    Path | None,
    typer.Argument(
        help="Checkpoint (.pt), `nmt export` directory or experiment config (.yaml/.yml); omit with --hyp.",
        show_default=False,
    ),
]
Src = Annotated[
    Path | None,
    typer.Option("--src", help="Source text: translated with a checkpoint; with --hyp, measured for --by-length."),
]
Ref = Annotated[list[str] | None, typer.Option("--ref", help="Reference translations; repeat for several.")]
Hyp = Annotated[
    list[Path] | None,
    typer.Option("--hyp", help="Score these translations; no model needed. Repeat to compare systems."),
]
Label = Annotated[
    list[str] | None,
    typer.Option("--label", metavar="NAME", help="Name of each system in tables, JSON and --plot; one per --hyp."),
]
Split = Annotated[str | None, typer.Option("--split", help="Split of the config to score, e.g. test.")]
CheckpointName = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="NAME",
        help="With a config: checkpoints/NAME.pt instead of best.pt (e.g. last, averaged).",
    ),
]
HypOut = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Where to write the hypotheses; default next to the checkpoint as <stem>.<split or src>.hyp."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Write one JSON document to stdout.")]
FailUnder = Annotated[
    float | None,
    typer.Option(
        "--fail-under", metavar="BLEU", help="Exit with status 1 when BLEU is below this (any system, with several)."
    ),
]
ByLength = Annotated[
    bool, typer.Option("--by-length", help="Also BLEU and chrF per source-length bucket (needs the source).")
]
Buckets = Annotated[
    str | None,
    typer.Option(
        "--buckets", metavar="N,N,...", help="Bucket boundaries in source words; 10,20,30 (default) = 0-9 .. 30+."
    ),
]
Plot = Annotated[
    Path | None,
    typer.Option("--plot", help="Draw BLEU by source length of every system to this PNG (implies --by-length)."),
]
TgtLang = Annotated[
    str | None,
    typer.Option(
        "--tgt-lang",
        metavar="LANG",
        help="Language to translate into (needed when a multilingual model writes several); zh, ja, ko also pick "
        "sacreBLEU's tokenizer (as sacrebleu -l). Default: the model's target language.",
    ),
]
SrcLang = Annotated[
    str | None,
    typer.Option(
        "--src-lang",
        metavar="LANG",
        help="Language of the input (multilingual models): a direction the model was not trained on is "
        "zero-shot and says so.",
    ),
]
Direction = Annotated[
    str | None,
    typer.Option("--direction", metavar="SRC-TGT", help="With a multilingual config: score this direction only."),
]
Pivot = Annotated[
    str | None,
    typer.Option(
        "--pivot",
        metavar="LANG",
        help="Translate into LANG first, then from LANG into --tgt-lang, with the same multilingual model.",
    ),
]


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS, *SAMPLING_FLAGS)
def translate(
    checkpoint: Model,
    input: Input = None,
    output: Output = None,
    scores: Scores = False,
    alignments: Alignments = False,
    confidence: Confidence = False,
    markup: MarkupFormat = "text",
    glossary: GlossaryFile = None,
    constraints: InlineConstraints = False,
    attention_dir: AttentionDir = None,
    attention_lines: AttentionLines = None,
    tgt_lang: TgtLang = None,
    src_lang: SrcLang = None,
    pivot: Pivot = None,
    set_: DecodeSetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Translate text line by line: exactly one output line per input line (K with --nbest K).

    Decode settings default to those stored in the checkpoint; flags and [bold]--set decode.*[/bold] override them.
    """
    from nmt.decode.languages import LanguageRequest
    from nmt.decode.translate import translate as run_translate
    from nmt.errors import NmtError

    if attention_lines is not None and attention_dir is None:
        raise NmtError("--attention-lines needs --attention-dir DIR (where the heatmaps go)")
    if markup not in ("text", "html"):
        raise NmtError(f"--format {markup}: expected text or html")
    run_translate(
        checkpoint,
        input=input,
        output=output,
        overrides=decode_set,
        scores=scores,
        alignments=alignments,
        confidences=confidence,
        markup=markup,
        attention_dir=attention_dir,
        attention_lines=attention_lines or 10,
        languages=LanguageRequest(tgt_lang, src_lang, pivot),
        glossary=glossary,
        constraints=constraints,
    )


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS)
def evaluate(
    target: Target = None,
    src: Src = None,
    ref: Ref = None,
    hyp: Hyp = None,
    label: Label = None,
    split: Split = None,
    checkpoint: CheckpointName = None,
    out: HypOut = None,
    as_json: Json = False,
    fail_under: FailUnder = None,
    by_length: ByLength = False,
    buckets: Buckets = None,
    plot: Plot = None,
    tgt_lang: TgtLang = None,
    direction: Direction = None,
    glossary: GlossaryFile = None,
    set_: SetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Score with sacreBLEU (BLEU, chrF, chrF++, TER and their signatures).

    [bold]nmt evaluate CHECKPOINT --src F --ref F[/bold] translates and scores;
    [bold]nmt evaluate CONFIG --split test[/bold] uses the experiment's best checkpoint;
    [bold]nmt evaluate --hyp F [--hyp G ...] --ref F[/bold] scores existing translations
    (add [bold]--src F[/bold] for [bold]--by-length[/bold] / [bold]--plot[/bold]).
    """
    from nmt.evaluate.command import evaluate_command

    evaluate_command(
        target,
        src=src,
        refs=[Path(r) for r in ref or []],
        hyps=hyp or [],
        labels=label or [],
        split=split,
        checkpoint_name=checkpoint,
        out=out,
        overrides=decode_set,
        fail_under=fail_under,
        by_length=by_length,
        buckets=buckets,
        plot=plot,
        as_json=as_json,
        tgt_lang=tgt_lang,
        direction=direction,
        glossary=glossary,
    )


BtInput = Annotated[
    Path,
    typer.Option("-i", "--input", help="Monolingual text in the language the model reads (plain or .gz).",
                 show_default=False),
]  # fmt: skip
BtPrefix = Annotated[
    Path,
    typer.Option("-o", "--output", help="PREFIX: writes PREFIX.<written language> and PREFIX.<input language>.",
                 show_default=False),
]  # fmt: skip
BtMaxLen = Annotated[
    int | None,
    typer.Option("--max-len", min=1, help="Drop pairs with a side longer than this (default: data.max_len)."),
]
BtMaxRatio = Annotated[
    float | None,
    typer.Option(
        "--max-ratio", min=1.0, help="Drop pairs with a longer/shorter token ratio above this (data.max_ratio)."
    ),
]


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS, *SAMPLING_FLAGS)
def backtranslate(
    checkpoint: Model,
    input: BtInput,
    output: BtPrefix,
    tgt_lang: TgtLang = None,
    src_lang: SrcLang = None,
    max_len: BtMaxLen = None,
    max_ratio: BtMaxRatio = None,
    as_json: Json = False,
    set_: DecodeSetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Back-translate target-side monolingual text with a reverse model into synthetic training pairs.

    Writes PREFIX.<src> (the translations) and PREFIX.<tgt> (the input lines), line-aligned, for
    [bold]data.splits[/bold]; pairs that are empty, too long or too unbalanced are dropped and counted.
    [bold]--sampling --top-k 10[/bold] samples the sources instead of beam search.
    """
    from nmt.console import emit_json, table
    from nmt.decode.backtranslate import backtranslate as run_backtranslate
    from nmt.decode.languages import LanguageRequest

    r = run_backtranslate(
        checkpoint,
        input=input,
        prefix=output,
        overrides=decode_set,
        languages=LanguageRequest(tgt_lang, src_lang, None),
        max_len=max_len,
        max_ratio=max_ratio,
    )
    record = {"lines": r.lines, "written": r.written, "dropped": r.dropped, "invalid_utf8": r.invalid_utf8,
              "files": list(r.files), "seconds": round(r.elapsed_s, 2)}  # fmt: skip
    if as_json:
        emit_json(record)
        return
    rows = [("lines read", r.lines), ("pairs written", r.written)]
    rows += [(f"dropped: {reason.replace('_', ' ')}", n) for reason, n in r.dropped.items()]
    rows += [("invalid UTF-8 repaired", r.invalid_utf8)] if r.invalid_utf8 else []
    table(f"back-translation -> {r.files[0]}, {r.files[1]} ({r.elapsed_s:.1f} s)", ["", "count"], rows)
