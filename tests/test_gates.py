"""The gate's decisions, check by check: each failure case, a check that cannot run, and all passing.

The figures are real: metrics from scores, drift from Evidently on built data sets."""

from __future__ import annotations

import numpy as np
import pytest

from mmd.evaluate import drift as D
from mmd.evaluate.gates import (COULD_NOT_RUN, FAILED, PASSED, SKIPPED, Check, GateConfig, champion_check, decide,
                                floors_check, from_drift, validation_check)
from mmd.evaluate.metrics import classification_metrics, paired_bootstrap

CFG = GateConfig(min_holdout=20, drift=D.DriftConfig(min_rows=20))
RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 200)


def scores(quality: float, seed: int = 1) -> np.ndarray:
    """Scores whose separation of Y grows with `quality` (0: none)."""
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + quality * (Y - 0.5) + rng.normal(0, 0.2, len(Y)), 0, 1)


GOOD = classification_metrics(Y, scores(0.6))
VALIDATION_OK = {"pass_rate": 0.99, "in": 100, "accepted": 99, "quarantined": 1,
                 "batch_checks": [{"kind": "meme", "expectation": "rows", "observed": 99, "success": True}]}


def _rows(n: int, text_words: int, source: str, label_share: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"{seed}-{i}", "text": " ".join(["word"] * int(rng.integers(text_words, text_words * 2))),
             "kind": "post", "source": source, "language": "en", "label": int(rng.random() < label_share),
             "image_path": None, "image_width": None, "image_height": None} for i in range(n)]


def _passing_drift() -> list[Check]:
    same = D.item_frame(_rows(150, 10, "feed", 0.5, 1), image_stats=False)
    again = D.item_frame(_rows(150, 10, "feed", 0.5, 2), image_stats=False)
    vec = np.random.default_rng(3).normal(size=(300, 16))
    return [from_drift(D.data_drift(same, again, CFG.drift)),
            from_drift(D.embedding_drift(vec[:150], vec[150:], CFG.drift)),
            from_drift(D.embedding_drift(vec[:150], vec[150:], CFG.drift, name="synthetic_vs_real")),
            from_drift(D.score_drift(scores(0.6)[:100], scores(0.6)[100:], CFG.drift))]


def _all_checks(**replace: Check) -> list[Check]:
    champion = classification_metrics(Y, scores(0.5, seed=2))
    checks = [validation_check(VALIDATION_OK, CFG), floors_check(GOOD, CFG), champion_check(GOOD, champion, CFG),
              *_passing_drift()]
    return [replace.get(c.name, c) for c in checks]


def test_every_check_passing_promotes():
    checks = _all_checks()
    assert [c.status for c in checks] == [PASSED] * 7, [(c.name, c.reasons) for c in checks]
    d = decide("cmc", checks, CFG, first_model=False)
    assert (d.status, d.action) == (PASSED, "promote")
    assert "every enforced check passed" in d.reasons[0]


def test_a_worse_challenger_is_held_with_the_figures():
    worse = classification_metrics(Y, scores(0.2))
    champion = classification_metrics(Y, scores(0.6, seed=2))
    delta = paired_bootstrap(Y, scores(0.2), scores(0.6, seed=2), resamples=200)
    check = champion_check(worse, champion, CFG, delta)
    assert check.status == FAILED and delta["delta"] < 0 and delta["ci"][1] < 0
    assert f"macro_f1 {worse['macro_f1']:.3f} is not at least the champion's {champion['macro_f1']:.3f}" in check.reasons[0]
    d = decide("cmc", _all_checks(champion=check), CFG, first_model=False)
    assert (d.status, d.action) == (FAILED, "hold") and d.reasons[0].startswith("champion: macro_f1")


def test_a_collapsed_class_fails_the_floors_and_the_champion_check():
    p = np.where(Y == 1, 0.9, 0.8)  # every item called label 1: label 0 has collapsed, AUROC is still perfect
    collapsed = classification_metrics(Y, p)
    floors = floors_check(collapsed, CFG)
    assert floors.status == FAILED and any("class 'real' has collapsed" in r for r in floors.reasons)
    # against a champion the collapse shows as a per-class drop, even when the primary metric is AUROC
    cfg = GateConfig(primary_metric="auroc")
    check = champion_check(collapsed, GOOD, cfg)
    assert check.status == FAILED and any("class 'real' F1 falls by" in r for r in check.reasons)


def test_failing_validation_holds():
    bad = validation_check({**VALIDATION_OK, "pass_rate": 0.7}, CFG)
    assert bad.status == FAILED and "70.0% is below 90.0%" in bad.reasons[0]
    batch = validation_check({**VALIDATION_OK, "batch_checks": [{"kind": "meme", "expectation": "label share",
                                                                 "observed": 1.0, "success": False}]}, CFG)
    assert batch.status == FAILED and "label share" in batch.reasons[0]
    assert decide("cmc", _all_checks(validation=bad), CFG, False).status == FAILED


def test_a_drifted_batch_fails_data_drift_naming_the_columns():
    reference = D.item_frame(_rows(150, 10, "feed", 0.2, 1), image_stats=False)
    drifted = D.item_frame(_rows(150, 60, "other-feed", 0.9, 2), image_stats=False)
    check = from_drift(D.data_drift(reference, drifted, CFG.drift))
    assert check.status == FAILED
    text = " ".join(check.reasons)
    assert "text_length" in text and "source" in text and "label" in text
    d = decide("rgcl", _all_checks(data_drift=check), CFG, False)
    assert d.status == FAILED and any(r.startswith("data_drift:") for r in d.reasons)


def test_a_synthetic_set_far_from_the_real_data_fails():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(200, 16))
    training = np.concatenate([real[:100], rng.normal(loc=2.0, size=(100, 16))])  # half synthetic, elsewhere
    check = from_drift(D.embedding_drift(training, real[100:], CFG.drift, name="synthetic_vs_real"))
    assert check.name == "synthetic_vs_real" and check.status == FAILED and check.figures["score"] > check.figures["threshold"]
    assert decide("cmc", _all_checks(synthetic_vs_real=check), CFG, False).action == "hold"


def test_a_check_that_cannot_run_says_so_and_holds():
    few = classification_metrics(Y[:10], scores(0.6)[:10])
    floors = floors_check(few, CFG)
    assert floors.status == COULD_NOT_RUN and "fewer than gate.min_holdout" in floors.reasons[0]
    tiny = from_drift(D.score_drift(np.array([0.2, 0.3]), np.array([0.4, 0.5]), CFG.drift))
    assert tiny.status == COULD_NOT_RUN
    d = decide("cmc", _all_checks(floors=floors), CFG, False)
    assert (d.status, d.action) == (COULD_NOT_RUN, "hold") and "floors could not run" in d.reasons[0]
    assert validation_check(None, CFG).status == COULD_NOT_RUN
    assert champion_check(GOOD, None, CFG, champion_error="ModelMismatch: another encoder").status == COULD_NOT_RUN


def test_report_mode_shows_a_failure_without_holding_and_off_drops_the_check():
    drifted = Check("data_drift", FAILED, ["text_length drifted"])
    cfg = GateConfig(checks={"data_drift": "report", "prediction_drift": "off"})
    d = decide("cmc", _all_checks(data_drift=drifted), cfg, False)
    assert (d.status, d.action) == (PASSED, "promote")
    assert [c for c in d.checks if c.name == "data_drift"][0].enforced is False
    assert "prediction_drift" not in [c.name for c in d.checks]


def test_the_first_model_is_promoted_on_the_floors():
    first = [validation_check(VALIDATION_OK, CFG), floors_check(GOOD, CFG), champion_check(GOOD, None, CFG, first_model=True)]
    first += [Check(n, SKIPPED, ["no champion yet"]) for n in ("data_drift", "embedding_drift", "prediction_drift")]
    d = decide("cmc", first, CFG, first_model=True)
    assert (d.status, d.action) == (PASSED, "promote") and "first model" in d.reasons[-1]
    weak = floors_check(classification_metrics(Y, scores(0.0, seed=5)), CFG)
    assert weak.status == FAILED
    assert decide("cmc", [weak, *first[2:]], CFG, first_model=True).action == "hold"


def test_unknown_checks_and_gate_promote_false():
    with pytest.raises(ValueError, match="unknown checks"):
        GateConfig(checks={"data_drfit": "enforce"})
    d = decide("cmc", _all_checks(), GateConfig(promote=False), False)
    assert (d.status, d.action) == (PASSED, "hold") and "gate.promote is false" in d.reasons[-1]
