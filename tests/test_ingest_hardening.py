"""Ingest against hostile input: one bad record or file never stops the rest, work is bounded,
raw input is kept whole and nothing outside a source's folders is read.

Every bad input is built here, in the test. Each case checks that the record or file is
quarantined with its reason code, that the rest of the source was read, and that the source
reconciles exactly: in = accepted + quarantined + duplicates + skipped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from mmd.config import load_settings
from mmd.ingest import IngestResult, SourceReport, run_ingest
from mmd.items import Item
from mmd.sources import SourceUnavailable
from mmd.sources.base import invisible_only
from tests.test_bad_input import GOOD_REVIEW, assert_reconciled, ingest, meme, meme_dir, meme_source, png_bytes, write_lines  # noqa: F401 (meme_dir is a fixture)


# --------------------------------------------------------------------------- helpers
def check(result: IngestResult) -> None:
    """Exact reconciliation, per source, in the result and in the report on disk."""
    assert_reconciled(result)
    report = json.loads(result.items_path.parents[2].joinpath("reports", "ingest.json").read_text())
    for s in report["sources"]:
        assert s["in"] == s["accepted"] + s["quarantined"] + s["duplicates"] + s["skipped"]


def rep(result: IngestResult, name: str) -> SourceReport:
    (r,) = [s for s in result.sources if s.name == name]
    return r


def qrows(result: IngestResult, code: str | None = None) -> list[dict[str, Any]]:
    rows = pq.read_table(result.quarantine_path).to_pylist()
    return [r for r in rows if code is None or r["reason_code"] == code]


def items(result: IngestResult) -> list[dict[str, Any]]:
    return pq.read_table(result.items_path).to_pylist()


def script(obj: dict) -> str:
    return f'<script type="application/ld+json">{json.dumps(obj)}</script>'


def review(n: int, **over: Any) -> dict:
    return GOOD_REVIEW | {"url": f"https://factcheck.example.org/{n}", "claimReviewed": f"Claim number {n} is false"} | over


def claims_page(*claims: dict) -> str:
    return json.dumps({"claims": list(claims), "nextPageToken": "tok"})


def claim(n: int, **review_over: Any) -> dict:
    return {"text": f"Saved claim {n}", "claimant": "someone", "claimDate": "2022-01-01T00:00:00Z",
            "claimReview": [{"publisher": {"name": "Checker", "site": "checker.example.org"},
                             "url": f"https://checker.example.org/{n}", "title": "t", "reviewDate": "2022-01-02T00:00:00Z",
                             "textualRating": "False", "languageCode": "en", **review_over}]}


CR = [{"name": "cr", "type": "claimreview", "location": "cr"}]
INBOX = [{"name": "inbox", "type": "inbox", "path": "inbox"}]


# =========================================================================== a field that does not fit
def test_meme_with_a_number_for_its_language_is_bad_field_and_the_rest_is_written(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1), {**meme(2), "lang": 7}, {**meme(3), "language": ["en", "fr"]},
                                           {**meme(4, text="another meme"), "lang": "en"}])
    result = ingest(make_settings(sources=[meme_source()]))
    r = rep(result, "memes")
    assert (r.seen, r.accepted, r.quarantined) == (4, 2, 2) and r.error is None
    bad = {q["ref"]: q["reason"] for q in qrows(result, "bad_field")}
    assert set(bad) == {"train.jsonl:2", "train.jsonl:3"}
    assert "language (from `lang`)" in bad["train.jsonl:2"] and "got int" in bad["train.jsonl:2"]
    assert "language (from `language`)" in bad["train.jsonl:3"] and "got list" in bad["train.jsonl:3"]
    assert sorted((i["native_id"], i["language"]) for i in items(result)) == [("m1", None), ("m4", "en")]


def test_saved_claims_search_with_wrongly_typed_fields(make_settings, tmp_path):
    page = claims_page(claim(1), claim(2, reviewDate=20220102), claim(3, languageCode=["en", "de"]),
                       claim(4, url=12345), claim(5))
    (tmp_path / "cr").mkdir()
    (tmp_path / "cr" / "saved_search.json").write_text(page)
    result = ingest(make_settings(sources=CR))
    r = rep(result, "cr")
    assert (r.seen, r.accepted, r.quarantined) == (5, 2, 3) and r.error is None
    reasons = sorted(q["reason"] for q in qrows(result, "bad_field"))
    assert any("published_at (from `claimReview.reviewDate`) must be text, got int" in x for x in reasons)
    assert any("language (from `claimReview.languageCode`) must be text, got list" in x for x in reasons)
    assert any("url (from `claimReview.url`) must be text, got int" in x for x in reasons)
    assert sorted(i["text"] for i in items(result)) == ["Saved claim 1", "Saved claim 5"]


def test_claimreview_objects_without_a_name_are_none_not_the_string_none(make_settings, tmp_path):
    write_lines(tmp_path / "cr" / "feed.txt", [
        script(review(1, author={"@type": "Organization"}, url={"@id": "https://factcheck.example.org/id-1"})),
        script(review(2, author=[{"@type": "Organization", "url": "https://x.example.org"}],
                      itemReviewed={"author": {"@type": "Person"}, "datePublished": "2020-01-01"})),
        script(review(3, datePublished=2021)),
    ])
    result = ingest(make_settings(sources=CR))
    got = {i["text"]: i for i in items(result)}
    assert got["Claim number 1 is false"]["publisher"] is None
    assert got["Claim number 1 is false"]["url"] == "https://factcheck.example.org/id-1"
    assert got["Claim number 2 is false"]["publisher"] is None
    assert "None" not in got["Claim number 2 is false"]["extra"]
    (q,) = qrows(result, "bad_field")
    assert q["ref"] == "feed.txt:line 3" and "published_at (from `datePublished`)" in q["reason"]


def test_text_with_lone_surrogates_or_a_label_out_of_range_never_reaches_the_table(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", ['{"id": "m1", "text": "bad \\ud800 text", "image": "ok.png", "label": 0}',
                                           meme(2)])
    result = ingest(make_settings(sources=[meme_source()]))
    (q,) = qrows(result, "bad_field")
    assert "field text" in q["reason"] and "surrogates" in q["reason"]
    assert [i["native_id"] for i in items(result)] == ["m2"]


def test_an_item_that_skips_the_checks_is_stopped_at_the_last_door(make_settings, monkeypatch):
    """Even a reader that builds items by hand cannot make the Parquet write fail."""
    def reader(ctx, cfg):
        yield Item(id="a" * 24, source=ctx.name, source_family="x", kind="meme", text="fine").finalise()
        yield Item(id="b" * 24, source=ctx.name, source_family="x", kind="meme", text="t", label=300)
        yield Item(id="c" * 24, source=ctx.name, source_family="x", kind="meme", text="t", image_width="12")

    monkeypatch.setattr("mmd.ingest.reader", lambda kind: reader)
    result = ingest(make_settings(sources=INBOX))
    reasons = sorted(q["reason"] for q in qrows(result, "bad_field"))
    assert reasons == ["field image_width must be an integer, got str", "field label is 300, outside -128..127"]
    assert [i["id"] for i in items(result)] == ["a" * 24]


# =========================================================================== one bad file
POISON = {
    "big_int": '{"@type": "ClaimReview", "claimReviewed": "x", "reviewRating": {"ratingValue": ' + "7" * 5000 + "}}",
    "deep": "[" * 10_000 + "]" * 10_000,
    "deep_object": '{"a":' * 5000 + "1" + "}" * 5000,
}


@pytest.mark.parametrize("poison, code", [("big_int", "bad_json"), ("deep", "json_too_deep"),
                                          ("deep_object", "json_too_deep")])
def test_a_poisoned_json_file_is_quarantined_and_the_files_after_it_are_read(make_settings, tmp_path, poison, code):
    (tmp_path / "cr").mkdir()
    (tmp_path / "cr" / "a_poison.json").write_text(POISON[poison])
    for n in (1, 2):
        (tmp_path / "cr" / f"z_good{n}.json").write_text(json.dumps(review(n)))
    result = ingest(make_settings(sources=CR))
    r = rep(result, "cr")
    assert (r.seen, r.accepted, r.quarantined) == (3, 2, 1) and r.error is None
    (q,) = qrows(result, code)
    assert q["ref"] == "a_poison.json:document"
    assert q["raw_sha256"] == hashlib.sha256(POISON[poison].encode()).hexdigest()  # the file, kept whole


def test_json_depth_limit_is_a_param(make_settings, tmp_path):
    (tmp_path / "cr").mkdir()
    nested = review(1, extra_info={"a": {"b": {"c": {"d": {"e": 1}}}}})
    (tmp_path / "cr" / "nested.json").write_text(json.dumps(nested))
    (tmp_path / "cr" / "flat.json").write_text(json.dumps(review(2)))
    result = ingest(make_settings(sources=CR, ingest={"max_json_depth": 4}))
    assert [q["ref"] for q in qrows(result, "json_too_deep")] == ["nested.json:document"]
    assert rep(result, "cr").accepted == 1


def test_a_file_whose_reader_raises_is_file_error_and_the_source_goes_on(make_settings, tmp_path, monkeypatch):
    import mmd.sources.claimreview as cr

    real = cr.parse_document

    def parse(ctx, text, ref):
        if ref == "b.json":
            yield from real(ctx, text, ref)  # its good records first: they count, the rest is the file's record
            raise KeyError("something no one foresaw")
        yield from real(ctx, text, ref)

    monkeypatch.setattr(cr, "parse_document", parse)
    (tmp_path / "cr").mkdir()
    for name, n in (("a.json", 1), ("b.json", 2), ("c.json", 3)):
        (tmp_path / "cr" / name).write_text(json.dumps(review(n)))
    settings = make_settings(sources=CR)
    result = ingest(settings)
    r = rep(result, "cr")
    assert (r.seen, r.accepted, r.quarantined, r.error) == (4, 3, 1, None)
    (q,) = qrows(result, "file_error")
    assert q["ref"] == "b.json" and "KeyError" in q["reason"]
    assert q["raw"] == (tmp_path / "cr" / "b.json").read_text()  # the whole file beside its error
    files = json.loads(settings.layout.watermarks.read_text())["cr"]["files"]
    assert sorted(files) == ["cr/a.json", "cr/c.json"]  # b.json is read again next time


def _unreadable(monkeypatch, names: set[str]) -> None:
    """Files the process may not read (chmod 000 does not stop root, so the open is refused here)."""
    import mmd.sources.base as base

    real = base.read_capped

    def read(path, max_bytes, follow_symlinks=True):
        if Path(path).name in names:
            raise PermissionError(errno.EACCES, f"cannot open {path}: Permission denied")
        return real(path, max_bytes, follow_symlinks)

    monkeypatch.setattr(base, "read_capped", read)


def test_an_unreadable_file_is_file_error_and_the_others_are_read(make_settings, tmp_path, monkeypatch):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a_locked.json").write_text(json.dumps(review(1)))
    (tmp_path / "inbox" / "b.json").write_text(json.dumps(review(2)))
    _unreadable(monkeypatch, {"a_locked.json"})
    result = ingest(make_settings(sources=INBOX))
    r = rep(result, "inbox")
    assert (r.seen, r.accepted, r.quarantined, r.unavailable) == (2, 1, 1, None)
    (q,) = qrows(result, "file_error")
    assert q["ref"] == "a_locked.json" and "PermissionError" in q["reason"] and "a_locked.json" in q["reason"]


def test_every_file_failing_transiently_raises_source_unavailable_after_writing(make_settings, tmp_path, monkeypatch):
    (tmp_path / "inbox").mkdir()
    for n in (1, 2):
        (tmp_path / "inbox" / f"c{n}.json").write_text(json.dumps(review(n)))
    write_lines(tmp_path / "memes" / "train.jsonl", [meme(1)])
    (tmp_path / "memes" / "images").mkdir()
    (tmp_path / "memes" / "images" / "ok.png").write_bytes(png_bytes())
    settings = make_settings(sources=INBOX + [meme_source()])
    _unreadable(monkeypatch, {"c1.json", "c2.json"})
    with pytest.raises(SourceUnavailable) as err:
        run_ingest(settings, show_progress=False)
    assert set(err.value.sources) == {"inbox"} and "2 files" in err.value.sources["inbox"]
    result = err.value.result
    check(result)  # the report and the tables were written before the raise
    assert rep(result, "inbox").unavailable and rep(result, "memes").accepted == 1
    marks = json.loads(settings.layout.watermarks.read_text())
    assert "inbox" not in marks and "memes" in marks

    monkeypatch.undo()  # the disk is back: a retry reads what failed, and only that
    again = ingest(settings)
    assert (rep(again, "inbox").accepted, rep(again, "memes").seen) == (2, 0)


# =========================================================================== raw input kept safely
def test_disk_full_while_quarantining_stops_the_source_naming_the_path_and_a_rerun_keeps_it_whole(
        make_settings, meme_dir, monkeypatch):
    import mmd.quarantine as q

    big = json.dumps({**meme(2), "label": "no such label", "text": "y" * 40_000})
    write_lines(meme_dir / "train.jsonl", [meme(1), big])
    settings = make_settings(sources=[meme_source()])

    def disk_full(path, payload):
        path.write_bytes(payload[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(q, "_write_fully", disk_full)
    result = ingest(settings)
    r = rep(result, "memes")
    assert r.reasons == {"source_error": 1} and "StorageError" in r.error and "ingested/raw" in r.error
    assert "No space left" in r.error
    blobs = settings.layout.ingest_raw
    assert not [p for p in blobs.iterdir() if p.suffix == ".bin"]
    assert "memes" not in json.loads(settings.layout.watermarks.read_text())  # read again next time

    monkeypatch.undo()
    again = ingest(settings)
    (row,) = qrows(again, "unknown_label")
    assert (settings.data_dir / row["raw_blob"]).read_bytes() == big.encode()


def test_unknown_and_binary_input_is_kept_whole(make_settings, tmp_path, meme_dir):
    (tmp_path / "inbox").mkdir()
    blob = os.urandom(200_000)
    (tmp_path / "inbox" / "claims.xlsx").write_bytes(blob)
    small_binary = b'{"id": "m2", "text": "caf\xe9", "image": "ok.png", "label": 0}'
    write_lines(meme_dir / "train.jsonl", [meme(1), small_binary])
    settings = make_settings(sources=INBOX + [meme_source()])
    result = ingest(settings)
    (unknown,) = qrows(result, "unknown_file_type")
    assert (settings.data_dir / unknown["raw_blob"]).read_bytes() == blob  # not its first 64 KiB
    (line,) = qrows(result, "not_utf8")
    assert (settings.data_dir / line["raw_blob"]).read_bytes() == small_binary + b"\n"  # not lossy text


def test_non_utf8_json_document_is_one_record_with_its_exact_bytes(make_settings, tmp_path):
    (tmp_path / "cr").mkdir()
    body = json.dumps([review(1), review(2)], indent=2).encode().replace(b"Claim number 2", b"Claim \xff number 2")
    (tmp_path / "cr" / "pretty.json").write_bytes(body)
    (tmp_path / "cr" / "z.json").write_text(json.dumps(review(3)))
    settings = make_settings(sources=CR)
    result = ingest(settings)
    r = rep(result, "cr")
    assert (r.seen, r.accepted, r.quarantined) == (2, 1, 1)
    (q,) = qrows(result)
    assert (q["reason_code"], q["ref"]) == ("not_utf8", "pretty.json:document")
    assert (settings.data_dir / q["raw_blob"]).read_bytes() == body


def test_a_pretty_printed_json_with_one_bad_value_is_one_record_not_one_per_line(make_settings, tmp_path):
    (tmp_path / "cr").mkdir()
    text = json.dumps([review(1), review(2)], indent=2).replace('"False"', "False")
    (tmp_path / "cr" / "pretty.json").write_text(text)
    result = ingest(make_settings(sources=CR))
    assert [(q["reason_code"], q["ref"]) for q in qrows(result)] == [("bad_json", "pretty.json:document")]


def test_text_of_only_invisible_characters_is_empty_text(make_settings, meme_dir):
    write_lines(meme_dir / "train.jsonl", [meme(1), meme(2, text="\u200b\u200c\u200d\ufeff"), meme(3, text="\u2060 \u3164"),
                                           meme(4, text="zero\u200bwidth inside is fine")])
    result = ingest(make_settings(sources=[meme_source()]))
    assert sorted(q["ref"] for q in qrows(result, "empty_text")) == ["train.jsonl:2", "train.jsonl:3"]
    assert rep(result, "memes").accepted == 2
    assert invisible_only("\u200b") and not invisible_only("") and not invisible_only("a\u200b")


# =========================================================================== folders and locations
def test_inbox_never_follows_a_symlink_out_and_counts_what_it_ignores(make_settings, tmp_path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    secret = b"root:$6$TOPSECRETHASH:19000:0:99999:7:::\n"
    (outside / "shadow.json").write_bytes(secret)
    (outside / "folder").mkdir()
    (outside / "folder" / "more.json").write_text(json.dumps(review(9)))
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "good.json").write_text(json.dumps(review(1)))
    (inbox / "link_out.json").symlink_to(outside / "shadow.json")
    (inbox / "dir_out").symlink_to(outside / "folder", target_is_directory=True)
    (inbox / "sub" / "link_in.json").symlink_to(inbox / "good.json")  # inside: read (and seen as unchanged)
    (inbox / ".hidden.json").write_text(json.dumps(review(2)))
    (inbox / "README.md").write_text("notes")
    os.mkfifo(inbox / "pipe.json")
    settings = make_settings(sources=INBOX)
    started = time.monotonic()
    result = ingest(settings)
    assert time.monotonic() - started < 20  # the FIFO was never opened for a blocking read
    r = rep(result, "inbox")
    assert r.accepted == 1 and r.quarantined == 0
    assert {k: v for k, v in r.counters.items() if k.startswith("skipped_")} == {
        "skipped_symlink_outside": 2, "skipped_hidden_file": 1, "skipped_readme": 1, "skipped_not_a_regular_file": 1}
    assert r.skipped == 5 and r.seen == 6
    for p in settings.data_dir.rglob("*"):
        if p.is_file():
            assert b"TOPSECRETHASH" not in p.read_bytes(), p
    again = ingest(settings)  # ignored files are counted once per version, like files read
    assert rep(again, "inbox").seen == 0


@pytest.mark.parametrize("make_source", [
    lambda where: {"name": "x", "type": "claimreview", "location": str(where)},
    lambda where: {"name": "x", "type": "inbox", "path": str(where)},
    lambda where: {"name": "x", "type": "memes", "files": [str(where / "train.jsonl")], "images_dir": "memes/images"},
    lambda where: {"name": "x", "type": "mediaeval", "file": str(where / "train.jsonl"), "images_dir": "memes/images"},
], ids=["claimreview", "inbox", "memes", "mediaeval"])
def test_a_location_outside_the_allowed_roots_is_refused(make_settings, tmp_path, tmp_path_factory, make_source):
    outside = tmp_path_factory.mktemp("host")
    (outside / "train.jsonl").write_text(json.dumps(meme(1)) + "\n")
    (outside / "claims.json").write_text(json.dumps(review(1)))
    (tmp_path / "memes" / "images").mkdir(parents=True)
    result = ingest(make_settings(sources=[make_source(outside)]))
    (q,) = qrows(result)
    assert q["reason_code"] == "location_refused" and "ingest.allowed_roots" in q["reason"]
    assert q["raw"] == "" and rep(result, "x").accepted == 0
    # a symlink inside the project that points out is refused the same way
    (tmp_path / "sneaky").symlink_to(outside, target_is_directory=True)
    linked = ingest(make_settings(sources=[{"name": "y", "type": "claimreview", "location": "sneaky"}]))
    assert [q["reason_code"] for q in qrows(linked) if q["source"] == "y"] == ["location_refused"]


def test_allowed_roots_lets_a_source_read_a_folder_outside_the_project(make_settings, tmp_path_factory):
    outside = tmp_path_factory.mktemp("datasets")
    (outside / "claims.json").write_text(json.dumps(review(1)))
    src = [{"name": "x", "type": "claimreview", "location": str(outside)}]
    assert rep(ingest(make_settings(sources=src, ingest={"allowed_roots": [str(outside)]})), "x").accepted == 1


def test_etc_is_refused(make_settings):
    result = ingest(make_settings(sources=[{"name": "x", "type": "claimreview", "location": "/etc/passwd"}]))
    (q,) = qrows(result)
    assert q["reason_code"] == "location_refused" and q["raw"] == ""


def test_a_file_over_the_byte_cap_is_refused_whole_unread(make_settings, tmp_path, monkeypatch):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a_big.json").write_bytes(b" " * 5000 + json.dumps(review(1)).encode())
    (tmp_path / "inbox" / "b_small.json").write_text(json.dumps(review(2)))
    result = ingest(make_settings(sources=INBOX, ingest={"max_file_bytes": 4096}))
    r = rep(result, "inbox")
    assert (r.seen, r.accepted, r.quarantined) == (2, 1, 1)
    (q,) = qrows(result, "file_too_large")
    assert q["ref"] == "a_big.json" and "4096-byte cap" in q["reason"]
    settings = make_settings(sources=INBOX, ingest={"max_file_bytes": 4096})
    assert rep(ingest(settings), "inbox").seen == 0  # the same file again: counted once, like a file read


# =========================================================================== bounded work
def test_an_html_page_with_forty_thousand_blocks_splits_in_linear_time(make_settings, tmp_path):
    from mmd.sources.claimreview import split_documents

    block = script({"@type": "ClaimReview", "claimReviewed": "x"}) + "\n<p>filler</p>\n"
    text = "<html><body>\n" + block * 40_000 + "</body></html>"
    started = time.perf_counter()
    chunks, fmt = split_documents(text)
    elapsed = time.perf_counter() - started
    assert fmt == "ld+json scripts" and len(chunks) == 40_000
    assert chunks[0][0] == "line 2" and chunks[-1][0] == "line 80000"  # the same line numbers as before
    assert elapsed < 5, elapsed  # was 74 s (quadratic) on the 2-core dev machine, now ~0.3 s


def test_unclosed_script_tags_do_not_make_splitting_quadratic():
    from mmd.sources.claimreview import split_documents

    text = '<script type="application/ld+json">{}' * 20_000
    started = time.perf_counter()
    chunks, fmt = split_documents(text)
    assert chunks == [] and time.perf_counter() - started < 5


# =========================================================================== MediaEval columns by name
HEADER_2016 = "post_id\tpost_text\tuser_id\tusername\timage_id(s)\ttimestamp\tlabel"
TS = "Mon Oct 29 10:00:00 +0000 2012"


def test_mediaeval_columns_are_read_by_the_headers_names(make_settings, tmp_path):
    (tmp_path / "posts" / "images").mkdir(parents=True)
    (tmp_path / "posts" / "images" / "sandy_fake_1.jpg").write_bytes(png_bytes())
    write_lines(tmp_path / "posts" / "test.txt", [HEADER_2016, f"p1\ta post\tu1\tsomeone\tsandy_fake_1\t{TS}\tfake"])
    result = ingest(make_settings(sources=[
        {"name": "posts", "type": "mediaeval", "file": "posts/test.txt", "images_dir": "posts/images", "split": "test"}]))
    (item,) = items(result)
    extra = json.loads(item["extra"])
    assert (extra["username"], extra["image_id"], extra["user_id"]) == ("someone", "sandy_fake_1", "u1")
    assert item["image_sha256"] and item["group"] == "sandy" and item["label"] == 1


def test_mediaeval_2015_aliases_and_a_header_it_cannot_map(make_settings, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_lines(inbox / "a_2015.tsv", ["tweetId\ttweetText\tuserId\timageId(s)\tusername\ttimestamp\tlabel",
                                       f"t1\tan old tweet\tu9\tboston_fake_3\tname\t{TS}\treal"])
    write_lines(inbox / "b_nameless.tsv", ["post_id\tpost_text\tuser_id\tusername\ttimestamp\tlabel",
                                           f"p1\ttext\tu1\tname\t{TS}\tfake", f"p2\ttext\tu1\tname\t{TS}\tfake"])
    write_lines(inbox / "c.tsv", [HEADER_2016, f"p3\tthird\tu3\tname3\tnepal_1\t{TS}\tfake"])
    result = ingest(make_settings(sources=INBOX))
    r = rep(result, "inbox")
    assert (r.seen, r.accepted, r.quarantined) == (3, 2, 1)
    (q,) = qrows(result, "bad_header")
    assert q["ref"] == "b_nameless.tsv" and "lacks image_id(s)" in q["reason"]
    got = {i["native_id"]: json.loads(i["extra"]) for i in items(result)}
    assert got["t1"]["image_ids"] == ["boston_fake_3"] and got["p3"]["username"] == "name3"


# =========================================================================== duplicates across splits
def _split_memes(meme_dir: Path) -> None:
    (meme_dir / "images" / "b.png").write_bytes(png_bytes(seed=5))
    write_lines(meme_dir / "train.jsonl", [meme(1), meme(2, image="b.png", text="other")])
    write_lines(meme_dir / "test.jsonl", [meme(101), meme(102, image="b.png", text="fresh", label=1)])


def test_cross_split_duplicates_are_reported_by_split(make_settings, meme_dir):
    _split_memes(meme_dir)
    result = ingest(make_settings(sources=[meme_source(files=["memes/train.jsonl", "memes/test.jsonl"])]))
    r = rep(result, "memes")
    assert (r.seen, r.accepted, r.duplicates) == (4, 3, 1)
    assert dict(r.cross_split_duplicates) == {"test<-train": 1} and not r.cross_split_kept
    report = json.loads(paths_report(result).read_text())["sources"][0]
    assert report["cross_split_duplicates"] == {"test<-train": 1}
    (d,) = pq.read_table(result.duplicates_path).to_pylist()
    assert "split train; this one: test" in d["reason"]


def test_a_split_kept_whole_keeps_its_repeats_and_flags_the_leak(make_settings, meme_dir):
    _split_memes(meme_dir)
    result = ingest(make_settings(sources=[meme_source(files=["memes/train.jsonl", "memes/test.jsonl"])],
                                  ingest={"keep_splits_whole": ["test"]}))
    r = rep(result, "memes")
    assert (r.seen, r.accepted, r.duplicates) == (4, 4, 0)
    assert dict(r.cross_split_duplicates) == dict(r.cross_split_kept) == {"test<-train": 1}
    by_native = {i["native_id"]: i for i in items(result)}
    assert sorted(i["split"] for i in by_native.values()) == ["test", "test", "train", "train"]
    leak = json.loads(by_native["m101"]["extra"])
    assert (leak["repeats_item"], leak["repeats_split"]) == (by_native["m1"]["id"], "train")


def paths_report(result: IngestResult) -> Path:
    return result.items_path.parents[2] / "reports" / "ingest.json"


# =========================================================================== a cycle with one poisoned file
def test_a_cycle_with_a_poisoned_inbox_file_completes_and_the_next_reads_nothing_twice(tmp_path):
    from mmd.config import merge_params
    from mmd.cycle import run_stage
    from mmd.demo import generate
    from tests.conftest import SMALL_CYCLE, default_params

    params = merge_params(default_params(), SMALL_CYCLE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(tmp_path / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    poison = settings.path("inbox") / "demo" / "claims" / "0_poison.json"
    poison.write_text("[" * 10_000 + "]" * 10_000)

    first = run_stage(settings, "ingest", use_dvc=False).result.to_dict()
    assert first["reconciled"] and first["totals"]["accepted"] > 0
    assert first["sources"][0]["quarantine_reasons"]["json_too_deep"] == 1
    validated = run_stage(settings, "validate", use_dvc=False).result.to_dict()
    assert validated["accepted"] > 0

    poison.unlink()
    second = run_stage(settings, "ingest", use_dvc=False).result.to_dict()
    (src,) = second["sources"]
    assert (src["in"], src["accepted"]) == (0, 0) and src["counters"]["unchanged_files"] >= 3
