"""The Typer application and its root options; the commands register on it (`nmt.cli.*_commands`)."""

from __future__ import annotations

from typing import Annotated

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
