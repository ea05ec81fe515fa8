"""The `mmd` Typer app and what its commands share."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import typer

if TYPE_CHECKING:
    from mmd.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Keep multimodal misinformation and hateful-meme detectors fresh.")
ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to run against.")


Errors = Callable[[], tuple[type[BaseException], ...]]


@contextlib.contextmanager
def exits_on(*errors: type[BaseException] | Errors, code: int = 1) -> Iterator[None]:
    """Expected failures (bad input, a missing stage output) print their message and exit with `code`.

    `errors` are exception classes or functions that give them, called only once something failed: the
    classes of the encoders, the store or training live beside torch and the engines, and a command that
    succeeds must not import all of those to be ready to name a failure it did not have."""
    try:
        yield
    except Exception as exc:
        expected = tuple(c for e in errors for c in ((e,) if isinstance(e, type) else e()))
        if not isinstance(exc, expected):
            raise
        from mmd.tables import err

        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(code) from None


def settings_of(params: Path) -> "Settings":
    # imported here: `mmd --help` needs no config models (about 0.2 s of pydantic classes)
    from mmd.config import ConfigError, load_settings

    with exits_on(ConfigError, code=2):
        return load_settings(params)


def log_to_terminal():
    """Progress lines on stderr when it is a terminal."""
    import sys

    from mmd.tables import err

    return (lambda m: err.print(m)) if sys.stderr.isatty() else None
