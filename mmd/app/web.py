"""The moderators' pages: sign in, home, the review queue and its one-click labels, search, pictures.

A label is a vote in the moderators' log (`mmd.review.votes`): it joins the RKC database of the RGCL
model in service at once (`add_labels`), and trains from the next cycle once `review.require_agreement`
moderators agree (ingest passes the agreed labels on to training).
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mmd.app.auth import LOGIN_COOKIE, SESSION_COOKIE
from mmd.app.context import (auth_of, check_csrf, redirect, render, require_session, safe_next, session_of,
                             settings_of)
from mmd.app.files import NotServed, content_type, media_file
from mmd.app.forms import BadRequest, parse_form, read_body
from mmd.app.scoring import StoreUnavailable
from mmd.app.urls import path_for, route

FORM_BYTES = 64_000
STATES = ("open", "labelled", "skipped", "all")


def label_words(kind: str) -> tuple[str, str]:
    """What label 1 and label 0 mean for an item of this kind, in a moderator's words."""
    return ("harmful", "not harmful") if kind == "meme" else ("false", "true")


def register(app) -> None:
    @app.get(path_for("login"))
    async def login_page(request: Request, next: str = "/"):
        import secrets
        import time

        if session_of(request) is not None:
            return redirect(safe_next(next))
        nonce = secrets.token_urlsafe(18)
        response = render(request, "login.html", next=safe_next(next), login_csrf=nonce)
        response.set_cookie(LOGIN_COOKIE, auth_of(request).sign({"n": nonce, "exp": time.time() + 3600}),
                            httponly=True, samesite="lax", secure=auth_of(request).secure_cookies, path="/")
        return response

    @app.post(path_for("login"))
    async def login(request: Request):
        from mmd.app.auth import same

        auth = auth_of(request)
        form = parse_form(await read_body(request, FORM_BYTES), request.headers.get("content-type", ""))
        pre = auth.unsign(request.cookies.get(LOGIN_COOKIE)) or {}
        target = safe_next(form.get("next"))
        if not same(form.get("csrf"), pre.get("n")):
            return redirect(path_for("login", query={"next": target}), request,
                            "The sign-in form expired: please sign in again.", "bad")
        why = await run_in_threadpool(auth.check_password, form.get("user").strip(), form.get("password"))
        if why:
            return redirect(path_for("login", query={"next": target}), request, why.capitalize() + ".", "bad")
        cookie, _ = auth.session(form.get("user").strip())
        response = redirect(target)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=int(auth.session_s), httponly=True, samesite="lax",
                            secure=auth.secure_cookies, path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post(path_for("logout"))
    async def logout(request: Request):
        session = require_session(request)
        check_csrf(session, parse_form(await read_body(request, FORM_BYTES), request.headers.get("content-type", "")))
        response = redirect(path_for("login"))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get(path_for("home"))
    async def home(request: Request):
        from mmd.results import GateReport, ReviewReport

        session = require_session(request)
        settings = settings_of(request)
        at = settings.layout
        reports = sorted(p.relative_to(at.reports).as_posix() for p in at.reports.rglob("*")
                         if p.is_file() and p.suffix in (".html", ".png") and not p.name.startswith(".")
                         and p != at.cycle_report) if at.reports.is_dir() else []
        return render(request, "home.html", session=session, gate=GateReport.read(at), review=ReviewReport.read(at),
                      has_cycle_report=at.cycle_report.is_file(), reports=reports,
                      open_for_me=len(_view(settings, "open", session["u"])))

    @app.get(path_for("queue"))
    async def queue(request: Request, state: str = "open", page: int = 1):
        session = require_session(request)
        settings = settings_of(request)
        if state not in STATES:
            raise HTTPException(404)
        rows = await run_in_threadpool(_view, settings, state, session["u"])
        size = settings.params.app.page_size
        pages = max(1, -(-len(rows) // size))
        page = min(max(page, 1), pages)
        counts = {s: len(_view(settings, s, session["u"] if s == "open" else None)) for s in STATES}
        return render(request, "queue.html", session=session, rows=rows[(page - 1) * size: page * size], state=state,
                      page=page, pages=pages, counts=counts, label_words=label_words,
                      require=settings.params.review.require_agreement,
                      has_queue=settings.layout.review_queue.is_file())

    @app.post(route("label"))
    async def label(request: Request, item_id: str):
        from mmd.review.queue import QUEUE_SCHEMA
        from mmd.review.votes import record_vote
        from mmd.items import read_table

        session = require_session(request)
        form = parse_form(await read_body(request, FORM_BYTES), request.headers.get("content-type", ""))
        check_csrf(session, form)
        settings = settings_of(request)
        back = path_for("queue", query={"state": form.get("back") if form.get("back") in STATES else "open"})
        row = next((r for r in read_table(settings.layout.review_queue, QUEUE_SCHEMA).to_pylist() if r["id"] == item_id),
                   None)
        if row is None:
            raise HTTPException(404)
        action, user = form.get("action"), session["u"]
        if action == "skip":
            record_vote(settings.layout, item_id, "skip", user)
            return redirect(back, request, f"Skipped “{row['text'][:60]}”.")
        if action not in ("0", "1"):
            raise BadRequest("bad_action", "a label is 1, 0 or skip")
        value = int(action)
        record_vote(settings.layout, item_id, "label", user, value)
        message = await run_in_threadpool(_after_label, request.app.state.scoring, settings, row, value, user)
        return redirect(back, request, message)

    @app.get(path_for("search"))
    async def search(request: Request, q: str = "", k: int = 20):
        session = require_session(request)
        settings = settings_of(request)
        hits, error = [], None
        if q.strip():
            try:
                hits = await run_in_threadpool(_search, request.app.state.scoring, settings, q.strip(), min(max(k, 1), 100))
            except StoreUnavailable as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a store or encoder that cannot serve says why, on the page
                error = f"search failed: {exc}"
        return render(request, "search.html", session=session, q=q, hits=hits, error=error, label_words=label_words)

    @app.get(route("media"))
    async def media(request: Request, path: str):
        if session_of(request) is None:
            raise HTTPException(404)
        try:
            found = media_file(settings_of(request).data_dir, path)
        except NotServed:
            raise HTTPException(404) from None
        return FileResponse(found, media_type=content_type(found), headers={"Cache-Control": "private, max-age=3600"})


def _view(settings, state: str, user: str | None) -> list[dict]:
    from mmd.review.queue import queue_view

    return queue_view(settings, state, user)


def _after_label(scoring, settings, row: dict, value: int, user: str) -> str:
    """The label into the RKC database at once, and what it changed (the item's RKC score before and after)."""
    from mmd.models.rgcl.labels import add_labels
    from mmd.review.votes import read_votes, tally

    t = tally(read_votes(settings.layout.votes), settings.params.review.require_agreement).get(row["id"])
    words = label_words(row["kind"])[0 if value == 1 else 1]
    need = settings.params.review.require_agreement
    trains = ("It trains from the next cycle." if t and t.agreed and t.label == value else
              f"It trains once {need} moderators agree ({t.votes if t else 1} so far).")
    head = f"Labelled “{row['text'][:60]}” as {words}. {trains}"
    item = {"id": row["id"], "text": row["text"], "image_path": row.get("image_path")}
    pending = _pending_rkc(settings)
    waited = sum(1 for r in pending if r["id"] != row["id"])
    try:
        before = scoring.item_score("rgcl", item)
        added = scoring.exclusive(lambda: add_labels(settings, pending, by=f"app:{user}"))
        after = scoring.item_score("rgcl", item)
    except StoreUnavailable as exc:
        return f"{head} RKC not updated now: {exc}."
    except Exception as exc:  # noqa: BLE001 - no RGCL model yet, or one that does not fit: the vote stays
        return f"{head} RKC not updated: {exc}"
    if before is None or after is None:
        return f"{head} It joined the RKC database ({added['database']} entries); no RGCL champion serves yet."
    return (f"{head} RKC (rgcl v{after[0]}) score of this item: {before[1]:.3f} → {after[1]:.3f}; "
            f"the RKC database holds {added['database']} entries"
            + (f" ({waited} earlier label(s) that waited for the store joined too)." if waited else "."))


def _pending_rkc(settings) -> list[dict]:
    """Every queued item whose latest label vote the RKC labels file does not hold yet (this one, and any that
    waited while a cycle held the store), as `add_labels` rows."""
    from mmd.items import read_table
    from mmd.models.rgcl.predictor import LABELS_SCHEMA
    from mmd.review.queue import QUEUE_SCHEMA
    from mmd.review.votes import read_votes

    at = settings.layout
    latest = {v["item_id"]: int(v["label"]) for v in read_votes(at.votes) if v["action"] == "label"}
    have = {r["id"]: r["label"] for r in read_table(at.labels, LABELS_SCHEMA).to_pylist()}
    rows = []
    for q in read_table(at.review_queue, QUEUE_SCHEMA).to_pylist():
        if q["id"] in latest and have.get(q["id"]) != latest[q["id"]]:
            image = str(settings.data_dir / q["image_path"]) if q.get("image_path") else None
            rows.append({"id": q["id"], "text": q["text"], "image": image, "label": latest[q["id"]]})
    return rows


def _search(scoring, settings, q: str, k: int) -> list[dict]:
    from pathlib import Path

    from mmd.app.catalog import item_catalog
    from mmd.store import open_store

    vector = scoring.query_vectors([{"text": q, "image_path": None}], Path("/"))[0]

    def run():
        with open_store(settings) as store:
            return store.search(settings.params.index.items_collection, vector, k=k)

    catalog = item_catalog(settings)
    return [{**catalog[h.id], "similarity": h.score} for h in scoring.exclusive(run) if h.id in catalog]
