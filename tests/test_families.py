"""Every detector family keeps one contract (train tiny -> save -> load -> the same scores -> register ->
serve), and a fourth family registered in one place is trained, gated and served by a whole cycle."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmd.config import load_settings
from mmd.items import ITEM_SCHEMA, read_table
from mmd.models import families

from . import plugin_family
from .conftest import SMALL_CYCLE, prepare_demo_project

SECTIONS = {k: v for k, v in SMALL_CYCLE.items() if k in ("cmc", "rgcl", "select", "gate", "evaluate")}


@pytest.fixture
def centroid_family():
    families.register(plugin_family.FAMILY)
    yield plugin_family.FAMILY
    families.unregister(plugin_family.NAME)


@pytest.fixture(scope="module")
def _selected(tmp_path_factory, tiny_open_clip):
    """A demo project through select (tiny open_clip), shared by the tests below."""
    from mmd.synth.generate import run_synthesize
    from mmd.synth.select import run_select

    root = tmp_path_factory.mktemp("families")
    settings = prepare_demo_project(root, tiny_open_clip, dict(memes=30, claims=12, posts=24), **SECTIONS)
    run_synthesize(settings)
    run_select(settings)
    return root


@pytest.fixture
def project(_selected, tmp_path):
    shutil.copytree(_selected, tmp_path / "p")
    return tmp_path / "p"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cmc", "rgcl", "centroid"])
def test_train_save_load_score_register_serve(family, project, centroid_family):
    from mmd import stages
    from mmd.evaluate.metrics import classification_metrics
    from mmd.models.data import training_rows
    from mmd.models.predict import run_predict
    from mmd.models.serving import load_predictor, serving_dir
    from mmd.registry import Registry

    settings = load_settings(project / "params.yaml")
    report = stages.get(f"train_{family}").run(settings)      # with only its declared params sections
    folder = settings.layout.model(family)
    assert report.model == family and report.serves in report.val and (folder / "config.json").is_file()
    assert settings.layout.train_report(family).is_file()

    rows = read_table(settings.layout.items, ITEM_SCHEMA).to_pylist()
    first = load_predictor(settings, family, folder, challenger=True).score(rows, settings.data_dir)[0]
    again = load_predictor(settings, family, folder, challenger=True).score(rows, settings.data_dir)[0]
    assert first.shape == (len(rows),) and np.all((first >= 0) & (first <= 1)) and np.array_equal(first, again)
    # the reloaded model scores validation as training did
    val = training_rows(settings)[0]["val"]
    by_id = dict(zip([r["id"] for r in rows], first))
    m = classification_metrics([r["label"] for r in val], [by_id[r["id"]] for r in val], settings.params.train.label_names)
    assert m["n"] == report.served().n and m["accuracy"] == pytest.approx(report.served().accuracy)

    reg = Registry(settings.layout.registry)
    version, created = reg.register(family, folder, {"data_cutoff": None}, {"holdout": None})
    reg.promote(family, version.number, "the contract test")
    assert created and serving_dir(settings, family) == version.path
    served = run_predict(settings, family)
    scores = dict(zip(*(pq.read_table(served.output).column(c).to_pylist() for c in ("id", "score"))))
    if family != "rgcl":  # RKC of the champion searches the serving collection, rebuilt from the same files
        np.testing.assert_allclose([scores[r["id"]] for r in rows], first, atol=1e-6)
    else:
        np.testing.assert_allclose([scores[r["id"]] for r in rows], first, atol=1e-4)


@pytest.mark.slow
def test_a_fourth_family_registered_in_one_place_is_trained_gated_and_served(project, centroid_family):
    import yaml

    from mmd.cycle import cycle_stages, run_stage
    from mmd.dvcfile import render
    from mmd.models.predict import run_predict

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["families"] = ["cmc", "centroid"]
    params["centroid"] = {"sharpness": 6.0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(project / "params.yaml")
    assert "train_centroid:" in render(settings.params.evaluate.families)
    ran = {s.name: run_stage(settings, s.name, use_dvc=False) for s in cycle_stages(settings)}
    assert "train_centroid" in ran and ran["train_centroid"].result.val["centroid"].n > 0
    gate = ran["gate"].result
    assert set(gate.families) == {"cmc", "centroid"} and gate.families["centroid"].action == "promote"
    assert (settings.layout.registry / "centroid" / "champion.json").is_file()
    served = run_predict(settings, "centroid")
    assert served.items > 0 and served.variant == "cosine"
    assert "CENTROID" in settings.layout.cycle_report.read_text()
