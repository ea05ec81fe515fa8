"""Select: the k synthetic items that best match the live real distribution held in Qdrant.

Methods (`select.method`): `random`; `semsim` and `dissim` (Zeng et al., see
`mmd.synth.scoring`); and `hybrid`, which goes beyond the paper in one of two ways
(`select.hybrid.mode`):

- `proxy`: the paper found SemSim better on some targets and DisSim on others. So,
  per target, hold out a share of the real target, let both methods select against the
  rest, and keep the method whose selection lands closer (Sinkhorn divergence) to the
  held-out real points; the winner then selects against the whole target. The choice
  and both divergences are in the report.
- `rrf`: reciprocal rank fusion of the two rankings: an item both rank high wins.

Reads the real target (`select.target`, a filter on the items collection) and the
candidates (`select.candidates`, a filter on the synthetic collection) from the store,
page by page. Writes under `<data>/selected/`: selected.parquet (the pool rows with
rank and scores), features.parquet (their mixed vectors, the frame the drift gate
compares with the real data), scores.parquet (every candidate's scores); and
`reports/select.json`. With `scale.engine: dask` the candidates' scoring passes run in
shards on Dask workers (`mmd.scale.synth`); the store is still read here alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa

from mmd.config import SelectConfig, Settings
from mmd.formats.vectors import read_vectors, write_vectors
from mmd.items import now_iso, write_table
from mmd.synth.scoring import (
    DisSimConfig,
    SelectionError,
    check_pool,
    check_target,
    dissim_scores,
    potentials,
    reservoir,
    rrf,
    semsim_scores,
    sinkhorn_divergence,
    top_k,
)
from mmd.results import SelectReport as SelectResult

Chunks = Callable[[], Iterable[np.ndarray]]


@dataclass
class Choice:
    """What a method chose: candidate indices best first, and every score it computed."""

    method: str  # the method that ranked (for hybrid/proxy: the winner)
    order: np.ndarray
    score: np.ndarray  # the ranking score of every candidate (higher is better)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # semsim / dissim where computed
    details: dict = field(default_factory=dict)


def dissim_config(cfg: SelectConfig) -> DisSimConfig:
    d = cfg.dissim
    return DisSimConfig(epsilon=d.epsilon, sample=d.sample, max_iter=d.max_iter, tol=d.tol, chunk=d.chunk)


def _semsim(chunks: Chunks, target: np.ndarray, scoring) -> np.ndarray:
    return scoring.semsim(chunks(), target) if scoring is not None else semsim_scores(chunks(), target)


def _dissim(chunks: Chunks, target: np.ndarray, cfg: SelectConfig, scoring):
    return dissim_scores(chunks, target, dissim_config(cfg), cfg.seed,
                         scoring.potentials if scoring is not None else potentials)


def choose(method: str, chunks: Chunks, n: int, target: np.ndarray, k: int, cfg: SelectConfig,
           scoring=None) -> Choice:
    """Rank n candidates (streamed by `chunks`, callable more than once) against the real target; keep k.
    `scoring`: a `mmd.scale.synth.ShardedScoring` runs SemSim and DisSim's scoring pass on Dask workers."""
    if k < 1:
        raise SelectionError(f"the budget k must be at least 1, got {k}")
    check_pool(n)
    check_target(target)
    if method == "random":
        score = np.random.default_rng(cfg.seed).random(n)
        return Choice("random", top_k(score, k), score)
    if method == "semsim":
        s = _semsim(chunks, target, scoring)
        return Choice("semsim", top_k(s, k), s, {"semsim": s})
    if method == "dissim":
        d, potential = _dissim(chunks, target, cfg, scoring)
        return Choice("dissim", top_k(-d, k), -d, {"dissim": d},
                      {"sinkhorn_iterations": potential.iterations, "marginal_error": potential.marginal_error})
    if method != "hybrid":
        raise SelectionError(f"unknown selection method {method!r}: random, semsim, dissim or hybrid")
    if cfg.hybrid.mode == "rrf":
        s = _semsim(chunks, target, scoring)
        d, _ = _dissim(chunks, target, cfg, scoring)
        fused = rrf(s, d)
        return Choice("rrf", top_k(fused, k), fused, {"semsim": s, "dissim": d})
    return _proxy(chunks, n, target, k, cfg, scoring)


def _proxy(chunks: Chunks, n: int, target: np.ndarray, k: int, cfg: SelectConfig, scoring=None) -> Choice:
    held, fit = split_target(target, cfg.hybrid.holdout, cfg.seed)
    if len(held) < 2 or len(fit) < 2:
        # too few real points to hold any out: fall back to fusing both rankings
        choice = choose("hybrid", chunks, n, target, k, cfg.model_copy(update={"hybrid": cfg.hybrid.model_copy(
            update={"mode": "rrf"})}), scoring)
        choice.details["proxy"] = "fell back to rrf: too few real points to hold out"
        return choice
    s = _semsim(chunks, fit, scoring)
    d, _ = _dissim(chunks, fit, cfg, scoring)
    winner, divergence = proxy_winner(chunks, s, d, held, k, cfg.dissim.epsilon, cfg.seed)
    # the winner ranks against the whole target; both scores go out, for the people reading them
    s = _semsim(chunks, target, scoring)
    d, potential = _dissim(chunks, target, cfg, scoring)
    score = s if winner == "semsim" else -d
    return Choice(f"proxy:{winner}", top_k(score, k), score, {"semsim": s, "dissim": d},
                  {"proxy_divergence": divergence, "proxy_winner": winner, "proxy_holdout": len(held),
                   "sinkhorn_iterations": potential.iterations, "marginal_error": potential.marginal_error})


def split_target(target: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out share, the rest) of the real target, drawn at random."""
    order = np.random.default_rng(seed).permutation(len(target))
    n_held = int(round(len(target) * holdout))
    return target[order[:n_held]], target[order[n_held:]]


def proxy_winner(chunks: Chunks, semsim: np.ndarray, dissim: np.ndarray, held: np.ndarray, k: int, epsilon: float,
                 seed: int) -> tuple[str, dict[str, float]]:
    """Which method's top k (scored against the rest of the target) lands closer to the held-out real points."""
    picks = {"semsim": top_k(semsim, k), "dissim": top_k(-dissim, k)}
    divergence = {m: round(sinkhorn_divergence(_gather(chunks, idx), held, epsilon, seed=seed), 6)
                  for m, idx in picks.items()}
    return min(divergence, key=lambda m: (divergence[m], m)), divergence


def _gather(chunks: Chunks, indices: np.ndarray) -> np.ndarray:
    """The rows at these indices of the candidate stream, in index order."""
    wanted = np.sort(indices)
    out, offset, pos = [], 0, 0
    for chunk in chunks():
        end = offset + len(chunk)
        stop = np.searchsorted(wanted, end)
        if stop > pos:
            out.append(np.asarray(chunk)[wanted[pos:stop] - offset])
            pos = stop
        offset = end
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- the stage
@dataclass
class SelectReport:
    method: str
    ranked_by: str
    k: int
    selected: int
    candidates: int
    target: int
    target_used: int
    labels: dict
    generators: dict
    divergence_selected: float
    divergence_random: float
    details: dict
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _stream(store, name: str, filter: dict) -> tuple[list[str], Chunks]:
    """The ids of the matching points, and a callable that streams their vectors in the same order."""
    ids = store.ordered_ids(name, filter)

    def chunks() -> Iterable[np.ndarray]:
        seen = 0
        for page_ids, matrix, _ in store.vectors(name, filter):
            if page_ids != ids[seen : seen + len(page_ids)]:
                raise SelectionError(f"collection {name!r} changed while it was being read; run `mmd select` again")
            seen += len(page_ids)
            yield matrix

    return ids, chunks


def run_select(settings: Settings, method: str | None = None, k: int | None = None) -> SelectReport:
    """Score the synthetic pool against the real target in the store and write the selected set."""
    from mmd.formats.pool import pool_rows, sync_synthetic
    from mmd.index import ensure_indexed
    from mmd.scale.engine import open_engine
    from mmd.store import open_store

    cfg = settings.params.select
    method = method or cfg.method
    k = int(k or cfg.k)
    idx = settings.params.index
    out = settings.layout
    started = time.perf_counter()
    store = open_store(settings)
    try:
        ensure_indexed(settings, store)
        sync_synthetic(settings, store)
        if store.info(idx.synthetic_collection) is None:
            raise SelectionError("there is no synthetic pool yet: run `mmd synthesize` first")
        target_total = 0

        def target_stream():
            nonlocal target_total
            for page_ids, matrix, _ in store.vectors(idx.items_collection, cfg.target):
                target_total += len(page_ids)
                yield matrix

        target = reservoir(target_stream(), cfg.max_target, np.random.default_rng(cfg.seed))
        ids, chunks = _stream(store, idx.synthetic_collection, cfg.candidates)
        with open_engine(settings.params.scale) as engine:
            scoring = None
            if engine is not None:
                from mmd.scale.synth import ShardedScoring

                scale = settings.params.scale
                scoring = ShardedScoring(engine, ids, scale.shards, scale.torch_threads)
            choice = choose(method, chunks, len(ids), target, k, cfg, scoring)
    finally:
        store.close()

    chosen = [ids[i] for i in choice.order]
    rows = pool_rows(settings, chosen)
    pool_table, pool_vectors, encoder = read_vectors(out.pool_vectors)
    where = {i: n for n, i in enumerate(pool_table.column("id").to_pylist())}
    at = np.array([where[i] for i in chosen], dtype=np.int64)
    vec = pool_vectors[at]
    selected = pa.Table.from_pylist([
        {**row, "rank": r + 1, "score": float(choice.score[i]),
         **{name: float(col[i]) for name, col in choice.scores.items()}}
        for r, (row, i) in enumerate(zip(rows, choice.order))
    ])
    write_table(selected.replace_schema_metadata({"method": method, "ranked_by": choice.method, "k": str(k)}),
                out.selected)
    write_vectors(out.selected_features, chosen, [r["content_hash"] for r in rows],
                  pool_table.column("has_image").to_numpy(zero_copy_only=False)[at], vec, encoder)
    in_set = np.zeros(len(ids), bool)
    in_set[choice.order] = True
    write_table(pa.table({"id": ids, "score": choice.score, "selected": in_set,
                          **choice.scores}), out.selection_scores)

    candidates = np.array([where[i] for i in ids], dtype=np.int64)
    random_pick = pool_vectors[candidates[np.random.default_rng(cfg.seed).permutation(len(ids))[:k]]]
    report = SelectReport(
        method=method, ranked_by=choice.method, k=k, selected=len(chosen), candidates=len(ids),
        target=target_total, target_used=len(target),
        labels=_counts(r["label"] for r in rows), generators=_counts(r["generator"] for r in rows),
        divergence_selected=round(sinkhorn_divergence(vec, target, cfg.dissim.epsilon, seed=cfg.seed), 6),
        divergence_random=round(sinkhorn_divergence(random_pick, target, cfg.dissim.epsilon, seed=cfg.seed), 6),
        details=choice.details, seconds=round(time.perf_counter() - started, 3),
    )
    SelectResult.model_validate({"selected_at": now_iso(), **report.to_dict()}).write(out)
    return report


def chunks_from(vectors: np.ndarray, size: int = 4096) -> Chunks:
    """Candidates held in memory, as the re-callable chunk stream `choose` takes."""
    return lambda: (vectors[s : s + size] for s in range(0, len(vectors), size))


def _counts(values: Iterable) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))
