"""`nmt prepare`, `nmt train` and `nmt average`: each parses its options, calls one stage function
and renders the result; torch is imported inside the commands only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nmt.cli.app import app
from nmt.cli.options import ConfigArg, SetOption, guarded
from nmt.console import console

Force = Annotated[bool, typer.Option("--force", help="Rebuild even if inputs and config are unchanged.")]
Threads = Annotated[
    int, typer.Option("--threads", min=0, help="SentencePiece encoding threads (0: every core; same output).")
]
Json = Annotated[bool, typer.Option("--json", help="Write the manifest and timings as JSON to stdout.")]
ReplaceDataLink = Annotated[
    bool, typer.Option("--replace-data-link", help="Replace a <workdir>/data link nmt did not make (keeps its target).")
]
Restart = Annotated[bool, typer.Option("--restart", help="Ignore checkpoints/last.pt and start from scratch.")]
Init = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="Fine-tune this checkpoint (e.g. from nmt import): --set train.init_from=PATH; give it to prepare too.",
        show_default=False,
    ),
]
NewData = Annotated[
    bool, typer.Option("--new-data", help="Resume on prepared data other than the checkpoint's (same vocabulary).")
]
Devices = Annotated[
    int,
    typer.Option("--devices", min=1, help="Processes on this machine (one per GPU); >1 re-launches under torchrun."),
]
Checkpoints = Annotated[list[Path] | None, typer.Argument(help="Checkpoints to average.", show_default=False)]
AverageOut = Annotated[Path | None, typer.Option("-o", "--output", help="Where to write the average.")]
Last = Annotated[
    int | None,
    typer.Option(
        "--last",
        metavar="N",
        help="Average the newest N step_*.pt of the experiment dir given as the argument "
        "(output: checkpoints/averaged.pt).",
    ),
]


@app.command()
@guarded
def prepare(
    config: ConfigArg,
    set_: SetOption = None,
    force: Force = False,
    threads: Threads = 0,
    as_json: Json = False,
    replace_data_link: ReplaceDataLink = False,
    init: Init = None,
) -> None:
    """Train the SentencePiece vocabulary and binarize every split into the experiment dir.

    Streams: memory stays flat in the corpus size. A second run with unchanged inputs and
    config does nothing; [bold]--force[/bold] rebuilds.
    """
    from nmt.checkpoint import stored_config
    from nmt.config import load_config
    from nmt.data.prepare import prepare as run_prepare
    from nmt.data.summary import render_prepare

    overrides = [*(set_ or []), *([f"train.init_from={init}"] if init else [])]
    cfg = load_config(config, overrides=overrides, read_stored=stored_config)
    result = run_prepare(cfg, force=force, threads=threads or None, replace_data_link=replace_data_link)
    render_prepare(result, cfg, as_json=as_json)


@app.command()
@guarded
def train(
    config: ConfigArg,
    set_: SetOption = None,
    restart: Restart = False,
    new_data: NewData = False,
    devices: Devices = 1,
    init: Init = None,
) -> None:
    """Train (or resume) the experiment: token-budget batches, mixed precision, checkpoints.

    An experiment directory holding [bold]checkpoints/last.pt[/bold] is resumed. Ctrl-C or SIGTERM finishes the
    current step, writes a checkpoint and exits; run the same command to continue. Multi-GPU:
    [bold]torchrun --nproc_per_node=K -m nmt train CONFIG[/bold] (or [bold]--devices K[/bold]).
    """
    overrides = [*(set_ or []), *([f"train.init_from={init}"] if init else [])]
    if devices > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun: re-launch under it
        from nmt.train.launch import launch

        raise typer.Exit(launch(config, devices=devices, overrides=overrides, restart=restart, new_data=new_data))
    from nmt.checkpoint import stored_config
    from nmt.config import load_config
    from nmt.train.loop import train as run_train
    from nmt.train.run_log import summarize

    cfg = load_config(config, overrides=overrides, read_stored=stored_config)
    result = run_train(cfg, restart=restart, new_data=new_data)
    if os.environ.get("RANK", "0") == "0":
        summarize(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@guarded
def pretrain(config: ConfigArg, set_: SetOption = None, restart: Restart = False) -> None:
    """Denoising pretraining (BART's text infilling) on [bold]data.monolingual[/bold], prepared by `nmt prepare`.

    Runs in [bold]<workdir>/pretrain[/bold] (checkpoints, resume, Ctrl-C, curves as in `nmt train`), validated
    by the denoising loss on each file's held-out last lines. Then fine-tune: [bold]nmt prepare CONFIG --init
    W/pretrain/checkpoints/best.pt[/bold] and [bold]nmt train CONFIG --init[/bold] the same path.
    """
    from nmt.checkpoint import stored_config
    from nmt.config import load_config
    from nmt.train.loop import pretrain as run_pretrain
    from nmt.train.run_log import summarize

    cfg = load_config(config, overrides=list(set_ or []), read_stored=stored_config)
    result = run_pretrain(cfg, restart=restart)
    summarize(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@guarded
def average(checkpoints: Checkpoints = None, output: AverageOut = None, last: Last = None) -> None:
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
