"""The HTTP layer and the Google Fact Check Tools `claims:search` source, against a real
local HTTP server that serves a recorded response page (../shared/datasets) and a small
constructed second page.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest

from mmd.config import HttpConfig
from mmd.http import FetchError, fetch
from mmd.ingest import IngestResult, SourceReport, run_ingest

API_KEY = "AIzaTESTkey-do-not-leak-0123456789"
KEY_ENV = "MMD_TEST_FACTCHECK_KEY"
PAGE_PATH = "/v1alpha1/claims:search"
FAST = HttpConfig(timeout_s=2.0, retries=2, backoff_s=0.0)

PAGE_2 = {
    "claims": [
        {
            "text": "Video shows a dam bursting in Assam this week",
            "claimant": "Social media users",
            "claimDate": "2022-05-01T00:00:00Z",
            "claimReview": [{
                "publisher": {"name": "Example Check", "site": "check.example.org"},
                "url": "https://check.example.org/dam-burst",
                "title": "Old dam video",
                "reviewDate": "2022-05-10T00:00:00Z",
                "textualRating": "MOSTLY TRUE",
                "languageCode": "en",
            }],
        },
        {
            "text": "Floods were caused by a cloud-seeding experiment",
            "claimReview": [{
                "publisher": {"site": "check.example.org"},
                "url": "https://check.example.org/cloud-seeding",
                "reviewDate": "2022-05-09T00:00:00Z",
                "textualRating": "Pants on Fire!",
                "languageCode": "en",
            }],
        },
        {
            "text": "The river rose ten metres overnight",
            "claimReview": [{
                "publisher": {"name": "Example Check"},
                "url": "https://check.example.org/river",
                "reviewDate": "2022-05-08T00:00:00Z",
                "textualRating": "Needs context,  sort of.",
                "languageCode": "en",
            }],
        },
    ]
}


# --------------------------------------------------------------------------- a local server
@dataclass
class Feed:
    url: str  # the endpoint
    base: str  # scheme://host:port
    requests: list[dict[str, Any]] = field(default_factory=list)  # {"path", "query", "raw_path"}

    def queries(self) -> list[dict[str, str]]:
        return [r["query"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    feed: Feed
    respond: Callable[["_Handler", dict[str, str]], None]

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.feed.requests.append({"path": parts.path, "query": query, "raw_path": self.path})
        try:
            self.respond(query)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def reply(self, status: int, body: bytes, ctype: str = "application/json; charset=UTF-8",
              headers: dict[str, str] | None = None, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serve():
    """serve(respond) -> Feed: a ThreadingHTTPServer on 127.0.0.1 calling respond(handler, query)."""
    servers: list[ThreadingHTTPServer] = []

    def start(respond: Callable[[_Handler, dict[str, str]], None]) -> Feed:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        feed = Feed(url=base + PAGE_PATH, base=base)
        httpd.RequestHandlerClass = type("H", (_Handler,), {"feed": feed, "respond": respond})
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return feed

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def page_1(shared: Path) -> bytes:
    return (shared / "claimreview" / "google_factcheck_claims_search.json").read_bytes()


@pytest.fixture
def recorded(serve, page_1) -> Feed:
    """Page 1 is the real recorded response; pageToken=CAo gives the constructed page 2."""

    def respond(h: _Handler, q: dict[str, str]) -> None:
        if q.get("key") != API_KEY:
            h.reply(403, b'{"error": {"code": 403, "message": "The caller does not have permission"}}')
        elif q.get("pageToken") == "CAo":
            h.reply(200, json.dumps(PAGE_2).encode())
        elif "pageToken" in q:
            h.reply(400, b'{"error": {"code": 400, "message": "Invalid page token"}}')
        else:
            h.reply(200, page_1)

    return serve(respond)


def api_source(endpoint: str, **over: Any) -> dict:
    return {
        "name": "gfc", "type": "factcheck_api", "endpoint": endpoint, "query": "flood",
        "publisher": "newsmobile.in", "language": "en", "max_age_days": 30, "page_size": 10,
        "api_key_env": KEY_ENV, **over,
    }


@pytest.fixture
def settings_for(make_settings, monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)

    def make(endpoint: str, **over: Any):
        return make_settings(sources=[api_source(endpoint, **over)],
                             ingest={"http": {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.0}})

    return make


def ingest(settings) -> tuple[IngestResult, SourceReport]:
    result = run_ingest(settings, show_progress=False)
    (rep,) = result.sources
    assert rep.seen == rep.accepted + rep.quarantined + rep.duplicates + rep.skipped
    assert result.to_dict()["reconciled"]
    return result, rep


def watermark(settings) -> dict:
    return json.loads((settings.data_dir / "state" / "watermarks.json").read_text())["gfc"]


def assert_key_nowhere(settings) -> None:
    """The API key is in no record, report, state or item the run wrote."""
    written = [p for root in (settings.data_dir, settings.reports_dir) if root.exists() for p in root.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert API_KEY.encode() not in path.read_bytes(), path
    for table in ("quarantine", "duplicates", "items"):
        path = settings.data_dir / "ingested" / f"{table}.parquet"
        if path.exists():  # parquet may compress: look at the values too
            assert API_KEY not in json.dumps(pq.read_table(path).to_pylist(), default=str)


# --------------------------------------------------------------------------- claims:search, recorded pages
def test_two_pages_become_items_with_filters_and_token(settings_for, recorded, page_1):
    settings = settings_for(recorded.url)
    result, rep = ingest(settings)

    # the server saw both pages, with every filter and the key, and page 2 by its token
    assert [r["path"] for r in recorded.requests] == [PAGE_PATH, PAGE_PATH]
    first, second = recorded.queries()
    expected = {"query": "flood", "reviewPublisherSiteFilter": "newsmobile.in", "languageCode": "en",
                "pageSize": "10", "maxAgeDays": "30", "key": API_KEY}
    assert first == expected
    assert second == expected | {"pageToken": "CAo"}

    claims_1 = json.loads(page_1)["claims"]
    assert len(claims_1) == 10
    items = pq.read_table(result.items_path).to_pylist()
    assert (rep.seen, rep.accepted, rep.quarantined) == (13, 13, 0)
    assert sorted(i["text"] for i in items) == sorted([c["text"].strip() for c in claims_1] + [c["text"] for c in PAGE_2["claims"]])
    assert rep.counters["pages"] == 2
    for i in items:
        assert i["source"] == "gfc" and i["source_family"] == "factcheck_api" and i["kind"] == "fact_check"
        assert i["url"].startswith("https://") and i["published_at"]

    # mixed-case wording normalises through the params table; unknown wording is counted, not guessed
    by_url = {i["url"]: i for i in items}
    originals = {c["claimReview"][0]["textualRating"] for c in claims_1}
    assert {"False", "false", "FALSE", "Misleading", "False Context"} <= originals
    for c in claims_1:
        assert by_url[c["claimReview"][0]["url"]]["label"] == 1
        assert by_url[c["claimReview"][0]["url"]]["label_original"] == c["claimReview"][0]["textualRating"]
    assert by_url["https://check.example.org/dam-burst"]["label"] == 0  # MOSTLY TRUE
    assert by_url["https://check.example.org/cloud-seeding"]["label"] == 1  # Pants on Fire!
    unknown = by_url["https://check.example.org/river"]
    assert unknown["label"] is None and unknown["label_original"] == "Needs context,  sort of."
    assert dict(rep.unknown_ratings) == {"needs context, sort of": 1}
    report = json.loads((settings.reports_dir / "ingest.json").read_text())
    assert report["sources"][0]["unknown_ratings"] == {"needs context, sort of": 1}

    # the watermark: the newest reviewDate, and no page left to read
    state = watermark(settings)
    assert state["max_review_date"] == "2022-07-11T00:00:00Z"
    assert state["next_page_token"] is None
    assert_key_nowhere(settings)


def test_max_pages_one_records_the_next_page_token(settings_for, recorded):
    settings = settings_for(recorded.url, max_pages=1)
    result, rep = ingest(settings)
    assert len(recorded.requests) == 1 and "pageToken" not in recorded.queries()[0]
    assert rep.accepted == 10 and rep.counters["pages"] == 1
    state = watermark(settings)
    assert state["next_page_token"] == "CAo"
    assert_key_nowhere(settings)

    # page 2 was never read: the watermark may not have moved past it, so a later run
    # with room for more pages still gets page 2's (older) reviews
    settings = settings_for(recorded.url, max_pages=5)
    result, rep = ingest(settings)
    assert recorded.queries()[-1].get("pageToken") == "CAo"
    assert rep.accepted == 3, rep.to_dict()
    assert rep.duplicates == 10
    assert result.total_items == 13
    assert watermark(settings)["max_review_date"] == "2022-07-11T00:00:00Z"


def test_second_run_with_nothing_new_adds_nothing(settings_for, recorded):
    settings = settings_for(recorded.url)
    first, _ = ingest(settings)
    assert first.total_items == 13
    items_before = pq.read_table(first.items_path).to_pylist()

    second, rep = ingest(settings)
    assert rep.accepted == 0 and rep.quarantined == 0
    assert second.total_items == 13
    assert pq.read_table(second.items_path).to_pylist() == items_before
    # reviews older than the watermark are passed over; the newest one is a known duplicate
    assert rep.counters["older_than_watermark"] == 12
    assert rep.duplicates == 1 and rep.counters["duplicate_id"] == 1
    assert watermark(settings)["max_review_date"] == "2022-07-11T00:00:00Z"


def test_api_key_never_reaches_records_or_reports(settings_for, serve):
    """Failures of every sort, some of which echo the request URL back: the key stays out."""
    calls = {"n": 0}

    def respond(h: _Handler, q: dict[str, str]) -> None:
        calls["n"] += 1
        # an error page that echoes what was asked for, key and all (proxies and portals do)
        h.reply(200, f"<html><body>No route for {h.path}</body></html>".encode(), "text/html")

    feed = serve(respond)
    settings = settings_for(feed.url)
    _, rep = ingest(settings)
    assert rep.reasons["not_json"] == 1
    assert feed.queries()[0]["key"] == API_KEY  # the server did get it
    rows = pq.read_table(settings.data_dir / "ingested" / "quarantine.parquet").to_pylist()
    assert "No route for" in rows[0]["raw"]
    assert_key_nowhere(settings)


def test_wrong_key_is_a_clear_quarantine(settings_for, recorded, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "not-the-right-key")  # after settings_for's own setenv
    settings = settings_for(recorded.url)
    _, rep = ingest(settings)
    assert rep.reasons == {"fetch_http_403": 1}
    assert rep.accepted == 0 and rep.error is None
    assert "max_review_date" not in watermark(settings)


def test_429_then_success_through_the_source(settings_for, serve, page_1):
    seen = {"n": 0}

    def respond(h: _Handler, q: dict[str, str]) -> None:
        seen["n"] += 1
        if seen["n"] == 1:
            h.reply(429, b'{"error": {"code": 429, "message": "Quota exceeded"}}', headers={"Retry-After": "0"})
        else:
            h.reply(200, page_1 if "pageToken" not in q else json.dumps(PAGE_2).encode())

    feed = serve(respond)
    _, rep = ingest(settings_for(feed.url))
    assert rep.accepted == 13 and rep.quarantined == 0
    assert len(feed.requests) == 3  # 429, page 1 again, page 2


# --------------------------------------------------------------------------- the HTTP layer
def test_fetch_retries_429_then_succeeds(serve):
    seen = {"n": 0}

    def respond(h: _Handler, q: dict[str, str]) -> None:
        seen["n"] += 1
        if seen["n"] <= 2:
            h.reply(429, b"slow down", "text/plain")
        else:
            h.reply(200, b'{"ok": true}')

    feed = serve(respond)
    started = time.monotonic()
    resp = fetch(feed.url, FAST, params={"a": "1"})
    assert time.monotonic() - started < 3
    assert resp.status == 200 and json.loads(resp.body) == {"ok": True}
    assert resp.content_type.startswith("application/json")
    assert len(feed.requests) == 3 and all(q == {"a": "1"} for q in feed.queries())


def test_fetch_gives_up_after_retries_with_the_status_code(serve):
    feed = serve(lambda h, q: h.reply(503, b"down", "text/plain"))
    with pytest.raises(FetchError) as err:
        fetch(feed.url, HttpConfig(timeout_s=2.0, retries=2, backoff_s=0.0))
    assert err.value.code == "http_503"
    assert "3 attempts" in str(err.value)
    assert len(feed.requests) == 3


def test_fetch_does_not_retry_a_client_error(serve):
    feed = serve(lambda h, q: h.reply(404, b"nope", "text/plain"))
    with pytest.raises(FetchError) as err:
        fetch(feed.url, FAST)
    assert err.value.code == "http_404"
    assert len(feed.requests) == 1


def test_fetch_timeout(serve):
    def respond(h: _Handler, q: dict[str, str]) -> None:
        time.sleep(1.0)
        h.reply(200, b"{}")

    feed = serve(respond)
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch(feed.url, HttpConfig(timeout_s=0.2, retries=1, backoff_s=0.0))
    assert err.value.code == "timeout"
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_fetch_over_max_bytes_is_too_large(serve, declared):
    body = b"x" * 50_000
    feed = serve(lambda h, q: h.reply(200, body, "application/octet-stream", length=declared))
    with pytest.raises(FetchError) as err:
        fetch(feed.url, HttpConfig(timeout_s=2.0, retries=0, max_bytes=10_000))
    assert err.value.code == "too_large"
    # at the cap exactly, it passes
    assert fetch(feed.url, HttpConfig(timeout_s=2.0, retries=0, max_bytes=50_000)).body == body


def test_source_response_over_max_bytes_is_quarantined(make_settings, monkeypatch, recorded):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    settings = make_settings(sources=[api_source(recorded.url)],
                             ingest={"http": {"timeout_s": 2.0, "retries": 0, "max_bytes": 1000}})
    _, rep = ingest(settings)
    assert rep.reasons == {"fetch_too_large": 1} and rep.accepted == 0
    assert_key_nowhere(settings)


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/claims.json", "file:///etc/passwd", "gopher://127.0.0.1/1"])
def test_redirect_to_a_non_http_scheme_is_refused(serve, target):
    feed = serve(lambda h, q: h.reply(302, b"", "text/plain", headers={"Location": target}))
    with pytest.raises(FetchError) as err:
        fetch(feed.url, FAST)
    assert err.value.code == "bad_scheme"
    assert len(feed.requests) == 1  # refused, not retried


def test_redirect_within_http_is_followed(serve):
    def respond(h: _Handler, q: dict[str, str]) -> None:
        if h.path.startswith("/moved"):
            h.reply(200, b'{"claims": []}')
        else:
            h.reply(301, b"", "text/plain", headers={"Location": "/moved"})

    feed = serve(respond)
    resp = fetch(feed.url, FAST)
    assert resp.url == feed.base + "/moved" and resp.body == b'{"claims": []}'


def test_source_redirect_to_ftp_is_quarantined_without_the_key(settings_for, serve):
    # a redirect that carries the query string (key included) onto another scheme
    feed = serve(lambda h, q: h.reply(
        302, b"", "text/plain", headers={"Location": "ftp://127.0.0.1/mirror?" + urlsplit(h.path).query}))
    settings = settings_for(feed.url)
    _, rep = ingest(settings)
    assert rep.error is None, rep.error
    assert rep.reasons == {"fetch_bad_scheme": 1}
    assert_key_nowhere(settings)


@pytest.mark.parametrize(
    "url, code",
    [("file:///etc/passwd", "bad_scheme"), ("ftp://example.org/a.json", "bad_scheme"),
     ("javascript:alert(1)", "bad_scheme"), ("http:///no-host", "bad_url")],
)
def test_fetch_refuses_bad_urls_before_any_request(url, code):
    with pytest.raises(FetchError) as err:
        fetch(url, FAST)
    assert err.value.code == code and err.value.url == url


def test_fetch_unreachable():
    with pytest.raises(FetchError) as err:  # the discard port: nothing listens
        fetch("http://127.0.0.1:9/x", HttpConfig(timeout_s=1.0, retries=0))
    assert err.value.code in ("unreachable", "timeout")
