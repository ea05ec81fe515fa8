"""The app refuses what it should: no page or write without a session, no form without its CSRF token, no
API call without a token, no file outside its folder; bad input to /api/score is a 400 that says why.
These run the real app (FastAPI's TestClient) over a project with no model: nothing here needs one."""

from __future__ import annotations

import base64
import io
import os
import re
import time

import pytest
from PIL import Image

from mmd.app.auth import Auth, AuthConfigError, hash_password, parse_tokens, parse_users, verify_password

TOKEN = "ci-token-0123456789abcdef"


def _env(**extra):
    return {"MMD_APP_USERS": f"alice:{hash_password('alice-pw', iterations=1000)},"
                             f"bob:{hash_password('bob-pw', iterations=1000)}",
            "MMD_APP_TOKENS": f"ci:{TOKEN}", "MMD_APP_SECRET": "a test secret", **extra}


@pytest.fixture
def project(make_settings, tmp_path):
    settings = make_settings(ingest={"images": {"max_bytes": 5000}}, app={"max_request_bytes": 200_000})
    reports = settings.layout.reports
    (reports / "drift").mkdir(parents=True)
    (reports / "gate.json").write_text('{"families": {}}')
    (reports / "drift" / "cmc-data.html").write_text("<html><body>drift</body></html>")
    (reports / ".hidden.html").write_text("hidden")
    (reports / "notes.py").write_text("print('no')")
    (tmp_path / "outside.html").write_text("outside")
    os.symlink(tmp_path / "outside.html", reports / "link.html")
    os.symlink(tmp_path, reports / "up")
    pictures = settings.data_dir / "images" / "ab"
    pictures.mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(pictures / "abc.png")
    (settings.data_dir / "validated").mkdir(parents=True)
    (settings.data_dir / "validated" / "items.png").write_bytes((pictures / "abc.png").read_bytes())
    return settings


@pytest.fixture
def client(project):
    from fastapi.testclient import TestClient

    from mmd.app.server import create_app

    return TestClient(create_app(project, _env()), base_url="http://127.0.0.1:8080", follow_redirects=False)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(client, user="alice", password="alice-pw", next="/"):
    page = client.get("/login")
    return client.post("/login", data={"user": user, "password": password, "csrf": _csrf(page.text), "next": next})


def test_passwords_hash_and_verify_and_bad_account_lines_are_refused():
    h = hash_password("s3cret", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$") and verify_password("s3cret", h) and not verify_password("S3cret", h)
    assert hash_password("s3cret", iterations=1000) != h  # a fresh salt each time
    assert not verify_password("s3cret", "md5$1$x$y") and not verify_password("s3cret", "garbage")
    assert set(parse_users(f"alice:{h}, bob:{h}\ncarol:{h}")) == {"alice", "bob", "carol"}
    with pytest.raises(AuthConfigError, match="user 'alice' is not a `mmd app hash-password` hash"):
        parse_users("alice:plaintext")
    with pytest.raises(AuthConfigError, match="entry 1 is not name:value"):
        parse_users("alice")
    with pytest.raises(AuthConfigError, match="shorter than 16") as err:
        parse_tokens("ci:short")
    assert "short" not in str(err.value).replace("shorter", "")  # the message never quotes a secret


def test_sessions_are_signed_expire_and_end_with_the_account(project):
    auth = Auth.from_env(project.params.app, _env())
    cookie, payload = auth.session("alice")
    assert auth.session_user(cookie)["u"] == "alice"
    body, mac = cookie.split(".")
    forged = base64.urlsafe_b64encode(b'{"u":"bob","exp":9999999999,"csrf":"x"}').decode().rstrip("=")
    assert auth.session_user(f"{forged}.{mac}") is None
    assert auth.session_user(auth.sign({"u": "alice", "exp": time.time() - 1, "csrf": "x"})) is None
    other = Auth.from_env(project.params.app, _env(MMD_APP_SECRET="another key"))
    assert other.session_user(cookie) is None
    gone = Auth.from_env(project.params.app, {**_env(), "MMD_APP_USERS": f"bob:{hash_password('b', iterations=1000)}"})
    gone.key = auth.key
    assert gone.session_user(cookie) is None  # alice's account was removed: her session ends
    assert auth.token_user(f"Bearer {TOKEN}") == "api:ci" and auth.token_user("Bearer nope") is None


def test_pages_and_writes_need_a_session_and_forms_their_csrf_token(client):
    for path in ("/", "/queue", "/models", "/reports/cycle", "/reports/file/gate.json", "/search?q=x",
                 "/models/cmc/v1/card"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    for path in ("/queue/item1/label", "/models/cmc/promote", "/models/cmc/rollback", "/logout"):
        r = client.post(path, data={"action": "1", "version": "1", "reason": "x"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    assert client.get("/media/images/ab/abc.png").status_code == 404  # pictures too

    r = sign_in(client, next="/queue")
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    page = client.get("/queue")
    assert page.status_code == 200 and "signed in as <strong>alice</strong>" in page.text
    for data in ({"action": "1"}, {"action": "1", "csrf": "wrong"}):
        r = client.post("/queue/item1/label", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
        r = client.post("/models/cmc/rollback", data={**data, "reason": "x"})
        assert r.status_code == 403
    assert not (client.app.state.settings.layout.votes).exists()  # nothing was written
    # with the token: an item that is not in the queue is a 404, not a vote
    assert client.post("/queue/item1/label", data={"action": "1", "csrf": _csrf(page.text)}).status_code == 404
    assert client.post("/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    assert client.get("/queue").status_code == 303


def test_sign_in_refuses_wrong_passwords_pauses_after_five_and_never_redirects_away(client):
    r = sign_in(client, password="nope")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "Unknown user or wrong password" in client.get(r.headers["location"]).text
    assert sign_in(client, user="mallory", password="x").headers["location"].startswith("/login")
    page = client.get("/login")
    no_token = client.post("/login", data={"user": "alice", "password": "alice-pw", "csrf": "forged"})
    assert no_token.headers["location"].startswith("/login") and "mmd_session" not in no_token.cookies
    for _ in range(5):
        sign_in(client, user="bob", password="wrong")
    locked = sign_in(client, user="bob", password="wrong")
    assert "Too many failed sign-ins" in client.get(locked.headers["location"]).text
    assert sign_in(client, user="bob", password="bob-pw").headers["location"].startswith("/login")  # paused
    assert page.status_code == 200
    assert sign_in(client, next="//evil.example/x").headers["location"] == "/"
    assert client.get("/login?next=/models").headers["location"] == "/models"  # signed in already
    client.cookies.clear()
    assert sign_in(client, next="https://evil.example/").headers["location"] == "/"


@pytest.mark.parametrize("path", [
    "../params.yaml", "%2e%2e/params.yaml", "..%2Fparams.yaml", "drift/../../params.yaml", "/etc/passwd",
    "%2Fetc%2Fpasswd", "link.html", "up/outside.html", ".hidden.html", "notes.py", "drift", "drift/", "missing.html",
    "drift/cmc-data.html%00.png", "drift\\cmc-data.html"])
def test_report_files_never_leave_the_reports_folder(client, path):
    sign_in(client)
    r = client.get(f"/reports/file/{path}")
    assert r.status_code == 404, (path, r.status_code)
    assert "outside" not in r.text and "root:" not in r.text


def test_report_files_and_pictures_that_are_there_are_served_sandboxed(client):
    sign_in(client)
    r = client.get("/reports/file/drift/cmc-data.html")
    assert r.status_code == 200 and r.text.startswith("<html>") and "sandbox" in r.headers["content-security-policy"]
    assert client.get("/reports/file/gate.json").headers["content-type"].startswith("application/json")
    r = client.get("/media/images/ab/abc.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    for path in ("validated/items.png", "images/../validated/items.png", "images/ab/../../validated/items.png",
                 "images/ab", "params.yaml"):
        assert client.get(f"/media/{path}").status_code == 404, path
    assert client.get("/reports/cycle").status_code == 404  # no cycle has run: said, not a traceback


def _png(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "blue").save(buf, "PNG")
    return buf.getvalue()


def test_the_scoring_api_needs_a_token_and_says_what_is_wrong_with_the_input(client):
    assert client.post("/api/score", json={"text": "x"}).status_code == 401
    assert client.post("/api/score", json={"text": "x"}, headers={"Authorization": "Bearer wrong-token-123456"}
                       ).status_code == 401
    h = {"Authorization": f"Bearer {TOKEN}"}

    def error(headers=None, **kw):
        r = client.post("/api/score", headers={**h, **(headers or {})}, **kw)
        return r.status_code, r.json().get("error"), r.json().get("detail", "")

    assert error(json={"text": "  "})[:2] == (400, "no_text")
    assert error(json={"image_base64": base64.b64encode(_png()).decode()})[:2] == (400, "no_text")
    assert error(data={"text": ""}, files={"image": ("m.png", _png(), "image/png")})[:2] == (400, "no_text")
    assert error(data={"text": "a meme"}, files={"image": ("m.png", b"hello, not a picture", "image/png")})[:2] == (
        400, "not_an_image")
    status, code, detail = error(data={"text": "a meme"}, files={"image": ("big.png", _png((300, 300)) + b"0" * 6000,
                                                                           "image/png")})
    assert (status, code) == (400, "image_too_large") and "5000-byte cap" in detail
    assert error(json={"text": "x", "image_url": "file:///etc/passwd"})[:2] == (400, "url_refused")
    status, code, detail = error(json={"text": "x", "image_url": "http://127.0.0.1:9/m.png"})
    assert (status, code) == (400, "url_refused") and "non-public address" in detail
    assert error(json={"text": "x", "image_url": "http://169.254.169.254/latest"})[:2] == (400, "url_refused")
    assert error(json={"items": [{"text": "x"}] * 65})[:2] == (400, "batch_too_large")
    assert error(json={"items": [{"text": "x"}, {"text": ""}]}) == (400, "no_text", "item 1: no text: every item "
                                                                                   "needs a non-empty `text` (or a "
                                                                                   "picture whose text OCR reads)")
    assert error(content=b"{not json", headers={"Content-Type": "application/json"})[:2] == (400, "bad_json")
    assert error(content=b"x" * 300_000, headers={"Content-Type": "application/json"})[:2] == (
        413, "request_too_large")
    # good input and no model yet: an answer that says so, not an error
    r = client.post("/api/score", headers=h, json={"text": "wake up sheeple"})
    assert r.status_code == 200 and r.json()["models"] == {} and "no champion" in r.json()["note"]
    # a picture sent alone is scored on the words OCR reads in it (as ingest reads a meme without its caption)
    from tests.test_ocr import worded

    picture = worded(["WAKE UP SHEEPLE"], size=(300, 90))
    r = client.post("/api/score", headers=h, files={"image": ("m.png", picture, "image/png")})
    (result,) = r.json()["results"]
    assert r.status_code == 200 and result["text_source"] == "ocr" and "SHEEPLE" in result["text"]
    r = client.post("/api/score", headers=h, json={"items": [{"text": "its own words", "image_base64":
                                                              base64.b64encode(picture).decode()}]})
    assert r.json()["results"][0]["text_source"] == "request" and r.json()["results"][0]["text"] == "its own words"
    assert client.get("/api/health").json()["status"] == "ok"


def test_urls_follow_the_contract(project):
    from mmd.app.urls import path_for, url_for

    assert url_for(project, "home") == "http://127.0.0.1:8080/"
    assert url_for(project, "card", family="cmc", version=3) == "http://127.0.0.1:8080/models/cmc/v3/card"
    assert url_for(project, "report_file", path="drift/cmc data.html") == \
        "http://127.0.0.1:8080/reports/file/drift/cmc%20data.html"
    assert url_for("https://mod.example.org/", "search", query={"q": "a b&c"}) == \
        "https://mod.example.org/search?q=a+b%26c"
    assert [path_for(k) for k in ("queue", "cycle_report", "models", "score", "health")] == [
        "/queue", "/reports/cycle", "/models", "/api/score", "/api/health"]
    with pytest.raises(ValueError, match="unknown route"):
        path_for("nowhere")


def test_hash_password_prints_a_line_for_the_environment():
    from typer.testing import CliRunner

    from mmd.cli import app

    out = CliRunner().invoke(app, ["app", "hash-password", "alice", "--password", "pw"])
    assert out.exit_code == 0
    user, encoded = out.stdout.strip().split(":", 1)
    assert user == "alice" and verify_password("pw", encoded) and parse_users(out.stdout.strip())
