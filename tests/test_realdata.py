"""The real connectors on the real public datasets in ../shared/datasets (read in place).

Expected values are computed here from the files themselves (or taken from the datasets'
README), never from the code under test. The whole module skips where the data is absent.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mmd.config import load_settings
from mmd.ingest import run_ingest
from mmd.items import normalise_text
from mmd.sources.mediaeval import event_of
from mmd.validate import run_validate
from tests.conftest import SHARED

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[1]


def settings_at(root: Path, sources: list[dict]):
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # the ratings table, limits, rules
    params["ingest"]["sources"] = sources
    params["ingest"]["allowed_roots"] = [str(SHARED)]  # the datasets are read in place, outside the project
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(root / "params.yaml")


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# =============================================================================== HarMeme
@pytest.fixture(scope="module")
def harmeme(shared, tmp_path_factory):
    root = shared / "harmeme"
    s = settings_at(tmp_path_factory.mktemp("harmeme"), [{
        "name": "harmeme", "type": "memes", "preset": "harmeme",
        "files": [str(root / "train.jsonl"), str(root / "val.jsonl")],
        "images_dir": str(root / "images"),
    }])
    result = run_ingest(s, show_progress=False)
    annotations = []  # in file order, as the release has them
    for split in ("train", "val"):
        for line in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                a = json.loads(line)
                a["split"] = split
                a["sha"] = sha_file(root / "images" / a["image"])
                annotations.append(a)
    return s, result, annotations


def harmful(a: dict) -> int:
    return 0 if a["labels"][0] == "not harmful" else 1


def test_harmeme_counts(harmeme):
    _, result, annotations = harmeme
    assert len(annotations) == 3190 == 3013 + 177  # README: train 3,013, val 177
    (rep,) = result.sources
    assert rep.error is None
    assert rep.seen == 3190
    assert rep.accepted + rep.duplicates == 3190
    assert (rep.quarantined, rep.skipped) == (0, 0)
    assert rep.reconciled


def test_harmeme_every_annotation_is_an_item_or_a_recorded_duplicate(harmeme):
    s, result, annotations = harmeme
    items = {r["native_id"]: r for r in table(result.items_path)}
    by_id = {r["id"]: r for r in items.values()}
    dupes = {d["ref"]: d for d in table(result.duplicates_path)}
    assert len(items) == result.sources[0].accepted and len(dupes) == result.sources[0].duplicates
    assert not items.keys() & dupes.keys()
    assert items.keys() | dupes.keys() == {a["id"] for a in annotations}

    # which annotations are exact repeats (image bytes, text, binary label) of an earlier one
    first_seen: dict[tuple, str] = {}
    repeats = set()
    for a in annotations:
        key = (a["sha"], normalise_text(a["text"]), harmful(a))
        if key in first_seen:
            repeats.add(a["id"])
        else:
            first_seen[key] = a["id"]
    assert set(dupes) == repeats
    assert len(repeats) == 4

    for a in annotations:
        if a["id"] in dupes:
            d = dupes[a["id"]]
            assert d["reason_code"] == "duplicate_image"
            kept = by_id[d["item_id"]]
            assert kept["native_id"] == first_seen[(a["sha"], normalise_text(a["text"]), harmful(a))]
            assert kept["image_sha256"] == a["sha"]
            assert normalise_text(kept["text"]) == normalise_text(a["text"])
            assert kept["label"] == harmful(a)
            continue
        item = items[a["id"]]
        assert (item["source"], item["kind"], item["split"]) == ("harmeme", "meme", a["split"])
        assert item["text"] == a["text"]
        assert (item["label"], item["label_original"]) == (harmful(a), a["labels"][0])
        extra = json.loads(item["extra"])
        assert extra.get("target") == (a["labels"][1:] or None)
        # content-addressed: the path names the bytes, the bytes are the release's
        assert item["image_sha256"] == a["sha"] == item["group"]
        assert item["image_path"] == f"images/{a['sha'][:2]}/{a['sha']}.jpg"
        stored = s.data_dir / item["image_path"]
        assert stored.is_file()
        assert sha_file(stored) == a["sha"]
        assert item["image_width"] > 0 and item["image_height"] > 0


def test_harmeme_repeats_with_conflicting_labels_are_both_kept(harmeme):
    _, result, annotations = harmeme
    kept = {r["native_id"] for r in table(result.items_path)}
    groups = defaultdict(list)
    for a in annotations:
        groups[(a["sha"], normalise_text(a["text"]))].append(a)
    conflicting = [g for g in groups.values() if len({harmful(a) for a in g}) > 1]
    assert len(conflicting) == 2  # the release has two such pairs
    for g in conflicting:
        assert {a["id"] for a in g} <= kept


def test_harmeme_label_balance_matches_readme(harmeme):
    _, result, annotations = harmeme
    split_and_label = {a["id"]: (a["split"], a["labels"][0]) for a in annotations}
    counts = Counter((r["split"], r["label_original"]) for r in table(result.items_path))
    counts.update(split_and_label[d["ref"]] for d in table(result.duplicates_path))  # duplicates counted back in
    assert counts == {
        ("train", "not harmful"): 1949, ("train", "somewhat harmful"): 882, ("train", "very harmful"): 182,
        ("val", "not harmful"): 116, ("val", "somewhat harmful"): 51, ("val", "very harmful"): 10,
    }
    binary = Counter((r["split"], r["label"]) for r in table(result.items_path))
    by_id = {r["id"]: r for r in table(result.items_path)}
    binary.update((split_and_label[d["ref"]][0], by_id[d["item_id"]]["label"]) for d in table(result.duplicates_path))
    assert binary == {("train", 0): 1949, ("train", 1): 882 + 182, ("val", 0): 116, ("val", 1): 51 + 10}


def test_harmeme_passes_validation(harmeme):
    s, result, _ = harmeme
    v = run_validate(s)
    assert v.passed, v.failures
    assert v.total == result.total_items == v.accepted + v.quarantined
    assert v.quarantined == 0
    (share,) = [c for c in v.batch_checks if c.expectation.startswith("expect_column_mean")]
    assert share.success and abs(share.observed - (1064 + 61 - 2) / 3186) < 1e-9


# =============================================================================== MediaEval
MEDIAEVAL_EVENTS = {
    "boston", "bringback", "columbianChemicals", "eclipse", "elephant", "garissa", "livr", "malaysia", "nepal",
    "passport", "pigFish", "samurai", "sandy", "sandyB", "sochi", "underwater",
}


@pytest.fixture(scope="module")
def mediaeval_posts(shared):
    """The posts as the file has them: id -> (text, label, image ids, first image present)."""
    root = shared / "mediaeval"
    lines = (root / "train.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["post_id", "post_text", "user_id", "image_id(s)", "username", "timestamp", "label"]
    posts = {}
    for line in lines[1:]:
        post_id, text, _, image_ids, _, timestamp, label = line.split("\t")
        ids = [i.strip() for i in image_ids.split(",") if i.strip()]
        present = next((i for i in ids if (root / "images" / f"{i}.jpg").is_file()), None)
        posts[post_id] = {"text": text, "label": label, "ids": ids, "present": present, "timestamp": timestamp}
    return posts


def mediaeval_run(shared, root: Path, missing_images: str):
    s = settings_at(root, [{
        "name": "mediaeval", "type": "mediaeval", "file": str(shared / "mediaeval" / "train.txt"),
        "images_dir": str(shared / "mediaeval" / "images"), "missing_images": missing_images,
    }])
    return s, run_ingest(s, show_progress=False)


@pytest.fixture(scope="module")
def mediaeval_text_only(shared, tmp_path_factory):
    return mediaeval_run(shared, tmp_path_factory.mktemp("mediaeval_text_only"), "text_only")


@pytest.fixture(scope="module")
def mediaeval_skip(shared, tmp_path_factory):
    return mediaeval_run(shared, tmp_path_factory.mktemp("mediaeval_skip"), "skip")


def test_mediaeval_file_itself(mediaeval_posts):
    # README: label fake / real 9,404 / 6,225, i.e. 15,629 posts under the header line
    assert len(mediaeval_posts) == 15629
    assert Counter(p["label"] for p in mediaeval_posts.values()) == {"fake": 9404, "real": 6225}
    with_image = sum(p["present"] is not None for p in mediaeval_posts.values())
    assert 13000 < with_image < 14000  # README: "about 13,300"


@pytest.mark.slow
def test_mediaeval_text_only_accounts_for_every_post(mediaeval_text_only, mediaeval_posts):
    s, result = mediaeval_text_only
    (rep,) = result.sources
    text_only = sum(p["present"] is None for p in mediaeval_posts.values())
    assert rep.error is None
    assert rep.seen == len(mediaeval_posts) == 15629
    assert (rep.quarantined, rep.skipped) == (0, 0)
    assert rep.accepted + rep.duplicates == rep.seen
    assert rep.counters["posts_without_images_text_only"] == text_only == 1868
    report = json.loads(s.layout.ingest_report.read_text())
    assert report["sources"][0]["counters"]["posts_without_images_text_only"] == 1868
    assert report["reconciled"] is True

    items = {r["native_id"]: r for r in table(result.items_path)}
    dupes = {d["ref"]: d for d in table(result.duplicates_path)}
    assert not items.keys() & dupes.keys()
    assert items.keys() | dupes.keys() == mediaeval_posts.keys()
    assert sum(r["image_path"] is None for r in items.values()) == text_only  # no text-only post is a duplicate

    labels = Counter(r["label"] for r in items.values())
    by_id = {r["id"]: r for r in items.values()}
    for ref, d in dupes.items():
        kept, post = by_id[d["item_id"]], mediaeval_posts[ref]
        assert d["reason_code"] == "duplicate_image"
        assert normalise_text(kept["text"]) == normalise_text(post["text"])
        assert kept["label"] == (post["label"] == "fake")
        assert json.loads(kept["extra"])["image_id"] is not None
        labels[kept["label"]] += 1
    assert labels == {1: 9404, 0: 6225}


@pytest.mark.slow
def test_mediaeval_items_carry_event_group_image_and_time(mediaeval_text_only, mediaeval_posts, shared):
    s, result = mediaeval_text_only
    assert event_of("sandy_fake_12") == "sandy"
    assert event_of("sandyB_real_09") == "sandyB"
    images = shared / "mediaeval" / "images"
    shas: dict[str, str] = {}
    seen_ids = Counter()
    for r in table(result.items_path):
        post = mediaeval_posts[r["native_id"]]
        assert (r["kind"], r["split"], r["label_original"]) == ("post", "train", post["label"])
        assert r["text"] == post["text"].strip()
        extra = json.loads(r["extra"])
        assert extra["image_ids"] == post["ids"]
        if post["present"] is None:
            assert r["image_path"] is None and "image_id" not in extra
            assert r["group"] == event_of(post["ids"][0])
            continue
        image_id = post["present"]
        seen_ids[image_id] += 1
        assert extra["image_id"] == image_id
        assert r["group"] in MEDIAEVAL_EVENTS and image_id.startswith(r["group"] + "_")
        if image_id not in shas:
            shas[image_id] = sha_file(images / f"{image_id}.jpg")
        assert r["image_sha256"] == shas[image_id]
        assert (s.data_dir / r["image_path"]).is_file()
    assert len(seen_ids) <= 413  # the images in the folder
    assert sum(seen_ids.values()) == sum(p["present"] is not None for p in mediaeval_posts.values()) - result.sources[0].duplicates
    expected = {"sandy_fake_43": "sandy", "sandy_real_59": "sandy", "nepal_25": "nepal", "boston_fake_35": "boston",
                "eclipse_08": "eclipse"}
    got = {r_id: r["group"] for r in table(result.items_path)
           if (r_id := json.loads(r["extra"]).get("image_id")) in expected}
    assert got == expected
    assert len({r["image_path"] for r in table(result.items_path) if r["image_path"]}) == len(set(shas.values()))
    # timestamps parsed: 'Wed Apr 17 18:57:37 +0000 2013'
    first = next(r for r in table(result.items_path) if r["native_id"] == "324597532548276224")
    assert first["published_at"] == "2013-04-17T18:57:37+00:00"
    assert first["group"] == "boston"


@pytest.mark.slow
def test_mediaeval_skip_counts_skipped_posts(mediaeval_skip, mediaeval_posts):
    _, result = mediaeval_skip
    (rep,) = result.sources
    text_only = sum(p["present"] is None for p in mediaeval_posts.values())
    assert rep.seen == 15629
    assert rep.seen == rep.accepted + rep.quarantined + rep.duplicates + rep.skipped
    assert rep.skipped == text_only == 1868
    assert rep.counters["posts_without_images_skipped"] == 1868
    assert rep.counters["skipped_no_image_present"] == 1868
    assert "posts_without_images_text_only" not in rep.counters
    assert rep.accepted + rep.duplicates == 15629 - 1868
    rows = table(result.items_path)
    assert len(rows) == rep.accepted and all(r["image_path"] for r in rows)
    kept = {r["native_id"] for r in rows} | {d["ref"] for d in table(result.duplicates_path)}
    assert kept == {pid for pid, p in mediaeval_posts.items() if p["present"] is not None}


# =============================================================================== ClaimReview
def test_datacommons_files_one_source_each(shared, tmp_path):
    folder = shared / "claimreview"
    s = settings_at(tmp_path, [
        {"name": "politifact", "type": "claimreview", "location": str(folder / "datacommons_fctchk_politifact_wapo.txt")},
        {"name": "weekly-standard", "type": "claimreview", "location": str(folder / "datacommons_weekly_standard.txt")},
    ])
    result = run_ingest(s, show_progress=False)
    pf, ws = result.sources
    assert (pf.seen, pf.accepted, pf.quarantined) == (3, 3, 0)
    assert (ws.seen, ws.accepted, ws.quarantined) == (3, 3, 0)
    assert dict(pf.unknown_ratings) == {"will military drills end?": 1}
    assert dict(ws.unknown_ratings) == {}
    rows = table(result.items_path)
    assert len(rows) == 6
    assert all(r["kind"] == "fact_check" and r["source_family"] == "claimreview" for r in rows)
    by_rating = defaultdict(list)
    for r in rows:
        by_rating[r["label_original"]].append(r)
    assert {k: [r["label"] for r in v] for k, v in by_rating.items()} == {
        "Pants on Fire": [1], "Half True": [0], "Will military drills end?": [None], "FALSE": [1, 1, 1],
    }
    (obama,) = by_rating["Pants on Fire"]
    assert obama["source"] == "politifact"
    assert obama["text"] == 'Quotes Michelle Obama as saying, "White folks are what’s wrong with America."'
    assert obama["publisher"] == "PolitiFact"
    assert obama["url"] == ("https://www.politifact.com/facebook-fact-checks/statements/2019/jan/03/"
                            "facebook-posts/did-michelle-obama-once-say-white-folks-are-whats-/")
    assert (obama["published_at"], obama["claim_date"]) == ("2019-01-03", "2019-01-01")
    extra = json.loads(obama["extra"])
    assert extra["claimant"] == "Facebook posts"
    assert extra["license"] == "https://creativecommons.org/licenses/by-nc/4.0/"
    kerry = next(r for r in by_rating["FALSE"] if r["text"] == "John Kerry to Get Jail Time")
    assert (kerry["source"], kerry["publisher"], kerry["published_at"], kerry["claim_date"]) == (
        "weekly-standard", "The Weekly Standard", "2018-06-08", "2018-06-08")
    assert kerry["url"] == "https://www.weeklystandard.com/holmes-lybrand/fact-check-john-kerry-to-get-jail-time"
    report = json.loads(s.layout.ingest_report.read_text())
    assert report["sources"][0]["unknown_ratings"] == {"will military drills end?": 1}


def test_claimreview_folder_source(shared, tmp_path):
    s = settings_at(tmp_path, [{"name": "folder", "type": "claimreview", "location": str(shared / "claimreview")}])
    result = run_ingest(s, show_progress=False)
    (rep,) = result.sources
    # the two Data Commons files (3 each) and the saved claims:search page (10)
    assert (rep.seen, rep.accepted, rep.quarantined) == (16, 16, 0)
    assert rep.unknown_ratings == {"will military drills end?": 1}
    families = Counter(r["source_family"] for r in table(result.items_path))
    assert families == {"claimreview": 6, "factcheck_api": 10}
    marks = json.loads(s.layout.watermarks.read_text())
    assert len(marks["folder"]["files"]) == 3
    again = run_ingest(s, show_progress=False).sources[0]
    assert (again.seen, again.counters["unchanged_files"]) == (0, 3)


def test_google_claims_search_page_as_a_file(shared, tmp_path):
    page_path = shared / "claimreview" / "google_factcheck_claims_search.json"
    page = json.loads(page_path.read_text(encoding="utf-8"))
    s = settings_at(tmp_path, [{"name": "page", "type": "claimreview", "location": str(page_path)}])
    result = run_ingest(s, show_progress=False)
    (rep,) = result.sources
    assert (rep.seen, rep.accepted, rep.quarantined) == (10, 10, 0)
    assert rep.unknown_ratings == {}
    rows = {r["text"]: r for r in table(result.items_path)}
    assert len(rows) == 10
    for claim in page["claims"]:
        review = claim["claimReview"][0]
        r = rows[claim["text"].strip()]
        assert r["label"] == 1  # False, FALSE, false, Misleading, False Context: all in the ratings table
        assert r["label_original"] == review["textualRating"]
        assert (r["url"], r["publisher"], r["language"]) == (review["url"], review["publisher"]["name"], "en")
        assert (r["published_at"], r["claim_date"]) == (review["reviewDate"], claim.get("claimDate"))
    assert Counter(r["label_original"] for r in rows.values()) == {
        "False": 5, "Misleading": 2, "false": 1, "FALSE": 1, "False Context": 1}
