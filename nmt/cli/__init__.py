"""The `nmt` command line: a thin Typer shell over the stage entry points.

Each command parses options, loads the config (with `--set` overrides), calls one stage
function and renders its result. Torch is imported lazily inside the commands so
`nmt --help` returns at once. Errors a user can cause are `NmtError`s, printed as one
paragraph with a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nmt import __version__
from nmt.cli.options import (
    SAMPLING_FLAGS,
    SEARCH_FLAGS,
    ConfigArg,
    DecodeSetOption,
    SetOption,
    guarded,
    with_decode_flags,
)
from nmt.console import console

app = typer.Typer(
    name="nmt",
    help="Neural machine translation: prepare data, train Transformers, translate and score.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """[bold]nmt[/bold]: prepare -> train -> evaluate / translate, driven by one YAML config."""


@app.command()
@guarded
def prepare(
    config: ConfigArg,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if inputs and config are unchanged.")] = False,
    threads: Annotated[
        int, typer.Option("--threads", min=0, help="SentencePiece encoding threads (0: every core; same output).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Write the manifest and timings as JSON to stdout.")] = False,
    replace_data_link: Annotated[
        bool,
        typer.Option("--replace-data-link", help="Replace a <workdir>/data link nmt did not make (keeps its target)."),
    ] = False,
) -> None:
    """Train the SentencePiece vocabulary and binarize every split into the experiment dir.

    Streams: memory stays flat in the corpus size. A second run with unchanged inputs and
    config does nothing; [bold]--force[/bold] rebuilds.
    """
    from nmt.config import load_config
    from nmt.console import emit_json, info, table, warn
    from nmt.data.prepare import prepare as run_prepare

    cfg = load_config(config, overrides=set_ or [])
    result = run_prepare(cfg, force=force, threads=threads or None, replace_data_link=replace_data_link)
    if as_json:
        emit_json({"up_to_date": result.up_to_date, "timings": result.timings, "manifest": result.manifest})
        return
    if result.up_to_date:
        info(f"[green]up to date[/green]: {cfg.workdir}/data matches the inputs and config (use --force to rebuild)")
        return
    m = result.manifest
    info(
        f"vocabulary: {'joint' if m['joint'] else 'separate'}, {m['src_vocab_size']:,} source / "
        f"{m['tgt_vocab_size']:,} target pieces"
    )
    if result.invalid_utf8_lines:
        warn(
            f"{result.invalid_utf8_lines:,} lines had invalid UTF-8, replaced by U+FFFD (data.on_invalid_utf8: replace)"
        )
    table(
        f"prepared {cfg.name} -> {cfg.workdir}/data",
        [
            "split",
            "lines",
            "kept",
            "empty",
            "too long",
            "ratio",
            "src tok",
            "tgt tok",
            "src len mean/p95",
            "tgt len mean/p95",
        ],
        [
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
            )
            for s in result.splits
        ],
    )
    t = result.timings
    info(
        f"{sum(t.values()):.1f} s: scan {t['scan']:.1f} s, SentencePiece training {t['spm_train']:.1f} s, "
        f"encode {t['encode']:.1f} s"
    )


@app.command()
@guarded
def train(
    config: ConfigArg,
    set_: SetOption = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore checkpoints/last.pt and start from scratch.")
    ] = False,
    new_data: Annotated[
        bool,
        typer.Option("--new-data", help="Resume on prepared data other than the checkpoint's (same vocabulary)."),
    ] = False,
    devices: Annotated[
        int,
        typer.Option(
            "--devices", min=1, help="Processes on this machine (one per GPU); >1 re-launches under torchrun."
        ),
    ] = 1,
) -> None:
    """Train (or resume) the experiment: token-budget batches, mixed precision, checkpoints.

    An experiment directory holding [bold]checkpoints/last.pt[/bold] is resumed. Ctrl-C or SIGTERM finishes the
    current step, writes a checkpoint and exits; run the same command to continue. Multi-GPU:
    [bold]torchrun --nproc_per_node=K -m nmt train CONFIG[/bold] (or [bold]--devices K[/bold]).
    """
    if devices > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun: re-launch under it
        from nmt.train.launch import launch

        raise typer.Exit(launch(config, devices=devices, overrides=set_ or [], restart=restart, new_data=new_data))
    from nmt.config import load_config
    from nmt.train.loop import train as run_train
    from nmt.train.report import summarize

    cfg = load_config(config, overrides=set_ or [])
    result = run_train(cfg, restart=restart, new_data=new_data)
    if os.environ.get("RANK", "0") == "0":
        summarize(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS, *SAMPLING_FLAGS)
def translate(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="Checkpoint (.pt) or `nmt export` directory; needs nothing else.", show_default=False),
    ],
    input: Annotated[
        Path | None,
        typer.Option("-i", "--input", help="Text to translate (plain or .gz); default stdin.", show_default=False),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write; default stdout.", show_default=False)
    ] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Write 'score<TAB>translation' lines.")] = False,
    attention_dir: Annotated[
        Path | None,
        typer.Option(
            "--attention-dir", help="Write an attention heatmap PNG per line (line_000001.png, ...) to this folder."
        ),
    ] = None,
    attention_lines: Annotated[
        int | None,
        typer.Option("--attention-lines", min=1, metavar="N", help="Heatmaps for the first N lines (default 10)."),
    ] = None,
    set_: DecodeSetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Translate text line by line: exactly one output line per input line (K with --nbest K).

    Decode settings default to those stored in the checkpoint; flags and [bold]--set decode.*[/bold] override them.
    """
    from nmt.decode.translate import translate as run_translate
    from nmt.errors import NmtError

    if attention_lines is not None and attention_dir is None:
        raise NmtError("--attention-lines needs --attention-dir DIR (where the heatmaps go)")
    run_translate(
        checkpoint,
        input=input,
        output=output,
        overrides=decode_set,
        scores=scores,
        attention_dir=attention_dir,
        attention_lines=attention_lines or 10,
    )


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS)
def serve(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoints (.pt) or `nmt export` directories, one per language pair.", show_default=False
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5000,
    char_limit: Annotated[
        int, typer.Option("--char-limit", help="Most characters per request (all of q); -1 = no limit.")
    ] = 5000,
    batch_limit: Annotated[int, typer.Option("--batch-limit", help="Most strings in a q list; -1 = no limit.")] = 128,
    line_limit: Annotated[
        int, typer.Option("--line-limit", help="Most lines per request (all of q, split at line breaks); -1 = none.")
    ] = 500,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0.0, help="How long a batch waits for more requests to join it.")
    ] = 5.0,
    queue_size: Annotated[
        int, typer.Option("--queue-size", min=1, help="Requests that may wait for the decoder; more get 429.")
    ] = 256,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            "--api-keys-file", help="Keys a request must carry as api_key, one a line (# comments).", show_default=False
        ),
    ] = None,
    req_limit: Annotated[
        int, typer.Option("--req-limit", help="Translate requests per minute per key (or client address); -1 = any.")
    ] = -1,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies whose X-Forwarded-For names the client (IPs, or *).",
            show_default=False,
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            min=1,
            help="Open connections; more get 503. Default: 1000, or what ulimit -n allows.",
            show_default=False,
        ),
    ] = None,
    read_timeout: Annotated[
        float,
        typer.Option("--read-timeout", min=0.01, help="Seconds a client has to send a request's head, and its body."),
    ] = 30.0,
    shutdown_timeout: Annotated[
        float, typer.Option("--shutdown-timeout", min=0.0, help="Seconds SIGTERM waits for requests in flight.")
    ] = 20.0,
    set_: DecodeSetOption = None,
    *,
    decode_set: list[str],
) -> None:
    """Serve models over LibreTranslate's HTTP API (needs [bold]pip install 'nmt\\[serve]'[/bold]).

    [bold]POST /translate[/bold] (q, source, target, format, alternatives, api_key), [bold]GET /languages[/bold],
    [bold]GET /health[/bold], [bold]GET /metrics[/bold]. Requests are decoded together in batches of up to
    --batch-tokens source tokens, long ones in slices; SIGTERM answers what was received (up to
    --shutdown-timeout), then exits 0; a second SIGTERM or Ctrl-C exits at once.
    """
    from nmt.serve import serve as run_serve

    run_serve(
        models,
        host=host,
        port=port,
        overrides=decode_set,
        char_limit=char_limit,
        batch_limit=batch_limit,
        line_limit=line_limit,
        max_queue=queue_size,
        max_wait_ms=max_wait_ms,
        batch_tokens=None,  # decode.batch_tokens of the models (--batch-tokens sets it for all)
        api_keys_file=api_keys_file,
        req_limit=req_limit,
        forwarded_allow_ips=forwarded_allow_ips,
        max_connections=max_connections,
        read_timeout_s=read_timeout,
        shutdown_timeout_s=shutdown_timeout,
    )


@app.command()
@guarded
@with_decode_flags(*SEARCH_FLAGS)
def evaluate(
    target: Annotated[
        Path | None,
        typer.Argument(
            help="Checkpoint (.pt), `nmt export` directory or experiment config (.yaml/.yml); omit with --hyp.",
            show_default=False,
        ),
    ] = None,
    src: Annotated[
        Path | None,
        typer.Option("--src", help="Source text: translated with a checkpoint; with --hyp, measured for --by-length."),
    ] = None,
    ref: Annotated[list[str] | None, typer.Option("--ref", help="Reference translations; repeat for several.")] = None,
    hyp: Annotated[
        list[Path] | None,
        typer.Option("--hyp", help="Score these translations; no model needed. Repeat to compare systems."),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="NAME", help="Name of each system in tables, JSON and --plot; one per --hyp."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of the config to score, e.g. test.")] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            metavar="NAME",
            help="With a config: checkpoints/NAME.pt instead of best.pt (e.g. last, averaged).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the hypotheses; default next to the checkpoint as <stem>.<split or src>.hyp."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Write one JSON document to stdout.")] = False,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under",
            metavar="BLEU",
            help="Exit with status 1 when BLEU is below this (any system, with several).",
        ),
    ] = None,
    by_length: Annotated[
        bool, typer.Option("--by-length", help="Also BLEU and chrF per source-length bucket (needs the source).")
    ] = False,
    buckets: Annotated[
        str | None,
        typer.Option(
            "--buckets", metavar="N,N,...", help="Bucket boundaries in source words; 10,20,30 (default) = 0-9 .. 30+."
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw BLEU by source length of every system to this PNG (implies --by-length)."),
    ] = None,
    tgt_lang: Annotated[
        str | None,
        typer.Option(
            "--tgt-lang",
            metavar="LANG",
            help="Language of the translations: zh, ja, ko pick sacreBLEU's tokenizer (as sacrebleu -l); "
            "default the checkpoint's data.tgt_lang.",
        ),
    ] = None,
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
    from nmt.evaluate.report import evaluate as run_evaluate
    from nmt.evaluate.report import length_boundaries
    from nmt.evaluate.results import draw_plot, gate, render

    if plot is not None:
        from nmt.plots import require_matplotlib

        require_matplotlib()  # before translating, not after
    reports = run_evaluate(
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
        boundaries=length_boundaries(buckets, enabled=by_length or plot is not None),
        tgt_lang=tgt_lang,
    )
    if plot is not None:
        draw_plot(reports, plot)
    render(reports, as_json=as_json, plot=plot)
    gate(reports)


@app.command()
@guarded
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) of a Transformer.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="The CTranslate2 model directory to write.", show_default=False),
    ] = None,
    quantization: Annotated[
        str,
        typer.Option(
            "--quantization", "-q", help="none | int8 | int8_float32 | int8_bfloat16 | bfloat16 | float16 (weights)."
        ),
    ] = "none",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export or package.")] = False,
    argos: Annotated[
        Path | None,
        typer.Option(
            "--argos", help="Write an Argos Translate package FILE.argosmodel instead of -o.", show_default=False
        ),
    ] = None,
    from_name: Annotated[
        str | None, typer.Option("--from-name", help="With --argos: source language name, e.g. German.")
    ] = None,
    to_name: Annotated[str | None, typer.Option("--to-name", help="With --argos: target language name.")] = None,
    sbd_model: Annotated[
        Path | None,
        typer.Option(
            "--sbd-model",
            help="With --argos: a MiniSBD model FILE.onnx to split sentences (default: each line one sentence).",
            show_default=False,
        ),
    ] = None,
    stanza_model: Annotated[
        Path | None,
        typer.Option(
            "--stanza-model", help="With --argos: a Stanza directory, for argostranslate <= 1.10.", show_default=False
        ),
    ] = None,
) -> None:
    """Export a checkpoint for CTranslate2 (needs [bold]pip install 'nmt\\[ct2]'[/bold]).

    The directory is self-contained like a checkpoint (weights, SentencePiece models, decode settings):
    [bold]nmt translate DIR[/bold] and [bold]nmt evaluate DIR --src F --ref F[/bold] then run on CTranslate2.
    [bold]--argos FILE.argosmodel --from-name German --to-name English[/bold] writes an Argos Translate package
    (for LibreTranslate) holding that directory instead; the language codes are the checkpoint's.
    """
    from nmt.errors import NmtError

    if output is not None and argos is None:
        if any(x is not None for x in (from_name, to_name, sbd_model, stanza_model)):
            raise NmtError(
                "--from-name, --to-name, --sbd-model and --stanza-model go with --argos FILE, not with -o DIR"
            )
        from nmt.export.ct2 import export_checkpoint

        r = export_checkpoint(checkpoint, output, quantization=quantization, force=force)
        console.print(
            f"exported {r.checkpoint} (step {r.step:,}) -> {r.out_dir} ({r.quantization}, "
            f"{r.size_bytes / 1e6:.1f} MB, {r.elapsed_s:.1f} s)"
        )
        return
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
    console.print(
        f"exported {a.checkpoint} (step {a.step:,}) -> {a.package} ({a.from_code} -> {a.to_code}, {a.quantization}, "
        f"{a.size_bytes / 1e6:.1f} MB, {a.elapsed_s:.1f} s)"
    )


@app.command()
@guarded
def average(
    checkpoints: Annotated[
        list[Path] | None, typer.Argument(help="Checkpoints to average.", show_default=False)
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write the average.")] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            metavar="N",
            help="Average the newest N step_*.pt of the experiment dir given as "
            "the argument (output: checkpoints/averaged.pt).",
        ),
    ] = None,
) -> None:
    """Average the parameters of several checkpoints (a standard last step in NMT).

    [bold]nmt average a.pt b.pt -o avg.pt[/bold], or [bold]nmt average --last 5 EXPDIR[/bold].
    """
    from nmt.checkpoint import save_checkpoint
    from nmt.errors import NmtError
    from nmt.train.saving import average_checkpoints, average_last

    paths = list(checkpoints or [])
    if last is not None:
        if len(paths) != 1:
            raise NmtError("--last N needs exactly one experiment directory argument")
        paths, output = average_last(paths[0], last, output)
    elif not paths or output is None:
        raise NmtError("give checkpoints and -o OUT, or --last N EXPDIR")
    else:
        save_checkpoint(output, average_checkpoints(paths))
    console.print(f"averaged {len(paths)} checkpoints -> {output}: " + ", ".join(p.name for p in paths))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="nmt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
