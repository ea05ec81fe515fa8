"""SemSim, DisSim and their fusion on constructed cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mmd.synth.scoring import (
    DisSimConfig,
    SelectionError,
    calibrate,
    dissim_scores,
    ranks,
    real_mean,
    reservoir,
    rrf,
    semsim_scores,
    sinkhorn_divergence,
    top_k,
)

D = 16


def _cluster(center: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    x = center[None, :] + spread * rng.normal(size=(n, len(center)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _axis(i: int) -> np.ndarray:
    e = np.zeros(D, np.float32)
    e[i] = 1.0
    return e


def _chunks(x: np.ndarray, size: int = 7):
    return lambda: (x[s : s + size] for s in range(0, len(x), size))


def test_both_methods_pick_the_cluster_near_the_real_data():
    rng = np.random.default_rng(0)
    real = _cluster(_axis(0), 200, 0.15, rng)
    near = _cluster(_axis(0) + 0.3 * _axis(1), 40, 0.15, rng)
    far = _cluster(_axis(5), 60, 0.15, rng)
    pool = np.concatenate([far[:30], near, far[30:]])
    is_near = np.r_[np.zeros(30, bool), np.ones(40, bool), np.zeros(30, bool)]

    sem = semsim_scores(_chunks(pool)(), real)
    dis, potential = dissim_scores(_chunks(pool), real, DisSimConfig(epsilon=0.05))
    assert is_near[top_k(sem, 40)].all()
    assert is_near[top_k(dis, 40, higher_is_better=False)].all()
    assert (dis[is_near] < 0).all() and (dis[~is_near] > 0).all()  # calibrated: the sign says which way
    assert potential.marginal_error < 1e-4


def test_dissim_covers_both_modes_of_a_bimodal_target_where_semsim_collapses_them():
    rng = np.random.default_rng(1)
    a, b = _axis(0), _axis(1)
    real = np.concatenate([_cluster(a, 300, 0.1, rng), _cluster(b, 300, 0.1, rng)])
    near_a, near_b = _cluster(a, 100, 0.1, rng), _cluster(b, 100, 0.1, rng)
    middle = _cluster(a + b, 100, 0.1, rng)  # where the mean of the two modes points
    pool = np.concatenate([near_a, near_b, middle])
    group = np.repeat(np.array(["a", "b", "mid"]), 100)

    sem_pick = group[top_k(semsim_scores([pool], real), 100)]
    assert (sem_pick == "mid").mean() >= 0.9  # the mean sits between the modes
    dis, _ = dissim_scores(_chunks(pool), real, DisSimConfig(epsilon=0.05))
    dis_pick = group[top_k(dis, 100, higher_is_better=False)]
    assert (dis_pick == "mid").sum() == 0
    # per-point scores, not a balanced quota: both modes are covered, not exactly half each
    assert (dis_pick == "a").sum() >= 30 and (dis_pick == "b").sum() >= 30


def test_dissim_prefers_the_under_supplied_mode():
    # plenty of candidates near mode a, few near mode b: b's candidates are worth more
    rng = np.random.default_rng(2)
    a, b = _axis(0), _axis(1)
    real = np.concatenate([_cluster(a, 100, 0.1, rng), _cluster(b, 100, 0.1, rng)])
    pool = np.concatenate([_cluster(a, 90, 0.1, rng), _cluster(b, 10, 0.1, rng)])
    dis, _ = dissim_scores(_chunks(pool), real, DisSimConfig(epsilon=0.02))
    assert set(top_k(dis, 10, higher_is_better=False)) == set(range(90, 100))


def test_sampled_potential_matches_the_exact_one_in_ranking():
    rng = np.random.default_rng(3)
    real = _cluster(_axis(0), 300, 0.4, rng)
    pool = np.concatenate([_cluster(_axis(0), 600, 0.4, rng), _cluster(_axis(2), 600, 0.4, rng)])
    exact, _ = dissim_scores(_chunks(pool, 100), real, DisSimConfig(sample=len(pool)))
    sampled, _ = dissim_scores(_chunks(pool, 100), real, DisSimConfig(sample=600), seed=4)
    top_exact = set(top_k(exact, 200, False))
    top_sampled = set(top_k(sampled, 200, False))
    assert len(top_exact & top_sampled) / 200 > 0.85
    assert np.corrcoef(exact, sampled)[0, 1] > 0.95


def test_k_larger_than_the_pool_returns_the_whole_pool_in_order():
    scores = np.array([0.1, 0.9, 0.5], np.float32)
    assert top_k(scores, 10).tolist() == [1, 2, 0]
    assert top_k(scores, 10, higher_is_better=False).tolist() == [0, 2, 1]
    assert top_k(scores, 0).tolist() == []
    assert top_k(np.array([1.0, 1.0, 1.0, 0.0]), 2).tolist() == [0, 1]  # ties by position
    assert ranks(np.array([0.2, 0.8, 0.5])).tolist() == [3, 1, 2]


def test_an_empty_real_set_is_a_clear_error():
    pool = np.eye(3, dtype=np.float32)
    empty = np.zeros((0, 3), np.float32)
    with pytest.raises(SelectionError, match="real target set is empty"):
        semsim_scores([pool], empty)
    with pytest.raises(SelectionError, match="real target set is empty"):
        dissim_scores(_chunks(pool), empty)
    with pytest.raises(SelectionError, match="pool is empty"):
        dissim_scores(_chunks(np.zeros((0, 3), np.float32)), pool)
    with pytest.raises(SelectionError, match="mean is zero"):
        real_mean(np.array([[1.0, 0.0], [-1.0, 0.0]]))


def test_calibration_rrf_reservoir():
    f = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(calibrate(f), [1 - 2.5, 2 - 2.0, 3 - 1.5])
    # ranks without item 3: semsim [1, 3, 2], dissim (lower better) [3, 1, 2]; item 3 is best in both
    fused = rrf(np.array([0.9, 0.1, 0.5, 0.95]), np.array([0.3, -1.0, 0.0, -2.0]))
    assert fused.argmax() == 3
    assert fused[0] == pytest.approx(fused[1]) and fused[0] > fused[2]
    rng = np.random.default_rng(0)
    x = np.arange(1000, dtype=np.float32)[:, None]
    hits = np.zeros(1000)
    for seed in range(200):
        hits[reservoir((x[s : s + 37] for s in range(0, 1000, 37)), 50, np.random.default_rng(seed)).ravel().astype(int)] += 1
    assert hits.sum() == 200 * 50 and hits.min() > 0  # every row can be drawn
    assert abs(hits[:500].sum() - hits[500:].sum()) / hits.sum() < 0.1  # no bias to the start or end
    assert reservoir(iter([x[:3]]), 10, rng).shape == (3, 1)


def test_sinkhorn_divergence_is_small_for_the_same_distribution():
    rng = np.random.default_rng(5)
    x, y = _cluster(_axis(0), 200, 0.3, rng), _cluster(_axis(0), 200, 0.3, rng)
    z = _cluster(_axis(3), 200, 0.3, rng)
    assert abs(sinkhorn_divergence(x, x)) < 1e-6
    # two samples of one distribution are closer than samples of two (16-d: sampling noise is not small)
    assert sinkhorn_divergence(x, y) < 0.5 * sinkhorn_divergence(x, z)


def test_the_kernel_domain_fit_matches_pots_log_domain_solver():
    import ot
    import torch

    from mmd.synth.scoring import _cost, fit_potential

    rng = np.random.default_rng(6)
    x = _cluster(_axis(0), 300, 0.5, rng)
    y = np.concatenate([_cluster(_axis(0), 100, 0.3, rng), _cluster(_axis(1), 150, 0.3, rng)])
    ours = fit_potential(x, y, DisSimConfig(epsilon=0.05, tol=1e-10, max_iter=3000))
    a, b = torch.full((300,), 1 / 300, dtype=torch.float64), torch.full((250,), 1 / 250, dtype=torch.float64)
    _, log = ot.sinkhorn(a, b, _cost(torch.from_numpy(x), torch.from_numpy(y)).double(), 0.05,
                         method="sinkhorn_log", numItermax=3000, stopThr=1e-10, log=True)
    theirs = 0.05 * (log["log_v"] - torch.log(b))
    diff = (ours.g - theirs).numpy()
    assert np.ptp(diff) < 1e-6 * np.ptp(theirs.numpy())  # equal up to the constant potentials are defined up to
    small = fit_potential(x[:100], y[:100], DisSimConfig(epsilon=0.005, max_iter=200))  # the log-domain path
    assert np.isfinite(small.g.numpy()).all()
