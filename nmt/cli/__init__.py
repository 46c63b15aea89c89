"""The `nmt` command line: a thin Typer shell over the stage entry points.

Each command parses options, loads the config (with `--set` overrides) where it has one, calls
one stage function and renders its result: `train_commands` (prepare, train, average),
`decode_commands` (translate, evaluate), `deploy_commands` (import, export, serve), on the app of
`app.py`; `options.py` holds error handling, `--set` and the decode flags. Torch is imported
lazily inside the commands so `nmt --help` returns at once. Errors a user can cause are
`NmtError`s, printed as one paragraph with a non-zero exit code; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import sys

from nmt.cli import decode_commands, deploy_commands, train_commands  # noqa: F401  (they register the commands)
from nmt.cli.app import app

# as `nmt --help` lists them (import_: `nmt import`)
ORDER = (
    "import_", "prepare", "pretrain", "train", "average", "evaluate", "translate", "backtranslate", "export", "serve",
)  # fmt: skip
app.registered_commands.sort(key=lambda command: ORDER.index(command.callback.__name__))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="nmt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
