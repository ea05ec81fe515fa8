"""What every route of the app shares: the signed-in moderator, CSRF checks, flash messages and rendering
pages (the app's templates under `mmd/templates/app/`, with the one stylesheet)."""

from __future__ import annotations

import json
from urllib.parse import quote

from mmd.app.auth import FLASH_COOKIE, SESSION_COOKIE, Auth, same
from mmd.app.forms import BadRequest, Form
from mmd.app.urls import path_for


class LoginRequired(Exception):
    """A page asked for without a session: the handler sends the browser to sign in."""

    def __init__(self, next_path: str):
        self.next_path = next_path


class Forbidden(Exception):
    """A signed-in request that is refused (a missing or wrong CSRF token)."""


def auth_of(request) -> Auth:
    return request.app.state.auth


def settings_of(request):
    return request.app.state.settings


def session_of(request) -> dict | None:
    return auth_of(request).session_user(request.cookies.get(SESSION_COOKIE))


def require_session(request) -> dict:
    """The moderator's session, or LoginRequired (pages send the browser to /login)."""
    session = session_of(request)
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return session


def api_caller(request) -> str | None:
    """Who calls the API: `api:<name>` for a bearer token, the moderator for a session cookie, else None."""
    caller = auth_of(request).token_user(request.headers.get("authorization"))
    if caller:
        return caller
    session = session_of(request)
    return session["u"] if session else None


def check_csrf(session: dict, form: Form) -> None:
    if not same(form.get("csrf"), session.get("csrf")):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")


def safe_next(path: str | None) -> str:
    """A local path to go back to after signing in (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or "\n" in path:
        return path_for("home")
    return path


def flash(response, request, text: str, kind: str = "ok") -> None:
    """A one-time message for the next page (signed, so nobody can plant one)."""
    import time

    value = auth_of(request).sign({"text": text[:1500], "kind": kind, "exp": time.time() + 120})
    response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="lax", secure=auth_of(request).secure_cookies,
                        path="/")


def redirect(to: str, request=None, message: str | None = None, kind: str = "ok"):
    from fastapi.responses import RedirectResponse

    response = RedirectResponse(to, status_code=303)
    if message and request is not None:
        flash(response, request, message, kind)
    return response


def render(request, template: str, status: int = 200, session: dict | None = None, **context):
    """An app page: the template with the moderator, their CSRF token, the flash message and the routes."""
    from fastapi.responses import HTMLResponse

    from mmd.pages import render as render_page

    session = session if session is not None else session_of(request)
    message = auth_of(request).unsign(request.cookies.get(FLASH_COOKIE))
    html = render_page(f"app/{template}", user=session["u"] if session else None,
                       csrf=session["csrf"] if session else "", flash=message, path_for=path_for,
                       request_path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status)
    if message is not None or FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def install_handlers(app) -> None:
    """How the app answers refusals: sign-in for pages, JSON for the API, a page for the rest."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(LoginRequired)
    async def _login(request, exc: LoginRequired):
        return redirect(path_for("login", query={"next": exc.next_path}))

    @app.exception_handler(Forbidden)
    async def _forbidden(request, exc: Forbidden):
        return render(request, "message.html", status=403, title="Refused", message=str(exc))

    @app.exception_handler(BadRequest)
    async def _bad(request, exc: BadRequest):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=exc.status)
        return render(request, "message.html", status=exc.status, title="Bad request", message=str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "http_" + str(exc.status_code), "detail": exc.detail},
                                status_code=exc.status_code, headers=getattr(exc, "headers", None))
        title = {404: "Not found", 405: "Not allowed"}.get(exc.status_code, "Error")
        return render(request, "message.html", status=exc.status_code, title=title,
                      message="There is nothing here." if exc.status_code == 404 else str(exc.detail))

    @app.middleware("http")
    async def _headers(request, call_next):
        response = await call_next(request)
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Content-Security-Policy", "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        h.setdefault("X-Frame-Options", "DENY")
        return response


def login_url(next_path: str) -> str:
    return path_for("login") + "?next=" + quote(next_path, safe="")


def dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
