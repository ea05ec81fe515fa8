"""Great Expectations validation: the demo passes; batch failures say what to do; bad rows are quarantined."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mmd.config import load_settings
from mmd.demo import generate
from mmd.ingest import run_ingest
from mmd.validate import ValidationFailed, run_validate

REPO = Path(__file__).resolve().parents[1]


def settings_at(root: Path, sources: list[dict], validate: dict | None = None):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["sources"] = sources
    if validate:
        params["validate"] = {**params["validate"], **validate}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(root / "params.yaml")


def kinds(**changes: dict) -> dict:
    """The repo's validate.kinds with some rules changed."""
    out = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["validate"]["kinds"])
    for kind, rules in changes.items():
        out[kind].update(rules)
    return out


def review(n: str, rating: str = "False", **fields) -> dict:
    r = {
        "@type": "ClaimReview",
        "claimReviewed": f"Claim {n} went around on social media",
        "url": f"https://fc.example.org/{n}",
        "author": {"name": "Test Desk"},
        "datePublished": "2024-05-01",
        "inLanguage": "en",
        "reviewRating": {"alternateName": rating},
        "itemReviewed": {"datePublished": "2024-04-28"},
    }
    r.update(fields)
    return r


def claims_settings(root: Path, reviews: list[dict], validate: dict | None = None):
    (root / "claims").mkdir(parents=True, exist_ok=True)
    (root / "claims" / "all.json").write_text(json.dumps(reviews))
    s = settings_at(root, [{"name": "claims", "type": "claimreview", "location": "claims"}], validate)
    rep = run_ingest(s, show_progress=False).sources[0]
    assert rep.accepted == len(reviews), rep.to_dict()
    return s


def validate_expecting_failure(s) -> str:
    with pytest.raises(ValidationFailed) as exc:
        run_validate(s)
    return str(exc.value)


# ----------------------------------------------------------------------------- the demo corpus
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    s = settings_at(root, [{"name": "inbox", "type": "inbox", "path": "inbox"}])
    generate(s.path("inbox"), s.params.demo)
    ingest = run_ingest(s, show_progress=False)
    return s, ingest, run_validate(s)


@pytest.mark.slow
def test_demo_corpus_passes_and_reconciles(demo):
    s, ingest, result = demo
    assert result.passed and result.failures == []
    assert result.total == ingest.total_items == ingest.accepted == 134
    assert result.total == result.accepted + result.quarantined
    # the one row made to pass ingest and fail validation: a meme whose text is blank
    assert result.quarantined == 1
    assert result.reasons == {"expect_column_value_lengths_to_be_between": 1}
    assert {k: v["in"] for k, v in result.per_kind.items()} == {"fact_check": 40, "meme": 61, "post": 33}
    assert sum(v["accepted"] for v in result.per_kind.values()) == result.accepted
    assert all(c.success for c in result.batch_checks)
    assert len(result.batch_checks) == 6  # row count and label share, per kind

    validated = pq.read_table(result.items_path).to_pylist()
    assert len(validated) == result.accepted
    (q,) = pq.read_table(result.quarantine_path).to_pylist()
    ingested = {r["id"]: r for r in pq.read_table(ingest.items_path).to_pylist()}
    assert ingested[q["item_id"]]["native_id"] == "demo_meme_empty_text"
    assert q["item_id"] not in {r["id"] for r in validated}
    assert (q["stage"], q["source"], q["reason_code"]) == ("validate", "inbox", "expect_column_value_lengths_to_be_between")
    assert "text_stripped" in q["reason"] and "min_value=1" in q["reason"]


@pytest.mark.slow
def test_reports_are_written(demo):
    s, _, result = demo
    report = json.loads((s.reports_dir / "validation.json").read_text())
    assert (report["in"], report["accepted"], report["quarantined"]) == (134, 133, 1)
    assert report["passed"] is True and report["reconciled"] is True
    assert report["quarantine_reasons"] == {"expect_column_value_lengths_to_be_between": 1}
    assert {c["expectation"].split("(")[0] for c in report["batch_checks"]} == {
        "expect_table_row_count_to_be_between", "expect_column_mean_to_be_between"}
    page = (s.reports_dir / "validation.html").read_text()
    assert "<h1>Validation: passed</h1>" in page
    assert "134 items in, 133 accepted, 1 quarantined" in page
    assert result.html_path == s.reports_dir / "validation.html"
    # Great Expectations' own Data Docs of the run, linked from the page: each kind's suite and its result
    docs = s.reports_dir / "validation-docs"
    assert 'href="validation-docs/index.html"' in page and (docs / "index.html").is_file()
    assert {p.name for p in (docs / "expectations").iterdir()} >= {"mmd-meme.html", "mmd-fact_check.html"}
    (meme_result,) = (docs / "validations" / "mmd-meme").rglob("*.html")
    shown = meme_result.read_text()
    assert "Expectation Validation Result" in shown and "Unsuccessful Expectations" in shown  # the one too-long text


# ----------------------------------------------------------------------------- batch-level failures
def test_empty_batch_fails_with_advice(tmp_path):
    s = settings_at(tmp_path, [{"name": "inbox", "type": "inbox", "path": "inbox"}])
    (tmp_path / "inbox").mkdir()
    assert run_ingest(s, show_progress=False).total_items == 0
    msg = validate_expecting_failure(s)
    assert "0 items, fewer than validate.min_items=1" in msg
    assert "mmd status" in msg and "mmd ingest" in msg
    report = json.loads((s.reports_dir / "validation.json").read_text())
    assert report["passed"] is False and report["in"] == 0
    assert "Validation: FAILED" in (s.reports_dir / "validation.html").read_text()


def test_label_share_outside_bounds_fails_with_advice(tmp_path):
    reviews = [review(str(i), "False") for i in range(4)] + [review("t", "True")]
    s = claims_settings(tmp_path, reviews, {"kinds": kinds(fact_check={"label_share": [0.1, 0.6]})})
    msg = validate_expecting_failure(s)
    assert "fact_check: expect_column_mean_to_be_between(label, min_value=0.1, max_value=0.6) failed (observed 0.8)" in msg
    assert "validate.kinds.<kind>.label_share" in msg and "label mapping" in msg
    report = json.loads((s.reports_dir / "validation.json").read_text())
    assert report["passed"] is False
    failed = [c for c in report["batch_checks"] if not c["success"]]
    assert [(c["kind"], c["observed"]) for c in failed] == [("fact_check", 0.8)]
    # the rows themselves were fine: none quarantined, all still written
    assert (report["accepted"], report["quarantined"]) == (5, 0)


def test_label_share_ignores_unlabeled_items(tmp_path):
    # unknown wording leaves items unlabeled; a share of no labels is not a finding
    reviews = [review(str(i), "Needs more context?") for i in range(3)]
    s = claims_settings(tmp_path, reviews, {"kinds": kinds(fact_check={"label_share": [0.4, 0.6]})})
    result = run_validate(s)
    assert result.passed and result.accepted == 3
    assert [c.expectation.split("(")[0] for c in result.batch_checks] == ["expect_table_row_count_to_be_between"]


def test_pass_rate_below_minimum_fails_with_advice(tmp_path):
    good = [review(str(i)) for i in range(2)]
    bad = [review(f"b{i}", url=f"not a url {i}") for i in range(3)]
    s = claims_settings(tmp_path, good + bad)
    msg = validate_expecting_failure(s)
    assert "only 40.0% of rows passed, below validate.min_pass_rate=0.5" in msg
    assert "quarantine reasons" in msg and "fix the source or its mapping" in msg
    # the failing rows are quarantined all the same, the passing ones written
    assert pq.read_table(s.data_dir / "validated" / "quarantine.parquet").num_rows == 3
    assert pq.read_table(s.data_dir / "validated" / "items.parquet").num_rows == 2


# ----------------------------------------------------------------------------- row-level failures
def jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    inbox = root / "inbox"
    (inbox / "claims").mkdir(parents=True)
    (inbox / "claims" / "claims.json").write_text(json.dumps([
        review("ok1"), review("ok2", "True"), review("ok3", inLanguage="en-GB"), review("ok4", inLanguage="pt_BR"),
        review("ok5", "Mostly false"), review("ok6", datePublished="2024-05-01T10:00:00Z"),
        review("lang", inLanguage="zz"),
        review("date", datePublished="sometime last spring, maybe"),
        review("url", url="htp:/fc.example.org/url"),
    ]))
    (inbox / "memes" / "images").mkdir(parents=True)
    memes = []
    for i, label in enumerate(["0", "1", "0", "1"]):
        (inbox / "memes" / "images" / f"m{i}.jpg").write_bytes(jpeg((60 * i, 30, 200 - 40 * i)))
        memes.append({"id": f"m{i}", "image": f"m{i}.jpg", "text": f"meme text {i}", "label": label})
    (inbox / "memes" / "train.jsonl").write_text("\n".join(json.dumps(m) for m in memes) + "\n")
    s = settings_at(root, [{"name": "inbox", "type": "inbox", "path": "inbox"}])
    ingest = run_ingest(s, show_progress=False)
    assert ingest.accepted == 13 and ingest.sources[0].quarantined == 0
    rows = pq.read_table(ingest.items_path).to_pylist()
    gone = next(r for r in rows if r["native_id"] == "m3")
    (s.data_dir / gone["image_path"]).unlink()  # the stored image disappears after ingest
    result = run_validate(s)
    by_id = {r["id"]: r for r in rows}
    q = {}
    for rec in pq.read_table(result.quarantine_path).to_pylist():
        r = by_id[rec["item_id"]]
        q[r["native_id"] if r["kind"] == "meme" else r["url"].rsplit("/", 1)[-1]] = rec
    return s, result, q


def test_bad_rows_are_quarantined_with_expectation_names(bad_rows):
    _, result, q = bad_rows
    assert result.passed
    assert (result.total, result.accepted, result.quarantined) == (13, 9, 4)
    assert sorted(q) == ["date", "lang", "m3", "url"]
    assert {k: v["reason_code"] for k, v in q.items()} == {
        "lang": "expect_column_values_to_be_in_set",
        "date": "expect_column_values_to_be_dateutil_parseable",
        "url": "expect_column_values_to_match_regex",
        "m3": "expect_column_values_to_be_in_set",
    }
    assert q["lang"]["reason"] == "expect_column_values_to_be_in_set(language_primary)"
    assert q["date"]["reason"] == "expect_column_values_to_be_dateutil_parseable(published_at)"
    assert q["url"]["reason"].startswith("expect_column_values_to_match_regex(url, regex=")
    assert q["m3"]["reason"] == "expect_column_values_to_be_in_set(image_ok, value_set=[True])"
    assert all(r["stage"] == "validate" and r["source"] == "inbox" for r in q.values())
    assert result.reasons == {
        "expect_column_values_to_be_in_set": 2,
        "expect_column_values_to_be_dateutil_parseable": 1,
        "expect_column_values_to_match_regex": 1,
    }
    assert result.per_kind == {"fact_check": {"in": 9, "accepted": 6, "quarantined": 3},
                               "meme": {"in": 4, "accepted": 3, "quarantined": 1}}


def test_quarantined_row_keeps_its_raw_item(bad_rows):
    _, _, q = bad_rows
    raw = json.loads(q["lang"]["raw"])
    assert raw["language"] == "zz" and raw["url"] == "https://fc.example.org/lang"
    assert raw["label"] == 1  # numbers stay numbers in the raw record
    raw = json.loads(q["m3"]["raw"])
    assert (raw["label"], raw["image_width"], raw["image_height"], raw["text"]) == (1, 16, 16, "meme text 3")


def test_validated_snapshot_holds_only_passing_rows(bad_rows):
    s, result, q = bad_rows
    kept = pq.read_table(s.data_dir / "validated" / "items.parquet").to_pylist()
    assert len(kept) == 9
    assert not {r["id"] for r in kept} & {rec["item_id"] for rec in q.values()}
    assert {r["language"] for r in kept if r["kind"] == "fact_check"} == {"en", "en-GB", "pt_BR"}
    page = (s.reports_dir / "validation.html").read_text()
    assert "expect_column_values_to_be_dateutil_parseable" in page


def test_validation_is_incremental_and_starts_over_when_its_rules_change(tmp_path):
    s = settings_at(tmp_path, [{"name": "inbox", "type": "inbox", "path": "inbox"}])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.json").write_text(json.dumps([review(str(i)) for i in range(6)]))
    run_ingest(s, show_progress=False)
    first = run_validate(s)
    assert (first.total, first.incremental, first.total_items) == (6, False, 6)
    (inbox / "b.json").write_text(json.dumps([review(str(i)) for i in range(6, 9)]))
    run_ingest(s, show_progress=False)
    second = run_validate(s)
    assert (second.total, second.incremental, second.total_items) == (3, True, 9)  # only the new rows
    assert (s.reports_dir / "validation-docs" / "snapshot-shares" / "index.html").is_file()  # the shares, over 9
    nothing = run_validate(s)
    assert (nothing.total, nothing.passed, nothing.total_items) == (0, True, 9)
    assert "Nothing new to validate" in (s.reports_dir / "validation-docs" / "index.html").read_text()
    params = yaml.safe_load(s.params_file.read_text())
    params.setdefault("validate", {}).setdefault("kinds", kinds())["fact_check"]["text_max_chars"] = 1999
    s.params_file.write_text(yaml.safe_dump(params))
    again = run_validate(load_settings(s.params_file))
    assert (again.total, again.incremental, again.total_items) == (9, False, 9)  # new rules: every row again


def test_an_incremental_batch_of_one_class_is_judged_by_the_shares_of_the_snapshot(tmp_path):
    s = settings_at(tmp_path, [{"name": "inbox", "type": "inbox", "path": "inbox"}])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.json").write_text(json.dumps([review(str(i), "False" if i % 2 else "True") for i in range(6)]))
    run_ingest(s, show_progress=False)
    assert run_validate(s).passed
    (inbox / "b.json").write_text(json.dumps([review("7", "True")]))  # one new row: a share of 0 on its own
    run_ingest(s, show_progress=False)
    second = run_validate(s)
    assert (second.total, second.incremental, second.passed) == (1, True, True)
    share = next(c for c in second.batch_checks if "label" in c.expectation)
    assert share.success and abs(share.observed - 3 / 7) < 1e-9
