"""Bad input, one case each: every one ends in a quarantine record with a reason code
(or a clear error), the run never crashes, nothing is dropped silently, and every
source reconciles: in = accepted + quarantined + duplicates + skipped.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmd.config import ImageConfig
from mmd.images import ImageRejected, check_image
from mmd.ingest import IngestResult, SourceReport, run_ingest
from mmd.quarantine import INLINE_RAW_BYTES
from mmd.sources import SourceUnavailable

API_KEY = "test-key-Zq7XbadInput"
KEY_ENV = "MMD_TEST_BAD_INPUT_FC_KEY"
FAST_HTTP = {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.0}
TEN_MB = 10 * 1024 * 1024


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def png_bytes(size: tuple[int, int] = (16, 16), seed: int = 0, noise: bool = False) -> bytes:
    img = Image.new("RGB", size, (seed * 40 % 256, 120, 200))
    if noise:
        import random

        rnd = random.Random(seed)
        img.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of width x height, built row by row (a few hundred KB, no big buffer)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    comp = zlib.compressobj(1)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ingest(settings) -> IngestResult:
    result = run_ingest(settings, show_progress=False)
    assert_reconciled(result)
    return result


def assert_reconciled(result: IngestResult) -> None:
    for s in result.sources:
        assert s.seen == s.accepted + s.quarantined + s.duplicates + s.skipped, s.to_dict()
        assert s.reconciled
    assert result.to_dict()["reconciled"] is True
    # the report on disk says the same
    report = json.loads((result.items_path.parents[2] / "reports" / "ingest.json").read_text())
    assert report["reconciled"] is True


def source(result: IngestResult, name: str) -> SourceReport:
    (rep,) = [s for s in result.sources if s.name == name]
    return rep


def quarantine_rows(result: IngestResult) -> list[dict[str, Any]]:
    return pq.read_table(result.quarantine_path).to_pylist()


def assert_quarantined(result: IngestResult, name: str, code: str, count: int = 1) -> list[dict[str, Any]]:
    """The source ran to its end, counted `count` records under `code`, and the table holds them."""
    rep = source(result, name)
    assert rep.error is None, rep.error
    assert rep.reasons[code] == count, rep.to_dict()
    rows = [r for r in quarantine_rows(result) if r["source"] == name and r["reason_code"] == code]
    assert len(rows) == count
    for r in rows:
        assert r["stage"] == "ingest" and r["reason"] and r["ref"]
    return rows


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out += (line.encode("utf-8") if isinstance(line, str) else line) + b"\n"
    path.write_bytes(out)
    return path


def meme_source(**over: Any) -> dict:
    return {"name": "memes", "type": "memes", "files": ["memes/train.jsonl"], "images_dir": "memes/images", **over}


def meme(n: int, text: str = "a meme text", label: Any = 0, image: str = "ok.png") -> dict:
    return {"id": f"m{n}", "text": text, "image": image, "label": label}


@pytest.fixture
def meme_dir(tmp_path: Path) -> Path:
    images = tmp_path / "memes" / "images"
    images.mkdir(parents=True)
    (images / "ok.png").write_bytes(png_bytes())
    return tmp_path / "memes"


# --------------------------------------------------------------------------- malformed JSON
def test_meme_jsonl_bad_json_line(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1), '{"id": "m2", "text": "unterminated', meme(3, label=1)])
    result = ingest(make_settings(sources=[meme_source()]))
    rows = assert_quarantined(result, "memes", "bad_json")
    assert rows[0]["ref"] == "train.jsonl:2" and "unterminated" in rows[0]["raw"]
    rep = source(result, "memes")
    assert (rep.seen, rep.accepted, rep.quarantined) == (3, 2, 1)


@pytest.mark.parametrize(
    "filename, body",
    [
        ("broken.json", '{"@context": "http://schema.org", "@type": "ClaimReview", "claimReviewed": "x",'),
        ("broken.jsonld", '[{"@type": "ClaimReview", "claimReviewed": "The moon is cheese" "url": 1}]'),
        (
            "page.html",
            '<html><head><script type="application/ld+json">{"@type": "ClaimReview", claimReviewed: nope}'
            "</script></head><body>a fact-check</body></html>",
        ),
    ],
    ids=["json", "jsonld", "html-ld+json"],
)
def test_claimreview_file_bad_json(make_settings, tmp_path, filename, body):
    (tmp_path / "cr").mkdir()
    (tmp_path / "cr" / filename).write_text(body, encoding="utf-8")
    result = ingest(make_settings(sources=[{"name": "cr", "type": "claimreview", "location": "cr"}]))
    rows = assert_quarantined(result, "cr", "bad_json")
    assert rows[0]["ref"].startswith(filename)
    assert source(result, "cr").accepted == 0


# --------------------------------------------------------------------------- ClaimReview fields
GOOD_REVIEW = {
    "@context": "http://schema.org",
    "@type": "ClaimReview",
    "url": "https://factcheck.example.org/a",
    "claimReviewed": "Drinking sea water cures the flu",
    "reviewRating": {"@type": "Rating", "alternateName": "False"},
    "author": {"@type": "Organization", "name": "Example Checks"},
    "datePublished": "2021-03-04",
}


@pytest.mark.parametrize("missing", ["claimReviewed", "reviewRating"])
def test_claimreview_missing_field(make_settings, tmp_path, missing):
    bad = {k: v for k, v in GOOD_REVIEW.items() if k != missing} | {"url": "https://factcheck.example.org/b"}
    lines = [f'<script type="application/ld+json">{json.dumps(r)}</script>' for r in (GOOD_REVIEW, bad)]
    write_lines(tmp_path / "cr" / "feed.txt", lines)
    result = ingest(make_settings(sources=[{"name": "cr", "type": "claimreview", "location": "cr"}]))
    rows = assert_quarantined(result, "cr", "missing_field")
    assert missing in rows[0]["reason"]
    assert rows[0]["ref"] == "feed.txt:line 2"
    assert source(result, "cr").accepted == 1


# --------------------------------------------------------------------------- not UTF-8
def test_meme_jsonl_not_utf8_line(make_settings, meme_dir):
    bad = b'{"id": "m2", "text": "caf\xe9 \xff\xfe", "image": "ok.png", "label": 0}'
    write_lines(meme_dir / "train.jsonl", [meme(1), bad, meme(3, label=1)])
    result = ingest(make_settings(sources=[meme_source()]))
    rows = assert_quarantined(result, "memes", "not_utf8")
    assert rows[0]["ref"] == "train.jsonl:2"
    assert rows[0]["raw_sha256"]  # the raw bytes are kept (inline with replacement characters)
    assert source(result, "memes").accepted == 2


def test_claimreview_file_not_utf8(make_settings, tmp_path):
    good = f'<script type="application/ld+json">{json.dumps(GOOD_REVIEW)}</script>'
    bad = good.replace("Drinking sea water", "Drinking \udcff sea water").encode("utf-8", "surrogateescape")
    write_lines(tmp_path / "cr" / "feed.txt", [good, bad.replace(b"factcheck.example.org/a", b"factcheck.example.org/c")])
    result = ingest(make_settings(sources=[{"name": "cr", "type": "claimreview", "location": "cr"}]))
    rows = assert_quarantined(result, "cr", "not_utf8")
    assert rows[0]["ref"] == "feed.txt:line 2"
    rep = source(result, "cr")
    assert (rep.seen, rep.accepted) == (2, 1)


# --------------------------------------------------------------------------- empty text: validation
def test_empty_meme_text_passes_ingest_and_is_quarantined_by_validation(make_settings, meme_dir):
    from mmd.validate import run_validate

    write_lines(meme_dir / "train.jsonl", [meme(1), meme(2, text="", label=0), meme(3, label=1), meme(4, text="   ", label=1),
                                           meme(5, text="another meme")])
    settings = make_settings(sources=[meme_source()])
    result = ingest(settings)
    assert source(result, "memes").accepted == 5  # ingest takes it: text is present, only empty

    items = pq.read_table(result.items_path).to_pylist()
    empty_ids = {i["id"] for i in items if not i["text"].strip()}
    assert len(empty_ids) == 2

    v = run_validate(settings)
    assert v.total == v.accepted + v.quarantined == 5
    assert v.quarantined == 2
    qpath = settings.data_dir / "validated" / "quarantine.parquet"
    rows = pq.read_table(qpath).to_pylist()
    assert {r["item_id"] for r in rows} == empty_ids
    for r in rows:
        assert r["stage"] == "validate"
        assert r["reason_code"] == "expect_column_value_lengths_to_be_between"
        assert "text_stripped" in r["reason"]
    kept = pq.read_table(settings.data_dir / "validated" / "items.parquet").column("id").to_pylist()
    assert not empty_ids & set(kept)


# --------------------------------------------------------------------------- 10 MB text
def _big_meme(tmp_path: Path, big: str) -> tuple[dict, str]:
    images = tmp_path / "memes" / "images"
    images.mkdir(parents=True)
    (images / "ok.png").write_bytes(png_bytes())
    line = json.dumps(meme(1, text=big))
    write_lines(tmp_path / "memes" / "train.jsonl", [line])
    return meme_source(), line


def _big_post(tmp_path: Path, big: str) -> tuple[dict, str]:
    line = "\t".join(["p1", big, "u1", "img_1", "someone", "Mon Oct 29 10:00:00 +0000 2012", "fake"])
    write_lines(tmp_path / "posts" / "train.txt", [line])
    return {"name": "posts", "type": "mediaeval", "file": "posts/train.txt", "images_dir": "posts/images"}, line


def _big_claimreview(tmp_path: Path, big: str) -> tuple[dict, str]:
    review = GOOD_REVIEW | {"claimReviewed": big}
    write_lines(tmp_path / "cr" / "big.json", [json.dumps(review)])
    return {"name": "cr", "type": "claimreview", "location": "cr"}, json.dumps(review, ensure_ascii=False)


def _big_claims_search(tmp_path: Path, big: str) -> tuple[dict, str]:
    claim = {"text": big, "claimReview": [{"url": "https://f.example.org/x", "textualRating": "False",
                                            "reviewDate": "2022-01-01T00:00:00Z"}]}
    write_lines(tmp_path / "cr" / "saved_search.json", [json.dumps({"claims": [claim]})])
    return {"name": "cr", "type": "claimreview", "location": "cr"}, json.dumps(claim, ensure_ascii=False)


@pytest.mark.parametrize(
    "build", [_big_meme, _big_post, _big_claimreview, _big_claims_search],
    ids=["meme-jsonl", "mediaeval-tsv", "claimreview", "claims-search-page"],
)
def test_ten_megabyte_text_is_quarantined_with_full_raw_blob(make_settings, tmp_path, build):
    big = "x" * (TEN_MB - 7) + " meme!!"
    cfg, raw = build(tmp_path, big)
    settings = make_settings(sources=[cfg])
    result = ingest(settings)
    (row,) = assert_quarantined(result, cfg["name"], "text_too_large")
    assert source(result, cfg["name"]).accepted == 0
    assert len(row["raw"].encode("utf-8")) <= INLINE_RAW_BYTES  # the table stays small…
    assert row["raw_blob"].startswith("ingested/raw/")  # inside ingest's DVC output: versioned with it
    blob = settings.data_dir / row["raw_blob"]
    assert blob.is_file()
    assert blob.read_bytes() == raw.encode("utf-8")  # …and the whole input is kept beside it
    assert len(blob.read_bytes()) > TEN_MB


# --------------------------------------------------------------------------- id conflict
def test_same_id_different_content_is_id_conflict(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1, text="first version"), meme(1, text="second version", label=1)])
    result = ingest(make_settings(sources=[meme_source()]))
    (row,) = assert_quarantined(result, "memes", "id_conflict")
    items = pq.read_table(result.items_path).to_pylist()
    assert [i["text"] for i in items] == ["first version"]  # the first is kept
    assert row["item_id"] == items[0]["id"]
    assert "second version" in row["raw"]
    rep = source(result, "memes")
    assert (rep.seen, rep.accepted, rep.quarantined, rep.duplicates) == (2, 1, 1, 0)


def test_same_id_same_content_is_a_duplicate_not_a_conflict(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1), meme(1)])
    result = ingest(make_settings(sources=[meme_source()]))
    rep = source(result, "memes")
    assert (rep.seen, rep.accepted, rep.quarantined, rep.duplicates) == (2, 1, 0, 1)
    assert pq.read_table(result.duplicates_path).column("reason_code").to_pylist() == ["duplicate_id"]


# --------------------------------------------------------------------------- images
def _truncated() -> bytes:
    data = png_bytes((64, 64), seed=3, noise=True)
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize(
    "image_name, content, code",
    [
        ("truncated.png", _truncated, "image_truncated"),
        ("not_an_image.png", lambda: b"this is a text file, not a picture\n" * 20, "image_not_an_image"),
        ("empty.png", lambda: b"", "image_empty"),
        ("huge.png", lambda: huge_png(30_000, 30_000), "image_too_many_pixels"),
        ("../../etc/passwd", None, "image_path_escape"),
        ("absent.png", None, "image_missing"),
    ],
    ids=["truncated", "not-an-image", "zero-bytes", "30000x30000", "path-escape", "missing"],
)
def test_bad_image(make_settings, meme_dir, image_name, content, code):
    if content is not None:
        (meme_dir / "images" / image_name).write_bytes(content())
    write_lines(meme_dir / "train.jsonl", [meme(1), meme(2, image=image_name, label=1)])
    settings = make_settings(sources=[meme_source()])
    started = time.monotonic()
    result = ingest(settings)
    assert time.monotonic() - started < 10
    (row,) = assert_quarantined(result, "memes", code)
    assert row["ref"] == "train.jsonl:2" and row["item_id"]
    assert source(result, "memes").accepted == 1
    # nothing rejected reaches the image store
    stored = [p for p in (settings.data_dir / "images").rglob("*") if p.is_file()]
    assert len(stored) == 1


def test_huge_png_is_refused_from_its_header():
    data = huge_png(30_000, 30_000)
    assert len(data) < 1_000_000
    started = time.monotonic()
    with pytest.raises(ImageRejected) as err:
        check_image(data, ImageConfig())
    assert err.value.code == "image_too_many_pixels"
    assert time.monotonic() - started < 1.0  # never decoded


def test_image_path_escape_in_tsv(make_settings, tmp_path):
    # MediaEval names images by id; an id climbing out of images_dir must not be followed
    (tmp_path / "secret.jpg").write_bytes(png_bytes())
    (tmp_path / "posts" / "images").mkdir(parents=True)
    write_lines(tmp_path / "posts" / "train.txt",
                ["p1\tsome post\tu1\t../../secret\tname\tMon Oct 29 10:00:00 +0000 2012\tfake"])
    result = ingest(make_settings(sources=[
        {"name": "posts", "type": "mediaeval", "file": "posts/train.txt", "images_dir": "posts/images"}]))
    assert_quarantined(result, "posts", "image_path_escape")


# --------------------------------------------------------------------------- URL schemes
@pytest.mark.parametrize("location", ["file:///etc/passwd", "file:/etc/hostname", "ftp://ftp.example.org/claims.json"])
def test_claimreview_location_with_bad_scheme(make_settings, location):
    result = ingest(make_settings(sources=[{"name": "cr", "type": "claimreview", "location": location}]))
    (row,) = assert_quarantined(result, "cr", "fetch_bad_scheme")
    assert row["ref"] == location
    assert source(result, "cr").accepted == 0


# --------------------------------------------------------------------------- a fact-check API that misbehaves
class _Handler(BaseHTTPRequestHandler):
    behave: Callable[["_Handler"], None]

    def do_GET(self) -> None:  # noqa: N802
        try:
            self.behave()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _answer_500(h: _Handler) -> None:
    h.reply(500, b'{"error": "backend exploded"}', "application/json")


def _answer_slowly(h: _Handler) -> None:
    time.sleep(1.5)
    h.reply(200, b'{"claims": []}', "application/json")


def _answer_html(h: _Handler) -> None:
    h.reply(200, b"<!doctype html><html><body><h1>Sign in to continue</h1></body></html>", "text/html; charset=utf-8")


@pytest.fixture
def feed():
    servers: list[ThreadingHTTPServer] = []

    def start(behave: Callable[[_Handler], None]) -> str:
        handler = type("H", (_Handler,), {"behave": behave})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1alpha1/claims:search"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize(
    "behave, http, code, transient",
    [
        (_answer_500, FAST_HTTP, "fetch_http_500", True),
        (_answer_slowly, {"timeout_s": 0.2, "retries": 0, "backoff_s": 0.0}, "fetch_timeout", True),
        (_answer_html, FAST_HTTP, "not_json", False),
    ],
    ids=["500", "timeout", "html"],
)
def test_factcheck_api_feed_failures(make_settings, monkeypatch, feed, behave, http, code, transient):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    endpoint = feed(behave)
    settings = make_settings(
        sources=[{"name": "gfc", "type": "factcheck_api", "endpoint": endpoint, "query": "flood", "api_key_env": KEY_ENV}],
        ingest={"http": http},
    )
    started = time.monotonic()
    if transient:
        # nothing of the source could be read, for a reason a retry may cure: the run says so
        # (after writing its outputs), so the flow's task retries mean something
        with pytest.raises(SourceUnavailable) as err:
            run_ingest(settings, show_progress=False)
        assert "gfc" in err.value.sources and API_KEY not in str(err.value)
        result = err.value.result
        assert_reconciled(result)
    else:
        result = ingest(settings)
    assert time.monotonic() - started < 5
    (row,) = assert_quarantined(result, "gfc", code)
    assert row["ref"].startswith(endpoint)
    rep = source(result, "gfc")
    assert rep.accepted == 0
    # a failed run does not move the watermark, and the key is nowhere
    state = json.loads((settings.data_dir / "state" / "watermarks.json").read_text())
    assert "max_review_date" not in state.get("gfc", {})
    for path in (result.quarantine_path, settings.reports_dir / "ingest.json",
                 settings.data_dir / "state" / "watermarks.json"):
        assert API_KEY.encode() not in path.read_bytes()
    assert API_KEY not in json.dumps(quarantine_rows(result))


def test_factcheck_api_without_key_is_quarantined(make_settings, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    settings = make_settings(sources=[{"name": "gfc", "type": "factcheck_api", "endpoint": "http://127.0.0.1:9/x",
                                       "query": "flood", "api_key_env": KEY_ENV}])
    (row,) = assert_quarantined(ingest(settings), "gfc", "no_api_key")
    assert KEY_ENV in row["reason"]


# --------------------------------------------------------------------------- TSV rows
POST_HEADER = "post_id\tpost_text\tuser_id\timage_id(s)\tusername\ttimestamp\tlabel"
TS = "Mon Oct 29 10:00:00 +0000 2012"


@pytest.mark.parametrize(
    "row, code",
    [
        ("p2\tonly three\tcolumns", "bad_columns"),
        (f"p2\ttoo\tmany\tcolumns\there\t{TS}\tfake\textra", "bad_columns"),
        (f"p2\tsatire is not a verdict\tu2\timg_2\tname\t{TS}\tsatire", "unknown_label"),
    ],
    ids=["too-few-columns", "too-many-columns", "unknown-label"],
)
def test_tsv_bad_rows(make_settings, tmp_path, row, code):
    write_lines(tmp_path / "posts" / "train.txt", [POST_HEADER, f"p1\ta good post\tu1\timg_1\tname\t{TS}\treal", row])
    result = ingest(make_settings(sources=[
        {"name": "posts", "type": "mediaeval", "file": "posts/train.txt", "images_dir": "posts/images"}]))
    (q,) = assert_quarantined(result, "posts", code)
    assert q["ref"] == "train.txt:3" and q["raw"] == row
    rep = source(result, "posts")
    assert (rep.seen, rep.accepted, rep.quarantined) == (2, 1, 1)  # the header is not a record


def test_meme_label_outside_known_set(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1), meme(2, label="maybe"), meme(3, label=7)])
    result = ingest(make_settings(sources=[meme_source()]))
    rows = assert_quarantined(result, "memes", "unknown_label", count=2)
    assert {r["ref"] for r in rows} == {"train.jsonl:2", "train.jsonl:3"}
    assert source(result, "memes").accepted == 1


def test_harmeme_label_outside_known_set(make_settings, meme_dir):
    records = [
        {"id": "h1", "image": "ok.png", "labels": ["not harmful"], "text": "ok"},
        {"id": "h2", "image": "ok.png", "labels": ["extremely harmful", "society"], "text": "hm"},
    ]
    write_lines(meme_dir / "train.jsonl", records)
    result = ingest(make_settings(sources=[meme_source(preset="harmeme")]))
    (row,) = assert_quarantined(result, "memes", "unknown_label")
    assert "extremely harmful" in row["reason"]


# --------------------------------------------------------------------------- missing sources, unknown files
@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "gone", "type": "memes", "files": ["nowhere/train.jsonl"], "images_dir": "nowhere/images"},
        {"name": "gone", "type": "mediaeval", "file": "nowhere/train.txt", "images_dir": "nowhere/images"},
        {"name": "gone", "type": "claimreview", "location": "nowhere"},
        {"name": "gone", "type": "inbox", "path": "nowhere"},
    ],
    ids=lambda c: c["type"],
)
def test_source_folder_does_not_exist(make_settings, meme_dir, cfg):
    write_lines(meme_dir / "train.jsonl", [meme(1)])
    result = ingest(make_settings(sources=[cfg, meme_source()]))
    (row,) = assert_quarantined(result, "gone", "missing_location")
    assert "nowhere" in row["ref"]
    assert source(result, "memes").accepted == 1  # the others still run


def test_inbox_file_of_unknown_type(make_settings, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "claims.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    (inbox / "README.md").write_text("ignored on purpose")
    (inbox / "cr.txt").write_text(f'<script type="application/ld+json">{json.dumps(GOOD_REVIEW)}</script>\n')
    settings = make_settings(sources=[{"name": "inbox", "type": "inbox", "path": "inbox"}])
    result = ingest(settings)
    (row,) = assert_quarantined(result, "inbox", "unknown_file_type")
    assert row["ref"] == "claims.xlsx" and ".xlsx" in row["reason"]
    assert source(result, "inbox").accepted == 1
    # the watermark remembers it: a second run does not quarantine it again
    again = ingest(settings)
    rep = source(again, "inbox")
    assert (rep.seen, rep.quarantined) == (0, 0)
    assert len(quarantine_rows(again)) == 1
