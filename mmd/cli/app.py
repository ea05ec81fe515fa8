"""The `mmd` Typer app and what its commands share."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import typer

from mmd.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Keep multimodal misinformation and hateful-meme detectors fresh.")
ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to run against.")


@contextlib.contextmanager
def exits_on(*errors: type[BaseException], code: int = 1) -> Iterator[None]:
    """Expected failures (bad input, a missing stage output) print their message and exit with `code`."""
    from mmd.tables import err

    try:
        yield
    except errors as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(code) from None


def settings_of(params: Path) -> Settings:
    with exits_on(ConfigError, code=2):
        return load_settings(params)


def log_to_terminal():
    """Progress lines on stderr when it is a terminal."""
    import sys

    from mmd.tables import err

    return (lambda m: err.print(m)) if sys.stderr.isatty() else None
