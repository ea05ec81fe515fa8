"""`mmd app`: the moderators' web app and scoring API; `mmd app hash-password`: a line for $MMD_APP_USERS."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmd.cli.app import ParamsOpt, app, settings_of

app_cmd = typer.Typer(help="The moderators' web app and the scoring API (FastAPI).", invoke_without_command=True)
app.add_typer(app_cmd, name="app")


@app_cmd.callback()
def serve(
    ctx: typer.Context,
    params: Path = ParamsOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on."),
    port: Optional[int] = typer.Option(None, "--port", help="The port (default: app.base_url's)."),
) -> None:
    """Serve the app until Ctrl-C: the review queue, reports, models, search, /api/score."""
    if ctx.invoked_subcommand is not None:
        return
    from mmd.app.auth import AuthConfigError
    from mmd.app.server import serve as run
    from mmd.cli.app import exits_on

    with exits_on(AuthConfigError, code=2):
        run(settings_of(params), host, port)


@app_cmd.command("hash-password")
def hash_password(
    user: str = typer.Argument(..., help="The moderator's name."),
    password: Optional[str] = typer.Option(None, "--password", help="Read from a prompt when not given "
                                           "(or from stdin when it is not a terminal)."),
) -> None:
    """Print `user:<hash>` for $MMD_APP_USERS (PBKDF2-SHA256 with a random salt)."""
    import sys

    from mmd.app.auth import hash_password as make

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True) if sys.stdin.isatty() \
            else sys.stdin.readline().rstrip("\n")
    if ":" in user or "," in user or not user.strip():
        raise typer.BadParameter("a user name has no ':' or ','")
    if not password:
        raise typer.BadParameter("the password is empty")
    print(f"{user}:{make(password)}")
