"""How well a synthetic instance fits a real distribution: SemSim, DisSim, and their fusion.

Zeng et al. (EMNLP 2024 Findings) select synthetic image-text pairs that resemble the
target real data. Two scores:

- SemSim: cosine between a candidate's mixed-modal feature and the mean feature of the
  real set. One pass, one dot product per candidate: it streams over any number of
  candidates in chunks.
- DisSim: the calibrated gradient of the entropic optimal-transport distance between the
  candidate pool and the real set with respect to each candidate's mass (LAVA, Just et
  al. 2023): the candidate's dual potential minus the mean potential of the others.
  Negative means "more of this point brings the pool closer to the real data".

DisSim at scale: the full problem would need the n x m cost matrix (100k x 10k floats is
4 GB). Instead the real-side potential g is fitted by Sinkhorn (POT, log domain) between
a uniform sample of the candidates and the real set, and every candidate's potential is
then its soft c-transform against g,

    f(x) = -eps * log sum_j b_j exp((g_j - C(x, y_j)) / eps),

which is exactly how Sinkhorn defines f at the sample points and is the standard
extrapolation of the potential to new points (Genevay et al. 2016; Feydy et al. 2019).
When the pool fits in the sample the result is the exact Sinkhorn potential. Memory is
the fit's sample x m kernel plus chunk x m for scoring, whatever n is; candidates stream.

Vectors are unit rows (the store's cosine space); the cost is the squared Euclidean
distance between unit vectors, 2 - 2 cos, in [0, 4].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

# the constant of reciprocal rank fusion (Cormack et al. 2009): damps the very top ranks
RRF_K = 60


class SelectionError(ValueError):
    """Selection cannot run on these inputs (no real data, no candidates, a bad budget)."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def check_pool(n: int) -> None:
    """An empty synthetic pool is a clear error."""
    if n == 0:
        raise SelectionError("the synthetic pool is empty: there is nothing to select from (run `mmd synthesize`)")


def check_target(target: np.ndarray) -> np.ndarray:
    """The real target as unit rows; an empty one is a clear error."""
    target = np.asarray(target)
    if target.ndim != 2 or len(target) == 0:
        raise SelectionError(
            "the real target set is empty: selection needs real items to compare the synthetic pool with "
            "(check select.target and that `mmd index` has indexed real items)"
        )
    return _unit(target)


# --------------------------------------------------------------------------- SemSim
def real_mean(target: np.ndarray) -> np.ndarray:
    """The unit mean feature of the real set, the one vector SemSim compares against."""
    mean = check_target(target).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-8:
        raise SelectionError("the real target's features cancel out (their mean is zero): SemSim has no direction")
    return (mean / norm).astype(np.float32)


def cosines(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """SemSim of some candidates: the cosine of each row to the real mean (a unit vector)."""
    return (_unit(rows) @ mean).astype(np.float32)


def semsim_scores(chunks: Iterable[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Cosine of every candidate (streamed in chunks of rows) to the real mean; higher is closer."""
    mean = real_mean(target)
    out = [cosines(chunk, mean) for chunk in chunks if len(chunk)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --------------------------------------------------------------------------- DisSim
@dataclass(frozen=True)
class DisSimConfig:
    epsilon: float = 0.05  # entropic regularisation, in units of the cost (2 - 2 cos)
    sample: int = 10_000  # candidates the real-side potential is fitted on
    max_iter: int = 1000
    tol: float = 1e-5  # mass misplaced on the real side (L1, of a total of 1) at which Sinkhorn stops
    chunk: int = 4096  # candidates scored at once: memory is chunk x (real points)


@dataclass(frozen=True)
class Potential:
    """The fitted real side of the OT problem: enough to score any candidate."""

    target: torch.Tensor  # (m, d) unit rows
    log_b: torch.Tensor  # (m,) log masses of the real points (uniform)
    g: torch.Tensor  # (m,) the real-side dual potential
    epsilon: float
    iterations: int
    marginal_error: float


def _cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (2.0 - 2.0 * (x @ y.T)).clamp_min_(0.0)


def _sinkhorn(x: torch.Tensor, y: torch.Tensor, epsilon: float, max_iter: int, tol: float):
    """Uniform-mass entropic OT between point sets: (f, g) standard potentials, iterations, marginal error.

    The cost lies in [0, 4], so the Gibbs kernel exp(-C / eps) stays within float64 for
    eps >= 0.01: Sinkhorn then runs in the kernel domain on one in-place n x m matrix
    with matrix-vector products (about 20x faster than the log domain and a third of its
    memory, benchmarks/bench_select.py). Below that, POT's log-domain solver takes over.
    """
    n, m = len(x), len(y)
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64)
    if epsilon >= 0.01:
        kernel = _cost(x, y).double().mul_(-1.0 / epsilon).exp_()
        u = torch.ones(n, dtype=torch.float64)
        err, it = float("inf"), 0
        while it < max_iter:
            v = b / (kernel.T @ u)
            u = a / (kernel @ v)
            it += 1
            if it % 10 == 0 or it == max_iter:
                # rows hold exactly after the u-update; the columns show the mass still misplaced (L1)
                err = float(torch.linalg.vector_norm(v * (kernel.T @ u) - b, 1))
                if err < tol:
                    break
        log_u, log_v = torch.log(u), torch.log(v)
    else:
        import ot

        _, log = ot.sinkhorn(a, b, _cost(x, y).double(), epsilon, method="sinkhorn_log", numItermax=max_iter,
                             stopThr=tol, log=True, warn=False)
        log_u, log_v, it = log["log_u"], log["log_v"], int(log.get("niter", 0)) + 1
        err = float(log["err"][-1]) if log.get("err") else float("nan")
    # POT's and our plan is diag(u) K diag(v); in the standard form P = a b exp((f + g - C) / eps)
    return epsilon * (log_u - torch.log(a)), epsilon * (log_v - torch.log(b)), it, err


def fit_potential(sample: np.ndarray, target: np.ndarray, cfg: DisSimConfig = DisSimConfig()) -> Potential:
    """Sinkhorn between a candidate sample and the real set; returns the real-side potential."""
    target = check_target(target)
    check_pool(len(sample))
    y = torch.from_numpy(target)
    _, g, it, err = _sinkhorn(torch.from_numpy(_unit(sample)), y, cfg.epsilon, cfg.max_iter, cfg.tol)
    log_b = torch.full((len(y),), -float(np.log(len(y))), dtype=torch.float64)
    return Potential(target=y, log_b=log_b, g=g, epsilon=cfg.epsilon, iterations=it, marginal_error=err)


def potentials(potential: Potential, chunks: Iterable[np.ndarray]) -> np.ndarray:
    """Each candidate's dual potential f (soft c-transform against the real side), chunk by chunk."""
    eps = potential.epsilon
    shifted = (potential.g / eps + potential.log_b).float()
    out = []
    for chunk in chunks:
        if not len(chunk):
            continue
        # float32 in place: one chunk x m buffer; the logits' scale (|C - g| / eps < 1e3) keeps ~1e-4 precision
        logits = _cost(torch.from_numpy(_unit(chunk)), potential.target).mul_(-1.0 / eps).add_(shifted)
        out.append((-eps * torch.logsumexp(logits, dim=1)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def calibrate(f: np.ndarray) -> np.ndarray:
    """LAVA's calibrated gradient: f_i minus the mean potential of the other points."""
    n = len(f)
    if n < 2:
        return np.zeros(n)
    return f - (f.sum() - f) / (n - 1)


def reservoir(chunks: Iterable[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of `size` rows from a stream of chunks, holding at most size + chunk rows.

    Every row gets a random key and the rows with the smallest keys are kept: a uniform
    sample without replacement, in stream order.
    """
    rows: np.ndarray | None = None
    keys = np.zeros(0)
    order = np.zeros(0, np.int64)
    seen = 0
    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float32)
        if not len(chunk):
            continue
        new_keys = rng.random(len(chunk))
        rows = chunk if rows is None else np.concatenate([rows, chunk])
        keys = np.concatenate([keys, new_keys])
        order = np.concatenate([order, np.arange(seen, seen + len(chunk))])
        seen += len(chunk)
        if len(keys) > size:
            keep = np.sort(np.argpartition(keys, size - 1)[:size])
            rows, keys, order = rows[keep], keys[keep], order[keep]
    if rows is None:
        return np.zeros((0, 0), np.float32)
    return rows[np.argsort(order, kind="stable")]


def dissim_scores(
    chunks: Callable[[], Iterable[np.ndarray]], target: np.ndarray, cfg: DisSimConfig = DisSimConfig(), seed: int = 0,
    score_pass: Callable[[Potential, Iterable[np.ndarray]], np.ndarray] = potentials,
) -> tuple[np.ndarray, Potential]:
    """Calibrated OT gradients of every candidate (lower = brings the pool closer to the real set).

    `chunks` is called twice (a pass to sample, a pass to score), so candidates may stream
    from a file or a store without ever being held together. `score_pass` computes the scoring
    pass's potentials (`potentials` here; `mmd.scale.synth` shards it over Dask workers).
    """
    sample = reservoir(chunks(), cfg.sample, np.random.default_rng(seed))
    potential = fit_potential(sample, target, cfg)
    f = score_pass(potential, _rechunk(chunks(), cfg.chunk))
    return calibrate(f), potential


def _rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]


# --------------------------------------------------------------------------- choosing
def top_k(scores: np.ndarray, k: int, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the k best scores, best first; ties broken by position so the result is stable."""
    n = len(scores)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    key = -np.asarray(scores, dtype=np.float64) if higher_is_better else np.asarray(scores, dtype=np.float64)
    if k < n:
        part = np.argpartition(key, k - 1)[:k]
        # argpartition leaves ties at the boundary unordered: take them by position
        cut = key[part].max()
        part = np.concatenate([np.flatnonzero(key < cut), np.flatnonzero(key == cut)])[:k]
    else:
        part = np.arange(n)
    return part[np.lexsort((part, key[part]))]


def ranks(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """1-based rank of every score (1 = best), ties by position."""
    order = top_k(scores, len(scores), higher_is_better)
    out = np.empty(len(scores), np.int64)
    out[order] = np.arange(1, len(scores) + 1)
    return out


def rrf(semsim: np.ndarray, dissim: np.ndarray) -> np.ndarray:
    """Reciprocal rank fusion of SemSim (higher better) and DisSim (lower better); higher is better."""
    return 1.0 / (RRF_K + ranks(semsim, True)) + 1.0 / (RRF_K + ranks(dissim, False))


def sinkhorn_divergence(x: np.ndarray, y: np.ndarray, epsilon: float = 0.05, max_points: int = 2000,
                        seed: int = 0) -> float:
    """The Sinkhorn divergence S(x, y) = OT(x, y) - (OT(x, x) + OT(y, y)) / 2, on samples of at most max_points.

    Used to report how close a selection is to the real set, and by the hybrid's proxy.
    """
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    xs = torch.from_numpy(_unit(x[rng.permutation(len(x))[:max_points]] if len(x) > max_points else x))
    ys = torch.from_numpy(_unit(y[rng.permutation(len(y))[:max_points]] if len(y) > max_points else y))

    def ot_eps(p: torch.Tensor, q: torch.Tensor) -> float:
        # the entropic OT value is the dual objective <a, f> + <b, g> at the optimum
        f, g, _, _ = _sinkhorn(p, q, epsilon, 1000, 1e-7)
        return float(f.mean() + g.mean())

    return ot_eps(xs, ys) - 0.5 * (ot_eps(xs, xs) + ot_eps(ys, ys))
