"""params.yaml: loads, refuses unknown or mistyped keys by name, resolves paths against its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmd.config import ConfigError, MEME_PRESETS, load_settings, parse_params
from mmd.ingest import run_ingest

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(tmp_path: Path, data) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, data))
    return str(exc.value)


def test_repo_params_load():
    s = load_settings(REPO / "params.yaml")
    p = s.params
    assert s.root == REPO
    assert s.params_file == REPO / "params.yaml"
    assert [(src.name, src.type, src.path) for src in p.ingest.sources] == [("inbox", "inbox", "inbox")]
    assert s.data_dir == REPO / "data" and s.reports_dir == REPO / "reports"
    assert p.ingest.http.retries == 3 and p.ingest.http.timeout_s == 10
    assert p.ingest.ratings["pants on fire"] == 1 and p.ingest.ratings["half true"] == 0
    assert set(p.ingest.ratings.values()) == {0, 1}
    assert set(p.validate_.kinds) == {"fact_check", "meme", "post"}
    assert p.validate_.kinds["meme"].image_required is True
    assert p.validate_.kinds["fact_check"].url_required is True
    assert p.validate_.kinds["meme"].label_share == (0.02, 0.98)
    assert p.validate_.min_pass_rate == 0.5
    assert (p.demo.memes, p.demo.claims, p.demo.posts) == (60, 40, 40)


def test_params_are_frozen():
    s = load_settings(REPO / "params.yaml")
    with pytest.raises(Exception):
        s.params.ingest.http.retries = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, key",
    [
        ({"paths": {"data": "d"}, "bogus": 1}, "bogus"),
        ({"ingest": {"http": {"timeout": 3}}}, "ingest.http.timeout"),
        ({"ingest": {"images": {"max_bytez": 3}}}, "ingest.images.max_bytez"),
        ({"validate": {"kinds": {"meme": {"label_sharee": [0, 1]}}}}, "validate.kinds.meme.label_sharee"),
        ({"ingest": {"sources": [{"name": "a", "type": "claimreview", "location": "x", "locaton": "y"}]}},
         "ingest.sources.0.claimreview.locaton"),
        ({"ingest": {"sources": [{"name": "inbox", "type": "inbox", "path": "i"},
                                 {"name": "m", "type": "memes", "files": ["x"], "images_dir": "i", "spec": {"labelz": {}}}]}},
         "ingest.sources.1.memes.spec.labelz"),
    ],
)
def test_unknown_key_is_an_error_naming_its_path(tmp_path, data, key):
    msg = error_of(tmp_path, data)
    assert str(tmp_path / "params.yaml") in msg
    assert f"{key}: unknown key" in msg


@pytest.mark.parametrize(
    "data, key, got",
    [
        ({"ingest": {"http": {"timeout_s": "fast"}}}, "ingest.http.timeout_s", "'fast'"),
        ({"ingest": {"http": {"retries": 99}}}, "ingest.http.retries", "99"),
        ({"validate": {"min_pass_rate": 1.5}}, "validate.min_pass_rate", "1.5"),
        ({"demo": {"memes": -1}}, "demo.memes", "-1"),
        ({"ingest": {"sources": [{"name": "a", "type": "claimreview", "location": "x", "enabled": "sometimes"}]}},
         "ingest.sources.0.claimreview.enabled", "'sometimes'"),
        ({"ingest": {"sources": [{"name": "m", "type": "mediaeval", "file": "f", "images_dir": "i", "missing_images": "drop"}]}},
         "ingest.sources.0.mediaeval.missing_images", "'drop'"),
        ({"ingest": {"sources": [{"name": "Has Spaces", "type": "inbox", "path": "i"}]}},
         "ingest.sources.0.inbox.name", "'Has Spaces'"),
    ],
)
def test_mistyped_value_names_the_key(tmp_path, data, key, got):
    msg = error_of(tmp_path, data)
    line = next(ln for ln in msg.splitlines() if ln.strip().startswith(key + ":"))
    assert f"(got {got})" in line


def test_unknown_source_type_is_named(tmp_path):
    msg = error_of(tmp_path, {"ingest": {"sources": [{"name": "x", "type": "rss", "url": "u"}]}})
    assert "ingest.sources.0" in msg and "'rss'" in msg and "claimreview" in msg


def test_missing_required_source_field_is_named(tmp_path):
    msg = error_of(tmp_path, {"ingest": {"sources": [{"name": "x", "type": "memes", "files": ["a.jsonl"]}]}})
    assert "ingest.sources.0.memes.images_dir: Field required" in msg


def test_duplicate_source_names_are_rejected(tmp_path):
    msg = error_of(tmp_path, {"ingest": {"sources": [
        {"name": "feed", "type": "claimreview", "location": "a"},
        {"name": "feed", "type": "inbox", "path": "b"},
        {"name": "ok", "type": "inbox", "path": "c"},
    ]}})
    assert "source names must be unique; repeated: feed" in msg


def test_factcheck_api_needs_query_or_publisher(tmp_path):
    msg = error_of(tmp_path, {"ingest": {"sources": [{"name": "g", "type": "factcheck_api", "language": "en"}]}})
    assert "ingest.sources.0.factcheck_api" in msg and "`query` or `publisher`" in msg
    for ok in ({"query": "flood"}, {"publisher": "politifact.com"}):
        p = parse_params({"ingest": {"sources": [{"name": "g", "type": "factcheck_api", **ok}]}})
        assert p.ingest.sources[0].api_key_env == "GOOGLE_FACTCHECK_API_KEY"


def test_ratings_must_be_binary(tmp_path):
    msg = error_of(tmp_path, {"ingest": {"ratings": {"false": 1, "meh": 2}}})
    assert "ratings['meh'] must be 0 or 1, got 2" in msg


def test_missing_file_bad_yaml_and_non_mapping_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "ingest: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_empty_file_gives_the_defaults(tmp_path):
    s = load_settings(write(tmp_path, ""))
    assert s.params.ingest.sources == ()
    assert s.params.validate_.min_items == 1
    assert s.data_dir == tmp_path / "data"


def test_meme_preset_and_spec(tmp_path):
    p = parse_params({"ingest": {"sources": [
        {"name": "h", "type": "memes", "files": ["t.jsonl"], "images_dir": "i", "preset": "harmeme"},
        {"name": "c", "type": "memes", "files": ["t.jsonl"], "images_dir": "i", "spec": {"text_field": "caption"}},
    ]}})
    assert p.ingest.sources[0].mapping() == MEME_PRESETS["harmeme"]
    assert p.ingest.sources[0].mapping().labels["very harmful"] == 1
    assert p.ingest.sources[1].mapping().text_field == "caption"


def test_relative_paths_resolve_against_the_params_folder(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "claims").mkdir()
    (conf / "claims" / "c.json").write_text(json.dumps({
        "@type": "ClaimReview", "claimReviewed": "The river ran backwards", "url": "https://fc.example.org/r",
        "reviewRating": {"alternateName": "False"},
    }))
    path = write(conf, {"paths": {"data": "store", "reports": "../out"},
                        "ingest": {"sources": [{"name": "c", "type": "claimreview", "location": "claims"}],
                                   "ratings": {"false": 1}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(path)
    assert s.root == conf
    assert s.data_dir.resolve() == conf / "store"
    assert s.reports_dir.resolve() == tmp_path / "out"
    assert s.path("claims").resolve() == conf / "claims"
    assert s.path("/abs/x") == Path("/abs/x")
    result = run_ingest(s, show_progress=False)
    assert result.accepted == 1
    assert (conf / "store" / "ingested" / "items.parquet").is_file()
    assert (tmp_path / "out" / "ingest.json").is_file()
    assert not (elsewhere / "store").exists() and not any(elsewhere.iterdir())


def test_relative_params_path_is_resolved_too(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", {"paths": {"data": "d"}})
    monkeypatch.chdir(tmp_path)
    s = load_settings("sub/params.yaml")
    assert s.root == (tmp_path / "sub").resolve()
    assert s.data_dir == (tmp_path / "sub" / "d").resolve()
