"""The `nmt` command line: a thin Typer shell over the stage entry points.

Each command parses options, loads the config (with `--set` overrides), calls one stage
function and renders its result. Torch is imported lazily inside the commands so
`nmt --help` returns at once. Errors a user can cause are `NmtError`s, printed as one
paragraph with a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nmt import __version__
from nmt.console import console

app = typer.Typer(
    name="nmt",
    help="Neural machine translation: prepare data, train Transformers, translate and score.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value, e.g. [bold]--set train.lr=3e-4[/bold]; repeatable.",
    ),
]
ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)]

# Per-call flags of translate/evaluate and the config keys they stand for: one table, so
# a flag and `--set decode.<key>=...` can never disagree.
DECODE_FLAGS: dict[str, str] = {
    "device": "decode.device",
    "precision": "decode.precision",
    "beam": "decode.beam",
    "nbest": "decode.nbest",
    "length_penalty": "decode.length_penalty",
    "alpha": "decode.alpha",
    "max_len_a": "decode.max_len_a",
    "max_len_b": "decode.max_len_b",
    "min_len": "decode.min_len",
    "batch_tokens": "decode.batch_tokens",
    "no_repeat_ngram": "decode.no_repeat_ngram",
    "sampling": "decode.sampling",
    "temperature": "decode.temperature",
    "top_k": "decode.top_k",
    "top_p": "decode.top_p",
}


def guarded(fn: F) -> F:
    """Turn NmtError into a one-paragraph message and its exit code; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from nmt.errors import NmtError

        try:
            return fn(*args, **kwargs)
        except NmtError as exc:
            console.print(f"[bold red]error:[/bold red] {exc.message}", markup=True, highlight=False)
            if exc.hint:
                console.print(f"[dim]hint:[/dim] {exc.hint}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


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


def decode_overrides(values: dict[str, Any]) -> list[str]:
    """`--set` strings for the per-call decode flags the user gave (None = not given)."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{DECODE_FLAGS[name]}={value}")
    return out


@app.command()
@guarded
def prepare(
    config: ConfigArg,
    set_: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if inputs and config are unchanged.")] = False,
) -> None:
    """Train the SentencePiece vocabulary and binarize every split into the experiment dir.

    A second run with unchanged inputs and config does nothing; [bold]--force[/bold] rebuilds.
    """
    from nmt.config import load_config
    from nmt.console import info, table, warn
    from nmt.data.prepare import prepare as run_prepare

    cfg = load_config(config, overrides=set_ or [])
    result = run_prepare(cfg, force=force)
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


def _pending(name: str) -> None:
    from nmt.errors import NmtError

    raise NmtError(f"`nmt {name}` is not implemented yet")


@app.command()
@guarded
def train(config: ConfigArg, set_: SetOption = None) -> None:
    """Train a model (not implemented yet)."""
    _pending("train")


@app.command()
@guarded
def translate(checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt).")]) -> None:
    """Translate text with a checkpoint (not implemented yet)."""
    _pending("translate")


@app.command()
@guarded
def evaluate(target: Annotated[Path, typer.Argument(help="Checkpoint or config.")]) -> None:
    """Score a checkpoint with sacreBLEU (not implemented yet)."""
    _pending("evaluate")


@app.command()
@guarded
def average(checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints.")]) -> None:
    """Average checkpoints (not implemented yet)."""
    _pending("average")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="nmt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
