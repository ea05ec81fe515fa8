"""The app: `create_app(settings)` wires the routes, the accounts and the scoring service; `serve` runs it
under uvicorn (`mmd app`)."""

from __future__ import annotations

import logging

from mmd.config import Settings

log = logging.getLogger("mmd.app")


def create_app(settings: Settings, env: dict | None = None):
    """The FastAPI app for this project (accounts and tokens from `env`, the process's environment by default)."""
    from fastapi import FastAPI

    from mmd.app import api, manage, web
    from mmd.app.auth import Auth
    from mmd.app.context import install_handlers
    from mmd.app.scoring import ScoringService

    auth = Auth.from_env(settings.params.app, env)
    if not auth.users:
        log.warning("no moderator accounts: set $%s (mmd app hash-password)", settings.params.app.users_env)
    if auth.key_is_random:
        log.warning("$%s is not set: sessions are signed with a random key and end when the app stops",
                    settings.params.app.secret_env)
    app = FastAPI(title="mmd moderators", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.auth, app.state.scoring = settings, auth, ScoringService(settings)
    install_handlers(app)
    web.register(app)
    manage.register(app)
    api.register(app)
    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Run the app until Ctrl-C or SIGTERM (uvicorn stops cleanly on both)."""
    import uvicorn

    port = settings.params.app.port if port is None else port
    print(f"mmd app: http://{host}:{port}/  (links say {settings.params.app.base_url})", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
