"""The Typer app and the ``command`` decorator every subcommand module registers itself with.

Library errors (BraintumorError) become one red line on stderr and exit code 2 (usage/config) or 1 (runtime);
anything else is a bug and keeps its traceback. TensorFlow is imported only inside commands, so --help is fast.
"""

from __future__ import annotations

import functools
import os

import typer
from rich.markup import escape

from ..errors import BraintumorError
from .common import err_console

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

app = typer.Typer(
    name="braintumor",
    help="Brain-tumour MRI classification experiments: explore data, train and cross-validate CNNs, "
    "explain them with Grad-CAM and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def command(name: str, **kwargs):
    """Register a subcommand whose BraintumorErrors reach the user as one clear line."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except BraintumorError as e:
                err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                err_console.print("[yellow]interrupted[/]: the run directory is marked interrupted; "
                                  "model.keras holds the best model so far")
                raise typer.Exit(130) from None

        app.command(name, **kwargs)(wrapper)
        return fn

    return deco


def main() -> None:
    app()
