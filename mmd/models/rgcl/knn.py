"""Hard-negative mining and the retrieval-based kNN classifier (RKC).

Mining: for every training example, its pseudo-gold positive (the nearest same-label
example) and its hard negatives (the nearest opposite-label examples), by cosine between
the current embeddings g; an example is never its own neighbour. Two ways:
- `mine_store`: the embeddings go into a vector-store collection (ids = item ids, payload
  = label) and each example searches it with a label filter (its two nearest, itself
  dropped);
- `mine_exact`: a chunked matmul + max / top-k in torch, per label. Both give the same answer (exact search).
- `mine_batch` (rgcl.mining_query: batch, the authors' code): at every step, the batch's
  current embeddings search the refresh's embeddings of the whole training set, their own
  rows included, within a window of nearest neighbours.

RKC: the K nearest labelled embeddings of a query vote: score = sum w_k y_k / sum w_k, with
rank weights w_k = K - k + 1 (k = 1 is the nearest; the paper; neighbours tied in
similarity share their mean weight), uniform weights, or the cosine similarity (clipped
at 0); or (rank_similarity, the authors' code) each votes +-1 times its cosine with rank
weights, score = (1 + sum w_k (2 y_k - 1) cos_k / sum w_k) / 2, so that a near neighbour
counts more than a far one of the same rank. `rkc_scores` computes it by brute force; `rkc_from_hits`
from a vector-store search whose payloads carry `label`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class Mined:
    positives: np.ndarray   # (N,) index of each example's positive (itself only if it has no same-label peer)
    negatives: np.ndarray   # (N, H) indices of its hard negatives


def n_negatives(labels: np.ndarray, wanted: int) -> int:
    """No more hard negatives than the smaller class can give."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    return int(min(wanted, counts.min()))


# similarities held at once: rows per chunk x N columns (float32); at 100k items, 4096 rows would be 1.6 GB
CHUNK_ELEMENTS = 1 << 26


def default_chunk(n: int) -> int:
    """Query rows per matmul: up to 4096, fewer where N columns would make the block big."""
    return int(min(4096, max(256, CHUNK_ELEMENTS // max(n, 1))))


def mine_exact(embeddings: np.ndarray, labels: np.ndarray, hard_negatives: int, chunk: int | None = None,
               device: str | torch.device = "cpu", queries: np.ndarray | None = None) -> Mined:
    """Exact mining in torch: the rows are grouped by label once, so a query's positive is the max over its
    own label's block of columns (itself excluded) and its hard negatives the top-k over the other blocks of
    the same similarity row: one matmul over all N rows, a max and a top-k. No N-wide label mask is built,
    compared or filled: at 100k items those passes over the similarities cost more than the matmul itself
    (benchmarks/bench_mining.py). `queries`: the item indices to mine for (default all; the result is in
    their order), e.g. a sample when measuring."""
    emb = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32), device=device)
    y = np.asarray(labels, np.int64)
    n = len(emb)
    h = n_negatives(y, hard_negatives)
    queries = np.arange(n) if queries is None else np.asarray(queries, np.int64)
    pos = queries.copy()  # no same-label peer: itself
    neg = np.empty((len(queries), h), np.int64)
    order = np.argsort(y, kind="stable")  # grouped by label, each group in item order (ties resolve as before)
    grouped = emb[torch.as_tensor(order, device=device)]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    chunk = chunk or default_chunk(n)
    for c in np.unique(y[queries]):
        lo, hi = np.searchsorted(y[order], c, "left"), np.searchsorted(y[order], c, "right")
        others = [(a, b) for a, b in ((0, lo), (hi, n)) if b > a]
        slots = np.flatnonzero(y[queries] == c)
        for start in range(0, len(slots), chunk):
            at = slots[start : start + chunk]
            rows = torch.as_tensor(rank[queries[at]], device=device)
            sims = grouped[rows] @ grouped.T
            block = sims[:, lo:hi]
            block[torch.arange(len(rows), device=device), rows - lo] = float("-inf")  # never itself
            best, arg = block.max(dim=1)
            found = (~torch.isinf(best)).cpu().numpy()
            pos[at[found]] = order[lo + arg.cpu().numpy()[found]]
            if h:
                neg[at] = order[_top_columns(sims, others, h).cpu().numpy()]
    return Mined(pos, neg)


def _top_columns(sims: torch.Tensor, spans: list[tuple[int, int]], k: int) -> torch.Tensor:
    """Each row's k largest columns among the column spans [a, b) (one span for two labels)."""
    if len(spans) == 1:
        a, b = spans[0]
        return sims[:, a:b].topk(k, dim=1).indices + a
    parts = [(sims[:, a:b].topk(min(k, b - a), dim=1), a) for a, b in spans]
    columns = torch.cat([top.indices + a for top, a in parts], dim=1)
    return columns.gather(1, torch.cat([top.values for top, _ in parts], dim=1).topk(k, dim=1).indices)


def mine_store(store, collection: str, ids: Sequence[str], embeddings: np.ndarray, labels: np.ndarray,
               hard_negatives: int, batch_size: int = 512, queries: np.ndarray | None = None) -> Mined:
    """Upsert the embeddings (a refresh) and search the collection per label, never returning the
    query itself. `queries`: the item indices to mine for (default all; the result is in their
    order), e.g. a sample when measuring."""
    ids = [str(i) for i in ids]
    labels = np.asarray(labels, np.int64)
    emb = np.asarray(embeddings, np.float32)
    store.ensure_collection(collection, emb.shape[1], "rgcl-embeddings")
    store.upsert(collection, ids, emb, [{"label": int(y)} for y in labels], batch_size)
    stale = store.ids(collection) - set(ids)
    if stale:
        store.delete(collection, sorted(stale))
    where = {i: n for n, i in enumerate(ids)}
    h = n_negatives(labels, hard_negatives)
    queries = np.arange(len(ids)) if queries is None else np.asarray(queries, np.int64)
    pos = queries.copy()  # no same-label peer: itself
    neg = np.empty((len(queries), h), np.int64)
    for c in (0, 1):
        slots = np.flatnonzero(labels[queries] == c)
        if not len(slots):
            continue
        rows = queries[slots]
        # the two nearest of the same label, then drop the item itself: as exact as an id-exclusion
        # filter, and 3-7x faster on the embedded engine (benchmarks/bench_mining.py)
        for slot, r, hits in zip(slots, rows, store.search_batch(collection, emb[rows], k=2, filter={"label": c},
                                                                 exact=True)):
            others = [x for x in hits if x.id != ids[r]]
            if others:
                pos[slot] = where[others[0].id]
        if h:
            hits_all = store.search_batch(collection, emb[rows], k=h, filter={"label": 1 - c}, exact=True)
            for slot, hits in zip(slots, hits_all):
                neg[slot] = [where[x.id] for x in hits]
    return Mined(pos, neg)


def mine_batch(query: torch.Tensor, snapshot: torch.Tensor, snapshot_labels: torch.Tensor, query_labels: torch.Tensor,
               hard_negatives: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mining by a batch's current embeddings `query` (B, d) among `snapshot` (N, d), the refresh's
    embeddings of every training example (the query's own row included): within the `window` nearest
    by cosine, the nearest same-label row is the positive and the nearest `hard_negatives`
    opposite-label rows the hard negatives. Returns positives (B,) and negatives (B, H), -1 where the
    window holds none."""
    q = torch.nn.functional.normalize(query.detach().float(), dim=1)
    s = torch.nn.functional.normalize(snapshot.float(), dim=1)
    top = (q @ s.T).topk(min(window, len(s)), dim=1).indices         # (B, W), nearest first
    same = snapshot_labels[top] == query_labels[:, None]
    none = torch.full((len(q),), -1, dtype=torch.long, device=q.device)

    def first(mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.any(1), top.gather(1, mask.float().argmax(1, keepdim=True))[:, 0], none)

    rank = torch.cumsum((~same).int(), dim=1)                          # how many opposite-label rows so far
    negs = [first(~same & (rank == j + 1)) for j in range(hard_negatives)]
    return first(same), (torch.stack(negs, 1) if negs else torch.empty(len(q), 0, dtype=torch.long, device=q.device))


def rank_weights(k: int) -> np.ndarray:
    return np.arange(k, 0, -1, dtype=np.float64)  # K, K-1, ..., 1


def _tie_averaged(weights: np.ndarray, sims: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Neighbours at the same similarity (duplicates) share the mean of their rank weights, so the
    score does not depend on the order a search happens to return ties in."""
    out = np.array(weights, dtype=np.float64)
    for r in range(sims.shape[0]):
        start = 0
        for k in range(1, sims.shape[1] + 1):
            if k == sims.shape[1] or abs(sims[r, k] - sims[r, start]) > tol:
                if k - start > 1:
                    out[r, start:k] = out[r, start:k].mean()
                start = k
    return out


# neighbours fetched beyond K: a group tied with the K-th neighbour shares the weight of the places
# it spans (zero past K), so which tied member a search returns first cannot change a score
TIE_MARGIN = 8


def _weights(sims: np.ndarray, weighting: str, k: int | None = None) -> np.ndarray:
    """Each neighbour's weight; only the first k count (all when None), ties share theirs."""
    k = sims.shape[1] if k is None else min(k, sims.shape[1])
    if weighting == "rank":
        base = np.r_[rank_weights(k), np.zeros(sims.shape[1] - k)]
    elif weighting == "uniform":
        base = np.r_[np.ones(k), np.zeros(sims.shape[1] - k)]
    elif weighting == "similarity":
        return np.clip(_tie_averaged(np.where(np.arange(sims.shape[1]) < k, sims, 0.0), sims), 0.0, None)
    else:
        raise ValueError(f"unknown RKC weighting {weighting!r}: rank, uniform, similarity or rank_similarity")
    return _tie_averaged(np.broadcast_to(base, sims.shape), sims)


def _vote(labels: np.ndarray, sims: np.ndarray, weighting: str, k: int | None = None) -> np.ndarray:
    if weighting == "rank_similarity":  # sum w_k (2 y_k - 1) cos_k / sum w_k in [-1, 1], mapped to [0, 1]
        w = _weights(sims, "rank", k)
        total = w.sum(axis=1)
        signed = (w * (2.0 * labels - 1.0) * sims).sum(axis=1) / np.where(total > 0, total, 1.0)
        return (signed + 1.0) / 2.0
    w = _weights(sims, weighting, k)
    total = w.sum(axis=1)
    score = (w * labels).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, score, labels.mean(axis=1) if labels.shape[1] else 0.5)


def rkc_scores(query: np.ndarray, db: np.ndarray, db_labels: np.ndarray, k: int = 20, weighting: str = "rank",
               exclude: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """RKC by brute force: P(label 1) of each query from its k nearest database rows (cosine).
    `exclude[q]` is a database row query q must not see (itself), or -1."""
    q = torch.as_tensor(np.asarray(query, np.float32))
    d = torch.as_tensor(np.asarray(db, np.float32))
    y = np.asarray(db_labels, np.float64)
    k = min(k, len(d) - (1 if exclude is not None else 0))
    if k < 1:
        raise ValueError("the RKC database is empty")
    fetch = min(k + TIE_MARGIN, len(d) - (1 if exclude is not None else 0))
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ d.T
        if exclude is not None:
            ex = torch.as_tensor(np.asarray(exclude[start : start + chunk], np.int64))
            rows = torch.nonzero(ex >= 0).flatten()
            sims[rows, ex[rows]] = float("-inf")
        top = sims.topk(fetch, dim=1)
        out[start : start + chunk] = _vote(y[top.indices.numpy()], top.values.numpy().astype(np.float64), weighting, k)
    return out


def rkc_from_hits(hits: list[list], weighting: str = "rank", k: int | None = None) -> np.ndarray:
    """RKC from vector-store hits (best first; fetch k + TIE_MARGIN), whose payloads carry `label`."""
    out = np.empty(len(hits))
    for n, h in enumerate(hits):
        if not h:
            raise ValueError("the RKC database is empty")
        labels = np.array([[float(x.payload["label"]) for x in h]])
        sims = np.array([[float(x.score) for x in h]])
        out[n] = _vote(labels, sims, weighting, k)[0]
    return out
