"""The reports and the registry in the app: the cycle report, any report file (drift pages, validation,
figures), model cards, and the model history with promote and rollback recorded under the signed-in
moderator's name (`by="app:<name>"`, so `mmd models` shows who did it)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from mmd.app.context import check_csrf, redirect, render, require_session, settings_of
from mmd.app.files import SANDBOX, NotServed, content_type, safe_file
from mmd.app.forms import parse_form, read_body
from mmd.app.urls import path_for, route

FORM_BYTES = 64_000


NAV = (f'<nav class="app"><strong>mmd</strong> <a href="{path_for("home")}">Home</a> '
       f'<a href="{path_for("queue")}">Review queue</a> <a href="{path_for("cycle_report")}">Cycle report</a> '
       f'<a href="{path_for("models")}">Models</a></nav>')


def with_nav(html: str) -> str:
    """A page mmd wrote (the cycle report, a model card), with the app's links on top; the file is untouched."""
    return html.replace("<body>", "<body>" + NAV, 1) if "<body>" in html else NAV + html


def _file(path, **headers):
    headers = {"Content-Security-Policy": SANDBOX, "Cache-Control": "no-store", **headers}
    if path.name == "card.html":
        return HTMLResponse(with_nav(path.read_text(encoding="utf-8")), headers=headers)
    return FileResponse(path, media_type=content_type(path), headers=headers)


def _registry(settings):
    from mmd.registry import Registry

    return Registry(settings.layout.registry)


def register(app) -> None:
    @app.get(route("cycle_report"))
    async def cycle_report(request: Request):
        require_session(request)
        page = settings_of(request).layout.cycle_report
        if not page.is_file():
            return render(request, "message.html", status=404, title="No cycle report yet",
                          message="The moderators' report is written at the end of a cycle (make demo, or the "
                                  "nightly deployment).")
        html = page.read_text(encoding="utf-8")
        # the page links its drift pages relative to the reports folder: resolve them under /reports/file/
        base = f'<base href="{path_for("report_file", path="")}">'
        html = with_nav(html.replace("<head>", "<head>" + base, 1) if "<head>" in html else base + html)
        return HTMLResponse(html, headers={"Content-Security-Policy": SANDBOX, "Cache-Control": "no-store"})

    @app.get(route("report_file"))
    async def report_file(request: Request, path: str):
        require_session(request)
        try:
            return _file(safe_file(settings_of(request).layout.reports, path))
        except NotServed:
            raise HTTPException(404) from None

    @app.get(ROUTE_CARD)
    async def card(request: Request, family: str, version: int):
        from mmd.registry import RegistryError

        require_session(request)
        try:
            v = _registry(settings_of(request)).get(family, version)
            return _file(safe_file(v.path, "card.html"))
        except (RegistryError, NotServed):
            raise HTTPException(404) from None

    @app.get(route("models"))
    async def models(request: Request):
        from mmd.registry import RegistryError

        session = require_session(request)
        reg = _registry(settings_of(request))
        families = []
        for f in reg.families():
            try:
                champion = reg.champion(f)
                error = None
            except RegistryError as exc:
                champion, error = None, str(exc)
            families.append({"name": f, "champion": champion.number if champion else None, "error": error,
                             "versions": list(reversed(reg.versions(f)))})
        return render(request, "models.html", session=session, families=families,
                      history=list(reversed(reg.history())))

    @app.post(route("promote"))
    async def promote(request: Request, family: str):
        return await _move(request, family, "promote")

    @app.post(route("rollback"))
    async def rollback(request: Request, family: str):
        return await _move(request, family, "rollback")


ROUTE_CARD = "/models/{family}/v{version:int}/card"


async def _move(request: Request, family: str, how: str):
    from mmd.registry import RegistryError

    session = require_session(request)
    form = parse_form(await read_body(request, FORM_BYTES), request.headers.get("content-type", ""))
    check_csrf(session, form)
    reg, by = _registry(settings_of(request)), f"app:{session['u']}"
    reason = form.get("reason").strip()[:500]
    back = path_for("models")
    try:
        if family not in reg.families():
            raise HTTPException(404)
        if how == "promote":
            if not reason:
                return redirect(back, request, "Say why you promote it: the reason is kept in the history.", "bad")
            version = int(form.get("version"))
            v = reg.promote(family, version, reason, by=by)
            return redirect(back, request, f"{family}: v{v.number} is the champion (promoted by {by}).")
        to = int(form.get("to")) if form.get("to").strip() else None
        v = reg.rollback(family, to, reason or "rolled back in the app", by=by)
        return redirect(back, request, f"{family}: back to v{v.number} (rolled back by {by}).")
    except ValueError:
        return redirect(back, request, "The version must be a number.", "bad")
    except RegistryError as exc:
        return redirect(back, request, str(exc), "bad")
