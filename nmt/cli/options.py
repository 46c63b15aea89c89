"""The CLI's shared parts: error handling, `--set`, and the decode flags (one table for all commands)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nmt.console import console

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


def guarded(fn: F) -> F:
    """Turn NmtError into a one-paragraph message and its exit code; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rich.markup import escape

        from nmt.errors import NmtError

        try:
            return fn(*args, **kwargs)
        except NmtError as exc:  # escaped: "[plot]" in a message is text, not rich markup
            console.print(f"[bold red]error:[/bold red] {escape(exc.message)}", markup=True, highlight=False)
            if exc.hint:
                console.print(f"[dim]hint:[/dim] {escape(exc.hint)}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# The per-call decode flags of translate and evaluate, each standing for `--set decode.<name>=...`:
# one table, so a flag and the config key can never disagree, and the commands list them once.
_DEC = "Decoding"


def _flag(tp: Any, *decls: str, help: str, **kw: Any) -> Any:
    return Annotated[tp | None, typer.Option(*decls, help=help, rich_help_panel=_DEC, show_default=False, **kw)]


DECODE_FLAGS: dict[str, Any] = {
    "device": _flag(str, "--device", help="auto | cpu | cuda."),
    "precision": _flag(str, "--precision", help="auto | fp32 | bf16 | fp16 (auto: bf16 on CPUs with native bf16)."),
    "beam": _flag(int, "--beam", help="Beam size; 1 = greedy."),
    "nbest": _flag(int, "--nbest", help="Hypotheses per input line (<= beam; with sampling: samples)."),
    "length_penalty": _flag(str, "--length-penalty", help="average (score/|y|^alpha) | gnmt | none."),
    "alpha": _flag(float, "--alpha", help="Length-penalty strength (default 1.0 average, 0.6 gnmt)."),
    "max_len_a": _flag(float, "--max-len-a", help="Max output tokens = a * source tokens + b."),
    "max_len_b": _flag(int, "--max-len-b", help="The b of --max-len-a."),
    "min_len": _flag(int, "--min-len", help="Shortest output in tokens (EOS excluded)."),
    "batch_tokens": _flag(int, "--batch-tokens", help="Padded source tokens per batch."),
    "no_repeat_ngram": _flag(int, "--no-repeat-ngram", help="Forbid repeating n-grams of this size; 0 = off."),
    "sampling": _flag(bool, "--sampling/--no-sampling", help="Sample instead of beam search."),
    "temperature": _flag(float, "--temperature", help="Sampling temperature."),
    "top_k": _flag(int, "--top-k", help="Sample from the k most likely tokens; 0 = all."),
    "top_p": _flag(float, "--top-p", help="Nucleus sampling mass."),
}


SAMPLING_FLAGS = ("sampling", "temperature", "top_k", "top_p")
SEARCH_FLAGS = tuple(name for name in DECODE_FLAGS if name not in SAMPLING_FLAGS)


def with_decode_flags(*names: str) -> Callable[[F], F]:
    """Add the decode flags `names` (keys of DECODE_FLAGS) to a command.

    The command itself declares a keyword `decode_set: list[str]` instead: it receives the
    flags the user gave as `decode.KEY=VALUE` strings, after its own `--set` ones.
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "decode_set"]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DECODE_FLAGS[name])
            for name in names
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            flags = [
                f"decode.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in given.items() if v is not None
            ]
            return fn(*args, decode_set=[*(kwargs.get("set_") or []), *flags], **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return wrapper  # type: ignore[return-value]

    return decorate


DecodeSetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        rich_help_panel=_DEC,
        help="Override a decode setting, e.g. [bold]--set decode.beam=8[/bold]; repeatable.",
    ),
]
