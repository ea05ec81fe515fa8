"""The scoring API: `POST /api/score` (a bearer token or a moderator's session) and `GET /api/health`.

    curl -H "Authorization: Bearer $TOKEN" -F text="wake up sheeple" -F image=@meme.png http://127.0.0.1:8080/api/score
    curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
         -d '{"items": [{"text": "a claim"}, {"text": "a meme", "image_url": "https://example.org/m.png"}]}' \\
         http://127.0.0.1:8080/api/score

The answer: `models` (family -> the champion's version), `results` (per item, in order: each champion's
`score` = P(harmful / false) with its `version`, `variant` and `trained_at`; `has_image`; the nearest
labelled items with their similarity and label). Bad input is a 400 with `error` (a code: no_text,
image_too_large, not_an_image, bad_image, url_refused, url_failed, batch_too_large, bad_item, bad_json,
bad_content_type) and `detail` (the reason, for people); a request over `app.max_request_bytes` is a 413.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mmd.app.context import api_caller, settings_of
from mmd.app.forms import media_type, parse_form, parse_json, read_body
from mmd.app.urls import route


def register(app) -> None:
    @app.get(route("health"))
    async def health(request: Request):
        from mmd.app.scoring import cycle_running

        settings = settings_of(request)
        try:
            champions = {f: v.number for f, v in request.app.state.scoring.champions().items()}
        except Exception as exc:  # noqa: BLE001 - a damaged registry is reported, not raised
            return JSONResponse({"status": "degraded", "error": str(exc)}, status_code=503)
        return {"status": "ok", "champions": champions, "cycle_running": cycle_running(settings)}

    @app.post(route("score"))
    async def score(request: Request):
        from mmd.app.scoring import parse_inputs

        if api_caller(request) is None:
            return JSONResponse({"error": "unauthorized", "detail": "send `Authorization: Bearer <token>` "
                                 "($MMD_APP_TOKENS) or sign in"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        settings = settings_of(request)
        body = await read_body(request, settings.params.app.max_request_bytes)
        kind = media_type(request)
        if kind == "application/json":
            inputs = await run_in_threadpool(parse_inputs, settings, parse_json(body))
        else:
            form = parse_form(body, request.headers.get("content-type", ""))
            inputs = await run_in_threadpool(parse_inputs, settings, None, form)
        return await run_in_threadpool(request.app.state.scoring.score, inputs)
