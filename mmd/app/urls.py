"""The app's URLs, in one place: the pages, files and API every other part of mmd links to (e-mails, the
cycle report, Prefect artifacts). `url_for(settings, kind, **parts)` gives the absolute URL under
`app.base_url`; `path_for(kind, **parts)` the path alone (what the app's own pages use).

    home          /                                 the latest cycle, the queue's counts, links
    queue         /queue                            the review queue
    cycle_report  /reports/cycle                    the latest reports/cycle.html
    report_file   /reports/file/<path>              any file under the reports folder (drift pages, figures, ...)
    models        /models                           the registry: versions, champions, history; promote, rollback
    card          /models/<family>/v<version>/card  that version's model card
    search        /search?q=<text>                  the store's nearest items
    score         /api/score                        POST: each champion's score, the nearest labelled items
    health        /api/health                       GET: is it up, which champions serve
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

ROUTES: dict[str, str] = {
    "home": "/",
    "queue": "/queue",
    "cycle_report": "/reports/cycle",
    "report_file": "/reports/file/{path}",
    "models": "/models",
    "card": "/models/{family}/v{version}/card",
    "search": "/search",
    "score": "/api/score",
    "health": "/api/health",
    # the app's own, not part of the contract other parts link to
    "login": "/login",
    "logout": "/logout",
    "label": "/queue/{item_id}/label",
    "promote": "/models/{family}/promote",
    "rollback": "/models/{family}/rollback",
    "media": "/media/{path}",
}


def path_for(kind: str, query: dict | None = None, **parts) -> str:
    """The path of a route, its parts URL-quoted (a report file's path keeps its slashes)."""
    try:
        template = ROUTES[kind]
    except KeyError:
        raise ValueError(f"unknown route {kind!r}: one of {', '.join(ROUTES)}") from None
    quoted = {k: quote(str(v), safe="/" if k == "path" else "") for k, v in parts.items()}
    path = template.format(**quoted)
    query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    return path + ("?" + urlencode(query) if query else "")


def route(kind: str) -> str:
    """The route's template as the app registers it (a report file's or a picture's path spans folders)."""
    return ROUTES[kind].replace("{path}", "{path:path}")


def url_for(settings, kind: str, query: dict | None = None, **parts) -> str:
    """The absolute URL of a route under `app.base_url` (`settings`: mmd Settings, or the base URL itself)."""
    base = settings if isinstance(settings, str) else settings.params.app.base_url
    return base.rstrip("/") + path_for(kind, query, **parts)
