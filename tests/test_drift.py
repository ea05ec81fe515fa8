"""Drift checks against the real Evidently (no mocks), on small synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmd.evaluate.drift import (
    COULD_NOT_RUN,
    FAILED,
    PASSED,
    DriftCheck,
    DriftConfig,
    data_drift,
    embedding_drift,
    item_frame,
    score_drift,
)


def make_rows(n: int, seed: int, drifted: bool = False) -> list[dict]:
    """Item rows; `drifted` makes texts 5x longer, switches sources and flips the label share."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = int(rng.integers(4, 30)) * (5 if drifted else 1)
        has_image = rng.random() < 0.6
        rows.append({
            "id": f"{seed}-{i}",
            "text": " ".join(rng.choice(["claim", "vaccine", "meme", "the", "a", "viral"], size=words)),
            "kind": str(rng.choice(["meme", "post", "fact_check"])),
            "source": str(rng.choice(["snopes", "politifact"] if not drifted else ["reddit", "twitter"])),
            "language": rng.choice(["en", "de", None]),
            "label": int(rng.random() < (0.8 if drifted else 0.2)),
            "image_path": f"img/{i}.png" if has_image else None,
            "image_width": int(rng.integers(200, 800)) if has_image else None,
            "image_height": int(rng.integers(200, 800)) if has_image else None,
        })
    return rows


def frame(n: int, seed: int, drifted: bool = False):
    # image_stats=False: the image paths above do not exist; brightness is all NaN and skipped
    return item_frame(make_rows(n, seed, drifted), image_stats=False)


def assert_json_safe(check: DriftCheck) -> dict:
    d = check.to_dict()
    json.loads(json.dumps(d, allow_nan=False))
    return d


# ------------------------------------------------------------------------------ item_frame


def test_item_frame_images(tmp_path: Path):
    Image.new("RGB", (40, 20), (200, 200, 200)).save(tmp_path / "grey.png")
    rows = [
        {"id": "a", "text": "two words", "kind": "meme", "source": "s", "language": "en", "label": 1,
         "image_path": "grey.png", "image_width": None, "image_height": None},
        {"id": "b", "text": "gone", "kind": "meme", "source": "s", "language": None, "label": 0,
         "image_path": "missing.png", "image_width": 300, "image_height": 200},
        {"id": "c", "text": "", "kind": "post", "source": "s", "language": "de", "label": None,
         "image_path": None, "image_width": None, "image_height": None},
    ]
    df = item_frame(rows, data_dir=tmp_path)
    assert list(df.columns) == list(DriftConfig().columns)
    assert df["text_length"].tolist() == [9.0, 4.0, 0.0]
    assert df["word_count"].tolist() == [2.0, 1.0, 0.0]
    assert df["label"].tolist() == ["1", "0", "unknown"]
    assert df["language"].tolist() == ["en", "unknown", "de"]
    assert df["has_image"].tolist() == ["yes", "yes", "no"]
    assert df["image_brightness"][0] == pytest.approx(200, abs=1)
    assert math.isnan(df["image_brightness"][1]) and math.isnan(df["image_brightness"][2])
    assert (df["image_width"][0], df["image_height"][0]) == (40.0, 20.0)  # read from the file
    assert (df["image_width"][1], df["image_height"][1]) == (300.0, 200.0)  # from the row
    assert math.isnan(df["image_width"][2])
    assert df["image_brightness"].dtype == np.float64

    no_stats = item_frame(rows, data_dir=tmp_path, image_stats=False)
    assert no_stats["image_brightness"].isna().all()
    assert no_stats["has_image"].tolist() == ["yes", "yes", "no"]


# ------------------------------------------------------------------------------ data drift


def test_data_drift_same_vs_drifted(tmp_path: Path):
    cfg = DriftConfig()
    ref, same, drifted = frame(300, 1), frame(300, 2), frame(300, 3, drifted=True)

    ok = data_drift(ref, same, cfg, html=tmp_path / "same.html")
    assert ok.status == PASSED, ok.reasons
    assert "image_brightness" in ok.details["skipped"]
    assert ok.score is not None and ok.score <= cfg.drift_share

    bad = data_drift(ref, drifted, cfg, html=tmp_path / "drifted.html")
    assert bad.status == FAILED
    assert bad.score > cfg.drift_share
    for col in ("text_length", "word_count", "source", "label"):
        assert bad.details["columns"][col]["drifted"], col
        assert any(r.startswith(f"{col} drifted (") for r in bad.reasons), bad.reasons
    assert bad.reasons[-1].endswith(f"> {cfg.drift_share:g})")
    assert any("text_length drifted (ks p=" in r and "< 0.05" in r for r in bad.reasons)

    for check in (ok, bad):
        assert check.html and Path(check.html).stat().st_size > 10_000
        assert "<html" in Path(check.html).read_text(encoding="utf-8")[:2000].lower()
        d = assert_json_safe(check)
        assert d["details"]["columns"]["text_length"]["method"] == "ks"


def test_data_drift_too_few_rows():
    check = data_drift(frame(300, 1), frame(10, 2), DriftConfig())
    assert check.status == COULD_NOT_RUN
    assert check.score is None
    assert "too few rows" in check.reasons[0] and "10" in check.reasons[0]
    assert_json_safe(check)


def test_data_drift_unknown_method_could_not_run():
    check = data_drift(frame(60, 1), frame(60, 2), DriftConfig(num_method="no-such-test"))
    assert check.status == COULD_NOT_RUN
    assert "Evidently raised" in check.reasons[0]


def test_explicit_method_above_1000_rows():
    # Evidently's own default switches to Wasserstein / Jensen-Shannon above 1,000 rows
    ref, cur = frame(1100, 4), frame(1100, 5)
    check = data_drift(ref, cur, DriftConfig())
    cols = check.details["columns"]
    assert cols["text_length"]["method"] == "ks"
    assert cols["text_length"]["method_name"] == "K-S p_value"
    assert cols["image_width"]["method"] == "ks"
    assert cols["source"]["method"] == "chisquare"
    # distances are available by name; the comparison flips to "score >= threshold"
    dist = data_drift(ref, frame(1100, 6, drifted=True),
                      DriftConfig(num_method="wasserstein", num_threshold=0.1,
                                  cat_method="jensenshannon", cat_threshold=0.1, drift_share=0.3))
    assert dist.details["columns"]["text_length"]["method"] == "wasserstein"
    assert dist.details["columns"]["source"]["method"] == "jensenshannon"
    assert dist.details["columns"]["source"]["drifted"]
    assert dist.status == FAILED
    assert any("text_length drifted (wasserstein score=" in r for r in dist.reasons)


# ------------------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("method,threshold", [("model", 0.55), ("mmd", 0.015), ("distance", 1.0)])
def test_embedding_drift(method: str, threshold: float, tmp_path: Path):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 32))
    same = rng.normal(size=(400, 32))
    shifted = rng.normal(size=(400, 32)) + 0.5
    cfg = DriftConfig(embedding_method=method, embedding_threshold=threshold)

    ok = embedding_drift(ref, same, cfg)
    assert ok.status == PASSED, ok.reasons
    bad = embedding_drift(ref, shifted, cfg, html=tmp_path / "emb.html")
    assert bad.status == FAILED, bad.reasons
    assert bad.score > threshold >= ok.score
    assert bad.details["evidently_method"] == method
    page = Path(bad.html).read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and len(page) > 5_000
    assert_json_safe(bad)


def test_embedding_drift_sampling_is_seeded():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=(500, 16)), rng.normal(size=(500, 16)) + 0.2
    cfg = DriftConfig(max_rows=200, seed=7)
    a, b = embedding_drift(ref, cur, cfg), embedding_drift(ref, cur, cfg)
    assert a.score == b.score
    assert a.details["reference_sampled"] == 200 and a.details["reference_rows"] == 500


def test_embedding_drift_could_not_run():
    rng = np.random.default_rng(2)
    cfg = DriftConfig()
    few = embedding_drift(rng.normal(size=(400, 8)), rng.normal(size=(5, 8)), cfg)
    assert few.status == COULD_NOT_RUN and "too few rows" in few.reasons[0]
    dims = embedding_drift(rng.normal(size=(100, 8)), rng.normal(size=(100, 9)), cfg)
    assert dims.status == COULD_NOT_RUN and "dimensions differ" in dims.reasons[0]
    assert_json_safe(dims)


# ------------------------------------------------------------------------------ scores


def test_score_drift(tmp_path: Path):
    rng = np.random.default_rng(3)
    cfg = DriftConfig()
    ref = rng.beta(2, 5, 500)
    ok = score_drift(ref, rng.beta(2, 5, 500), cfg)
    assert ok.status == PASSED, ok.reasons
    bad = score_drift(ref, rng.beta(5, 2, 500), cfg, html=tmp_path / "scores.html")
    assert bad.status == FAILED
    assert bad.details["columns"]["score"]["method"] == "ks"
    assert bad.score < cfg.num_threshold < ok.score
    assert Path(bad.html).stat().st_size > 10_000
    assert_json_safe(bad)

    few = score_drift(ref, rng.beta(2, 5, 10), cfg)
    assert few.status == COULD_NOT_RUN
