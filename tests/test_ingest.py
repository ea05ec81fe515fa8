"""Ingest: idempotence, incrementality, stable ids, ClaimReview formats, ratings, images, watermarks."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mmd.config import load_settings
from mmd.ingest import run_ingest
from mmd.sources.base import rating_key

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def settings_at(root: Path, sources: list[dict], **sections: dict):
    """A params file in `root` (the repo's defaults, these sources) loaded as settings."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["sources"] = sources
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(root / "params.yaml")


INBOX = [{"name": "inbox", "type": "inbox", "path": "inbox"}]


def image_bytes(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (12, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def write_memes(folder: Path, records: list[dict], images: dict[str, bytes], name: str = "train.jsonl") -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for fname, data in images.items():
        (folder / "images" / fname).write_bytes(data)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def meme(i: int, label: str = "0", image: str | None = None, text: str | None = None) -> dict:
    return {"id": f"m{i}", "image": image or f"m{i}.png", "text": text or f"meme number {i}", "label": label}


def review(url: str | None, claim: str, rating: str, **extra) -> dict:
    r = {
        "@context": "https://schema.org",
        "@type": "ClaimReview",
        "claimReviewed": claim,
        "reviewRating": {"@type": "Rating", "alternateName": rating},
        "author": {"@type": "Organization", "name": "Test Desk"},
        "datePublished": "2024-03-01",
        **extra,
    }
    if url:
        r["url"] = url
    return r


def items(settings) -> list[dict]:
    return pq.read_table(settings.layout.items_ingested).to_pylist()


def only(result):
    (report,) = result.sources
    assert report.reconciled, report.to_dict()
    return report


@pytest.fixture
def inbox_settings(tmp_path):
    s = settings_at(tmp_path, INBOX)
    (tmp_path / "inbox").mkdir()
    return s


def fill_inbox(inbox: Path) -> None:
    """3 memes, 2 ClaimReviews, 2 posts."""
    write_memes(inbox / "memes", [meme(1, "0"), meme(2, "1"), meme(3, "0")],
                {f"m{i}.png": image_bytes((40 * i, 10, 10)) for i in (1, 2, 3)})
    (inbox / "claims").mkdir()
    (inbox / "claims" / "reviews.json").write_text(json.dumps([
        review("https://fc.example.org/a", "The moon is made of cheese", "False"),
        review("https://fc.example.org/b", "Water is wet on most days", "True"),
    ]))
    (inbox / "posts").mkdir()
    (inbox / "posts" / "images").mkdir()
    (inbox / "posts" / "images" / "flood_fake_1.jpg").write_bytes(image_bytes((1, 2, 3), "JPEG"))
    (inbox / "posts" / "posts.tsv").write_text(
        "post_id\tpost_text\tuser_id\timage_id(s)\tusername\ttimestamp\tlabel\n"
        "11\tLook at this flood\t5\tflood_fake_1\tu1\tMon Oct 01 12:00:00 +0000 2018\tfake\n"
        "12\tNo picture here\t6\tfire_real_2\tu2\tMon Oct 01 13:00:00 +0000 2018\treal\n"
    )


# ----------------------------------------------------------------------------- idempotence
def test_second_ingest_with_nothing_new_adds_nothing(inbox_settings, tmp_path):
    fill_inbox(tmp_path / "inbox")
    first = only(run_ingest(inbox_settings, show_progress=False))
    assert (first.seen, first.accepted, first.quarantined, first.duplicates) == (7, 7, 0, 0)
    p = inbox_settings.layout
    before_items = pq.read_table(p.items_ingested)
    before_q = pq.read_table(p.ingest_quarantine)

    second = run_ingest(inbox_settings, show_progress=False)
    rep = only(second)
    assert (rep.seen, rep.accepted, rep.quarantined, rep.duplicates, rep.skipped) == (0, 0, 0, 0, 0)
    assert rep.counters["unchanged_files"] == 3  # train.jsonl, reviews.json, posts.tsv
    assert second.total_items == 7
    assert pq.read_table(p.items_ingested).equals(before_items)
    assert pq.read_table(p.ingest_quarantine).equals(before_q)
    report = json.loads(p.ingest_report.read_text())
    assert report["totals"] == {"in": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "skipped": 0}
    assert report["total_items"] == 7


def test_new_files_in_the_inbox_add_exactly_those_items(inbox_settings, tmp_path):
    inbox = tmp_path / "inbox"
    fill_inbox(inbox)
    run_ingest(inbox_settings, show_progress=False)
    before = {r["id"] for r in items(inbox_settings)}

    write_memes(inbox / "more", [meme(10, "1"), meme(11, "0")],
                {"m10.png": image_bytes((200, 0, 0)), "m11.png": image_bytes((0, 200, 0))}, name="val.jsonl")
    (inbox / "claims" / "late.jsonld").write_text(json.dumps(review("https://fc.example.org/c", "Cats can fly at night", "Pants on Fire")))
    rep = only(run_ingest(inbox_settings, show_progress=False))
    assert (rep.seen, rep.accepted, rep.duplicates, rep.quarantined) == (3, 3, 0, 0)
    assert rep.counters["unchanged_files"] == 3

    rows = items(inbox_settings)
    assert len(rows) == 10
    new = [r for r in rows if r["id"] not in before]
    assert sorted(r["native_id"] or r["text"] for r in new if r["kind"] == "meme") == ["m10", "m11"]
    assert {r["split"] for r in new if r["kind"] == "meme"} == {"val"}  # from the file name
    (fc,) = [r for r in new if r["kind"] == "fact_check"]
    assert (fc["text"], fc["label"], fc["label_original"]) == ("Cats can fly at night", 1, "Pants on Fire")


def test_changed_file_is_reread_and_only_its_new_records_accepted(inbox_settings, tmp_path):
    inbox = tmp_path / "inbox"
    fill_inbox(inbox)
    run_ingest(inbox_settings, show_progress=False)
    train = inbox / "memes" / "train.jsonl"
    (inbox / "memes" / "images" / "m4.png").write_bytes(image_bytes((9, 99, 199)))
    train.write_text(train.read_text() + json.dumps(meme(4, "1")) + "\n")
    posts = inbox / "posts" / "posts.tsv"
    posts.write_text(posts.read_text() + "13\tA third post\t7\tflood_fake_1\tu3\tTue Oct 02 12:00:00 +0000 2018\tfake\n")

    rep = only(run_ingest(inbox_settings, show_progress=False))
    # both changed files re-read whole: 4 memes + 3 posts; the 5 known ones are duplicates
    assert (rep.seen, rep.accepted, rep.duplicates, rep.quarantined) == (7, 2, 5, 0)
    assert rep.counters["duplicate_id"] == 5
    assert rep.counters["unchanged_files"] == 1  # reviews.json
    rows = items(inbox_settings)
    assert len(rows) == 9
    assert len({r["id"] for r in rows}) == 9
    dupes = pq.read_table(inbox_settings.layout.duplicates).to_pylist()
    assert sorted(d["ref"] for d in dupes) == ["11", "12", "m1", "m2", "m3"]
    assert {d["reason_code"] for d in dupes} == {"duplicate_id"}


def test_item_ids_are_stable_across_runs_and_derive_from_source_and_content(tmp_path):
    ids = []
    for run in ("a", "b"):
        s = settings_at(tmp_path / run, INBOX)
        fill_inbox(tmp_path / run / "inbox")
        run_ingest(s, show_progress=False)
        ids.append({(r["kind"], r["native_id"] or r["text"]): r["id"] for r in items(s)})
    assert ids[0] == ids[1]
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids[0].values())

    # a source of another name: meme and post ids change (their ids are the source's own
    # ids within that source), fact-check ids do not (url + claim: the same review anywhere)
    s = settings_at(tmp_path / "c", [{"name": "dropbox", "type": "inbox", "path": "inbox"}])
    fill_inbox(tmp_path / "c" / "inbox")
    run_ingest(s, show_progress=False)
    other = {(r["kind"], r["native_id"] or r["text"]): r["id"] for r in items(s)}
    assert other.keys() == ids[0].keys()
    for key, value in other.items():
        assert (value == ids[0][key]) == (key[0] == "fact_check"), key


def test_claimreview_id_without_url_comes_from_the_normalised_text(tmp_path):
    s = settings_at(tmp_path, [{"name": "cr", "type": "claimreview", "location": "claims"}])
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "a.json").write_text(json.dumps(review(None, "Bananas  are blue", "False")))
    (tmp_path / "claims" / "b.json").write_text(json.dumps(review(None, "  Bananas are\nblue ", "False")))
    (tmp_path / "claims" / "c.json").write_text(json.dumps(review(None, "Bananas are green", "False")))
    rep = only(run_ingest(s, show_progress=False))
    assert (rep.seen, rep.accepted, rep.duplicates) == (3, 2, 1)
    assert rep.counters["duplicate_id"] == 1
    assert sorted(r["text"] for r in items(s)) == ["Bananas  are blue", "Bananas are green"]


# ----------------------------------------------------------------------------- ClaimReview formats
def test_every_claimreview_format_parses(tmp_path):
    folder = tmp_path / "claims"
    folder.mkdir()
    r = lambda n, rating="False": review(f"https://fc.example.org/{n}", f"Claim number {n} is here", rating)  # noqa: E731
    (folder / "single.json").write_text(json.dumps(r("single")))
    (folder / "list.jsonld").write_text(json.dumps([r("list1"), r("list2", "True")]))
    (folder / "graph.json").write_text(json.dumps({
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "name": "not a review"},
            r("graph1"),
            {"@type": "WebPage", "mainEntity": {**r("graph-nested"), "@type": ["http://schema.org/ClaimReview"]}},
        ],
    }))
    (folder / "page.html").write_text(
        "<!doctype html><html><head><title>checks</title>\n"
        f'<script type="application/ld+json">{json.dumps(r("html1"))}</script>\n'
        f"<script id='x' type='application/ld+json' >\n{json.dumps(r('html2', 'Mostly true'))}\n</script >\n"
        "</head><body><script>var notJson = 1;</script><p>hello</p></body></html>"
    )
    (folder / "lines.jsonl").write_text("\n".join(json.dumps(r(f"line{i}")) for i in range(3)) + "\n")
    (folder / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(r("bom")).encode())
    s = settings_at(tmp_path, [{"name": "cr", "type": "claimreview", "location": "claims"}])
    rep = only(run_ingest(s, show_progress=False))
    assert (rep.seen, rep.accepted, rep.quarantined) == (11, 11, 0)
    got = {r["url"].rsplit("/", 1)[1]: r for r in items(s)}
    assert sorted(got) == sorted(["single", "list1", "list2", "graph1", "graph-nested", "html1", "html2",
                                  "line0", "line1", "line2", "bom"])
    assert got["list2"]["label"] == 0 and got["html2"]["label"] == 0 and got["graph-nested"]["label"] == 1
    assert all(r["kind"] == "fact_check" and r["publisher"] == "Test Desk" for r in got.values())
    assert got["html2"]["text"] == "Claim number html2 is here"


def test_html_without_claimreview_and_bad_json_are_quarantined_not_dropped(tmp_path):
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "page.html").write_text("<html><body>no structured data</body></html>")
    (folder / "broken.json").write_text('{"@type": "ClaimReview", "claimReviewed": ')
    (folder / "other.json").write_text(json.dumps({"@type": "Article", "headline": "x"}))
    s = settings_at(tmp_path, [{"name": "cr", "type": "claimreview", "location": "claims"}])
    rep = only(run_ingest(s, show_progress=False))
    assert (rep.seen, rep.accepted, rep.quarantined) == (3, 0, 3)
    assert rep.reasons == {"no_claimreview": 2, "bad_json": 1}


# ----------------------------------------------------------------------------- ratings
def test_rating_key_is_case_and_whitespace_insensitive():
    assert rating_key("  Mostly   FALSE. ") == "mostly false"
    assert rating_key("Pants\ton\nFire!") == "pants on fire"
    assert rating_key("half-true") == "half-true"  # punctuation inside is kept, not guessed


def test_ratings_table_normalises_wording_and_counts_unknown(tmp_path):
    wording = {
        "a": "FALSE", "b": "  pants   ON fire! ", "c": "Mostly True.", "d": "half\ttrue", "e": "Four Pinocchios",
        "f": "Totally bogus", "g": "Unproven", "h": "unproven ", "i": "Needs context?",
    }
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "all.json").write_text(json.dumps(
        [review(f"https://fc.example.org/{k}", f"Claim {k} under review", v) for k, v in wording.items()]
    ))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    ratings = {**params["ingest"]["ratings"], "  TOTALLY   Bogus ": 1}
    s = settings_at(tmp_path, [{"name": "cr", "type": "claimreview", "location": "claims"}], ingest={"ratings": ratings})
    rep = only(run_ingest(s, show_progress=False))
    assert rep.accepted == 9
    labels = {r["url"][-1]: r["label"] for r in items(s)}
    assert labels == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 1, "f": 1, "g": None, "h": None, "i": None}
    assert dict(rep.unknown_ratings) == {"unproven": 2, "needs context?": 1}
    originals = {r["url"][-1]: r["label_original"] for r in items(s)}
    assert originals["b"] == "pants   ON fire!"  # the wording as published (trimmed), not the key
    report = json.loads(s.layout.ingest_report.read_text())
    assert report["sources"][0]["unknown_ratings"] == {"unproven": 2, "needs context?": 1}


# ----------------------------------------------------------------------------- images
def test_images_are_content_addressed_and_stored_once(inbox_settings, tmp_path):
    inbox = tmp_path / "inbox"
    same, other = image_bytes((5, 50, 150)), image_bytes((150, 50, 5))
    write_memes(inbox / "memes", [meme(1, "0", "a.png"), meme(2, "1", "b.png"), meme(3, "0", "c.png")],
                {"a.png": same, "b.png": same, "c.png": other})
    rep = only(run_ingest(inbox_settings, show_progress=False))
    assert rep.accepted == 3  # same bytes, other text and label: different memes
    stored = sorted(p for p in (inbox_settings.data_dir / "images").rglob("*") if p.is_file())
    digest = hashlib.sha256(same).hexdigest()
    assert [p.relative_to(inbox_settings.data_dir).as_posix() for p in stored] == sorted(
        [f"images/{digest[:2]}/{digest}.png",
         f"images/{hashlib.sha256(other).hexdigest()[:2]}/{hashlib.sha256(other).hexdigest()}.png"]
    )
    by_id = {r["native_id"]: r for r in items(inbox_settings)}
    assert by_id["m1"]["image_path"] == by_id["m2"]["image_path"] == f"images/{digest[:2]}/{digest}.png"
    assert by_id["m1"]["image_sha256"] == digest
    assert (by_id["m1"]["image_width"], by_id["m1"]["image_height"]) == (12, 9)
    assert (inbox_settings.data_dir / by_id["m1"]["image_path"]).read_bytes() == same

    # a later file naming the same bytes under yet another name stores nothing new
    write_memes(inbox / "memes2", [meme(4, "1", "d.png")], {"d.png": same}, name="val.jsonl")
    assert only(run_ingest(inbox_settings, show_progress=False)).accepted == 1
    assert len([p for p in (inbox_settings.data_dir / "images").rglob("*") if p.is_file()]) == 2


def test_exact_repeat_of_a_meme_under_another_id_is_a_recorded_duplicate(inbox_settings, tmp_path):
    inbox = tmp_path / "inbox"
    img = image_bytes((77, 77, 77))
    write_memes(inbox / "memes", [meme(1, "1", "a.png", "same words"), meme(2, "1", "b.png", "same  words "),
                                  meme(3, "0", "a.png", "same words")],
                {"a.png": img, "b.png": img})
    rep = only(run_ingest(inbox_settings, show_progress=False))
    # m2 repeats m1 (same bytes, same normalised text, same label); m3's label differs: kept
    assert (rep.accepted, rep.duplicates) == (2, 1)
    assert sorted(r["native_id"] for r in items(inbox_settings)) == ["m1", "m3"]
    (dup,) = pq.read_table(inbox_settings.layout.duplicates).to_pylist()
    m1 = next(r for r in items(inbox_settings) if r["native_id"] == "m1")
    assert (dup["reason_code"], dup["ref"], dup["item_id"]) == ("duplicate_image", "m2", m1["id"])


# ----------------------------------------------------------------------------- watermarks
def test_watermarks_are_persisted_per_file_digest(inbox_settings, tmp_path):
    inbox = tmp_path / "inbox"
    fill_inbox(inbox)
    result = run_ingest(inbox_settings, show_progress=False)
    marks_path = inbox_settings.data_dir / "state" / "watermarks.json"
    marks = json.loads(marks_path.read_text())
    assert set(marks) == {"inbox"}
    assert marks["inbox"]["last_run"] == result.started_at
    files = ["inbox/claims/reviews.json", "inbox/memes/train.jsonl", "inbox/posts/posts.tsv"]
    assert marks["inbox"]["files"] == {f: hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in files}

    train = inbox / "memes" / "train.jsonl"
    train.write_text(train.read_text() + "\n")  # a blank line: the file changed, no new record
    rep = only(run_ingest(inbox_settings, show_progress=False))
    assert (rep.seen, rep.accepted, rep.duplicates) == (3, 0, 3)
    marks = json.loads(marks_path.read_text())
    assert marks["inbox"]["files"]["inbox/memes/train.jsonl"] == hashlib.sha256(train.read_bytes()).hexdigest()


def test_a_source_that_raises_does_not_stop_the_others(tmp_path):
    s = settings_at(tmp_path, [
        {"name": "memes", "type": "memes", "files": ["in/train.jsonl"], "images_dir": "in/images"},
        {"name": "claims", "type": "claimreview", "location": "claims"},
    ])
    write_memes(tmp_path / "in", [meme(1), meme(2, "1")], {"m1.png": image_bytes((1, 1, 1)), "m2.png": image_bytes((2, 2, 2))})
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "c.json").write_text(json.dumps(review("https://fc.example.org/z", "Snow is hot today", "False")))
    # the image store cannot be written: storing the first meme image raises inside the source
    s.data_dir.mkdir(parents=True)
    (s.data_dir / "images").write_text("not a folder")

    result = run_ingest(s, show_progress=False)
    memes_rep, claims_rep = result.sources
    assert memes_rep.error and "Error" in memes_rep.error
    assert (memes_rep.seen, memes_rep.accepted, memes_rep.quarantined) == (1, 0, 1)
    assert memes_rep.reasons == {"source_error": 1}
    assert memes_rep.reconciled
    assert (claims_rep.seen, claims_rep.accepted, claims_rep.error) == (1, 1, None)
    assert [r["source"] for r in items(s)] == ["claims"]
    (q,) = pq.read_table(s.layout.ingest_quarantine).to_pylist()
    assert (q["source"], q["reason_code"], q["stage"]) == ("memes", "source_error", "ingest")
    assert "the source stopped" in q["reason"]
    marks = json.loads(s.layout.watermarks.read_text())
    assert "claims" in marks and "memes" not in marks  # the failed source is read again next time
    report = json.loads(s.layout.ingest_report.read_text())
    assert report["sources"][0]["error"] == memes_rep.error

    (s.data_dir / "images").unlink()
    memes_rep, claims_rep = run_ingest(s, show_progress=False).sources
    assert (memes_rep.accepted, memes_rep.error) == (2, None)
    assert claims_rep.seen == 0
    assert sorted(r["native_id"] or "" for r in items(s) if r["source"] == "memes") == ["m1", "m2"]
