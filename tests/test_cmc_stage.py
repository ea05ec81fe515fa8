"""The CMC stage on a small demo project (tiny open_clip): train, save, report, predict, ablation, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mmd.cli import app


@pytest.fixture(scope="module")
def _selected(tmp_path_factory, tiny_open_clip):
    """Demo items through ingest, validate, embed (tiny open_clip), index, synthesize and select, once."""
    from mmd.synth.generate import run_synthesize
    from mmd.synth.select import run_select

    from .conftest import prepare_demo_project

    root = tmp_path_factory.mktemp("cmc")
    settings = prepare_demo_project(
        root, tiny_open_clip, dict(memes=30, claims=12, posts=24), select={"k": 20},
        cmc=dict(variant="cmc", epochs=4, fusion_epochs=4, hidden=32, ablation=["text", "cmc"], nce={"feat_dim": 16, "k": 16},
                 block={"mm_dim": 32, "chunks": 4, "rank": 3}))
    run_synthesize(settings)
    run_select(settings)
    return root


@pytest.fixture
def project(_selected, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(_selected, root)

    def _make(**sections) -> Path:
        params = yaml.safe_load((root / "params.yaml").read_text())
        for name, values in sections.items():
            params[name].update(values)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return root / "params.yaml"

    return _make


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_train_saves_the_model_its_metrics_and_plots(project):
    params = project()
    root = params.parent
    cache = _files(root / "data" / "embeddings")
    result = _cli("train", "--model", "cmc", "--params", str(params))
    assert result.exit_code == 0, result.output
    # the embed stage's output (its cache included) is only read: DVC sees nothing changed upstream
    assert _files(root / "data" / "embeddings") == cache
    report = json.loads((root / "reports" / "train_cmc.json").read_text())
    assert report["variant"] == "cmc" and set(report["best_epochs"]) == {"networks", "fusion"}
    data = report["data"]
    assert data["train"]["synthetic"] > 0 and data["val"]["items"] > 0 and data["test"]["items"] > 0
    # every labelled real item is in exactly one split (or was dropped for sharing a held-out picture)
    items = pq.read_table(root / "data" / "validated" / "items.parquet").to_pandas()
    labelled = int(items.label.notna().sum())
    assert data["train"]["items"] - data["train"]["synthetic"] + data["val"]["items"] + data["test"]["items"] \
        + data["dropped_image_shared_with_heldout"] == labelled
    assert report["serves"] == "cmc"
    m = report["val"]["cmc"]
    assert set(m) >= {"accuracy", "per_class", "macro_f1", "auroc", "ece"} and set(m["per_class"]) == {"real", "fake"}
    folder = root / "data" / "models" / "cmc"
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder"].startswith("open_clip:") and config["variant"] == "cmc" and config["temperature"] > 0
    assert {p.name for p in (root / "reports" / "cmc").iterdir()} == {"history.png", "evaluation-val.png", "evaluation-test.png"}
    assert "train cmc (cmc)" in result.stdout


def test_predict_scores_new_items_and_quarantines_bad_lines(project, tmp_path):
    from PIL import Image

    params = project(cmc={"variant": "text_distill"})
    assert _cli("train", "--params", str(params)).exit_code == 0
    Image.new("RGB", (48, 48), (200, 20, 20)).save(tmp_path / "pic.png")
    lines = [json.dumps({"id": "a", "text": "shocking: the bridge collapsed overnight", "image": "pic.png"}),
             json.dumps({"id": "b", "text": "council opens the new library", "label": 0}),
             "{not json",
             json.dumps({"id": "c", "image": "pic.png"}),
             json.dumps({"id": "d", "text": "a picture that is not there", "image": "gone.png"})]
    src = tmp_path / "new.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.parquet"
    result = _cli("predict", "--params", str(params), "--input", str(src), "--output", str(out))
    assert result.exit_code == 0, result.output
    scores = pq.read_table(out).to_pandas().set_index("id")
    assert list(scores.index) == ["a", "b", "d"]
    assert ((scores.score >= 0) & (scores.score <= 1)).all() and (scores.variant == "text_distill").all()
    assert scores.loc["a", "has_image"] and not scores.loc["d", "has_image"]  # a missing picture: text only
    assert scores.loc["b", "label"] == 0
    quarantined = pq.read_table(tmp_path / "quarantine.parquet").to_pandas()
    assert sorted(quarantined.reason_code) == ["bad_json", "missing_field"]
    # the same item scores the same again, and the scores are the loaded model's own
    again = tmp_path / "again.parquet"
    assert _cli("predict", "--params", str(params), "--input", str(src), "--output", str(again)).exit_code == 0
    np.testing.assert_array_equal(pq.read_table(again).column("score").to_numpy(), scores.score.to_numpy())


def test_predict_defaults_to_the_validated_items_with_metrics(project):
    params = project(cmc={"variant": "text"})
    assert _cli("train", "--params", str(params)).exit_code == 0
    result = _cli("predict", "--params", str(params))
    assert result.exit_code == 0, result.output
    root = params.parent
    scores = pq.read_table(root / "data" / "predictions" / "cmc.parquet").to_pandas()
    assert len(scores) == pq.read_metadata(root / "data" / "validated" / "items.parquet").num_rows
    assert "macro-F1" in result.stdout


def test_the_ablation_command_writes_the_table(project):
    params = project()
    result = _cli("train", "--params", str(params), "--ablation", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    root = params.parent
    table = (root / "reports" / "cmc-ablation.md").read_text().splitlines()
    assert table[0].startswith("| variant | accuracy | fake P")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["text", "cmc"]
    assert "±" in table[2]  # two seeds: mean ± std
    report = json.loads((root / "reports" / "cmc-ablation.json").read_text())
    assert report["scored_on"] == "test" and report["seeds"] == [0, 1] and len(report["rows"][0]["runs"]) == 2


def test_training_without_a_selection_uses_real_items_and_says_so(project):
    params = project()
    shutil.rmtree(params.parent / "data" / "selected")
    assert _cli("train", "--params", str(params)).exit_code == 0
    report = json.loads((params.parent / "reports" / "train_cmc.json").read_text())
    assert report["data"]["train"]["synthetic"] == 0 and "mmd select" in report["data"]["synthetic_missing"]


def test_clear_errors(project):
    params = project(train={"items": {"source": "nowhere"}})
    result = _cli("train", "--params", str(params))
    assert result.exit_code == 1 and "no labelled items" in result.output
    assert _cli("train", "--params", str(params), "--variant", "nope").exit_code == 2
    params = project(train={"items": {}})
    result = _cli("predict", "--params", str(params))  # nothing trained yet in this copy
    assert result.exit_code == 1 and "mmd train" in result.output
    assert _cli("train", "--params", str(params), "--variant", "text").exit_code == 0
    params = project(embed={"open_clip": {"model": "RN50", "pretrained": None}})
    result = _cli("predict", "--params", str(params))
    assert result.exit_code == 1 and "retrain" in result.output
