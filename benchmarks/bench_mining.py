"""RGCL hard-negative mining per training epoch: the vector store against an exact torch scan.

RGCL re-mines after every epoch: each training item needs its pseudo-gold positive (the
nearest same-label item, never itself) and its hard negatives (the nearest other-label
items), by cosine between the current embeddings. `mmd.models.rgcl.knn` does this two ways,
and this measures what one epoch of each costs:

- store path (`mine_store`, embedded backend = qdrant-edge in-process): one *refresh*
  (ensure_collection, upsert of all N embeddings with their labels, the stale-id check)
  and then, for every item, one positive search (k=2, filter label = own label, no id
  exclusion: the item itself is dropped from the two hits, leaving its nearest same-label
  peer) and one hard-negative search (k=1, filter label = the other label), both
  `exact=True` (a full scan of the filtered points: edge shards build no HNSW index until
  optimize(), and mining wants the true neighbours anyway). The timing proxy tells the two
  apart by comparing the search's filter label with the label of its query rows (equal:
  positive; different: negative), not by k or call order;
- exact path (`mine_exact`): chunked `emb[rows] @ emb.T` + masked max / top-k in torch, CPU.

Data: N random unit vectors (i.i.d. normal, L2-normalised, float32) of --dim (RGCL's
map_dim, 1024) with random 0/1 labels, fixed seed; hard_negatives = 1. Epoch e > 1 gets a
fresh random embedding matrix for the same ids and labels (the model moved), so its
refresh *overwrites* the N points already in the collection, as in training.

Whole or sampled: the store path costs N * (positive + negative query) and each query
scans ~N/2 points, so it grows as N^2. Before each size a small probe (min(N, 2000)
points, the label-0 items among the first 100 as queries, thrown away; skipped with
--whole-budget 0) projects the whole epoch's searches; if that stays under
--whole-budget seconds for all epochs, `mine_store` itself runs whole every epoch
(through a thin proxy that times its store calls). Otherwise the refresh is
still done and timed in full, but the searches run only for a random sample of
--sample items (`mine_store(..., queries=sample)`: the same calls, restricted to those rows)
and the
search time is extrapolated linearly to N queries: per-query cost does not depend on
how many queries there are (the collection is the same), so this is exact up to noise.
The JSON says which (`searches`: "measured on S of N queries, extrapolated" or "whole").
The exact path always runs whole (once per size; every epoch when the store ran whole).

Reading the figure: `ratio_store_over_exact` = store seconds per epoch / exact seconds
per epoch at the same N; > 1 means the store path is that many times slower. Both grow
as N^2 (N queries x N/2 points) but with very different constants: torch does one BLAS
matmul per 4096-row chunk on every core; the store does a filtered scan per query, plus
Python-side request/response handling and the upsert. Reported per epoch, and per size
as first / mean / last epoch (the store's later epochs differ from its first: see
`shard_*` and `diagnostics`).

Agreement: on the sampled items (all items when whole) the fraction whose store positive
and store negative indices equal the exact ones. Both are exact searches, so only
near-ties in float32 (different summation order) can differ; every mismatch is listed with
the float64 cosine gap between the two candidates. Epochs where the exact path did not run
whole compare against the same computation restricted to the sampled rows (checked equal
to `mine_exact` on epoch 1).

Wall-clock is the figure; process CPU time (all threads) is reported beside it
(`*_cpu_s`, `ratio_cpu_time`), which other load on a shared machine disturbs less, and
which shows how many cores each path keeps busy (cpu / wall).

Also reported: embedded upsert rate (points/s) and query rates (queries/s) per epoch, the
shard's segment count and on-disk size after each refresh, peak extra memory of the exact
path (VmHWM reset through /proc/self/clear_refs, else ru_maxrss delta; torch allocations
are invisible to tracemalloc), and a diagnostic after the first refresh: query rates for
the positive query as mined (k=2 same-label, no exclusion; self dropped client-side),
the former variant with an id-exclusion filter instead (k=1, itself excluded) for
comparison, the negative query, and no filter at all.

    python benchmarks/bench_mining.py                       # 10k and 100k, sample 2000, dim 1024
    python benchmarks/bench_mining.py --sizes 2000,5000 --epochs 2      # a minute
    python benchmarks/bench_mining.py --sizes 100000 --sample 1000

The default path against the limit: per size and epoch (a fresh random matrix each epoch), the mining RGCL
runs by default (`rgcl.mining: exact`: `mine_exact` on the epoch's numpy embeddings, as fit.py calls it, and
its results made tensors as fit.py does) against a bare exact search on the same embeddings: per chunk of
query rows (the same chunk mine_exact picks), `torch.mm(rows, all.T)` and `topk(1 + hard_negatives)`,
nothing else (no labels, no self-exclusion, no copies). The two alternate, first one then the other.
Up to --exact-whole-max items both run whole; above it both run on the same --exact-sample query rows (a
contiguous block at a random offset, against all N columns) and are extrapolated: the bare search by N /
sample, the default path as its set-up (grouping the rows by label: `mine_exact(queries=[])`, measured
whole) plus its per-row time x N. Per-row cost does not depend on how many rows are searched (every row
scans the same N columns), so this is exact up to noise; the store section's whole first-epoch run of
mine_exact at the same N checks it. `default_vs_bare.ratio` = default seconds / bare seconds (target
<= 1.2), the median over the epochs.

Writes benchmarks/results/mining.json (or --out). torch uses its default thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from mmd.config import IndexConfig  # noqa: E402
from mmd.models.rgcl.knn import default_chunk, mine_exact, mine_store, n_negatives  # noqa: E402
from mmd.store import open_store  # noqa: E402
from mmd.util import cpu_ticks, write_json  # noqa: E402

COLLECTION = "rgcl-mining"
ENCODER = "rgcl-embeddings"  # what mine_store names it
MiB = 1024 * 1024
PROBE_POINTS, PROBE_QUERIES = 2000, 100


# --------------------------------------------------------------------------- data

def _sig(seconds: float) -> float:
    """A time with three significant digits (a toy run's sub-millisecond epoch is not rounded to zero)."""
    return float(f"{seconds:.3g}")


def make_embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=n).astype(np.int64)


def make_ids(n: int) -> list[str]:
    return [f"item-{i:07d}" for i in range(n)]


# --------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak RSS above the RSS at entry: VmHWM after resetting it (clear_refs 5), else ru_maxrss."""

    def __enter__(self) -> "PeakMemory":
        self.method = "VmHWM after /proc/self/clear_refs reset"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _status_kib("VmRSS")
            if self.base is None:
                raise OSError
        except OSError:
            self.method = "ru_maxrss delta (a lower bound: 0 when an earlier peak was higher)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_kib("VmHWM") if self.method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.extra_mib = round(max(0, (peak or 0) - self.base) / 1024, 1)


# --------------------------------------------------------------------------- store timing
def _row_key(vector: np.ndarray) -> int:
    return hash(np.ascontiguousarray(vector, dtype=np.float32).tobytes())


class TimedStore:
    """Passes every call through to the store, timing the ones mine_store makes.

    `emb`/`labels`: this epoch's embeddings and labels, so that each search_batch can be
    classified by comparing its filter label with the label of its query rows: the same
    label is the positive search (k=2, self dropped), the other label the hard-negative
    one. k alone cannot tell them apart (hard_negatives may be 2), and call order would
    break when there are no negatives to mine."""

    def __init__(self, store, emb: np.ndarray, labels: np.ndarray) -> None:
        self._store = store
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # process CPU time (all threads)
        self.queries: Counter = Counter()
        # built before the epoch's clock starts; a lookup costs two hashes per search_batch
        self._label_of = {_row_key(v): int(y) for v, y in zip(emb, labels)}

    def _phase(self, vectors, filter) -> str:
        if not filter or "label" not in filter:
            raise ValueError(f"search_batch without a label filter ({filter!r}): not a mining search")
        rows = np.asarray(vectors)
        if not len(rows):
            return "search_positive"  # nothing to time either way
        # mine_store queries one label at a time: its first and last rows carry it
        query_labels = {self._label_of.get(_row_key(rows[0])), self._label_of.get(_row_key(rows[-1]))}
        if None in query_labels or len(query_labels) != 1:
            raise ValueError(f"search_batch query rows are not this epoch's items of one label: {query_labels}")
        return "search_positive" if query_labels.pop() == int(filter["label"]) else "search_negative"

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def _timed(self, phase: str, fn, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.cpu[phase] += time.process_time() - cpu

    def ensure_collection(self, *args, **kwargs):
        return self._timed("ensure_collection", self._store.ensure_collection, *args, **kwargs)

    def upsert(self, *args, **kwargs):
        return self._timed("upsert", self._store.upsert, *args, **kwargs)

    def ids(self, *args, **kwargs):
        return self._timed("stale_check", self._store.ids, *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._timed("stale_check", self._store.delete, *args, **kwargs)

    def search_batch(self, name, vectors, k=10, filter=None, *args, **kwargs):
        phase = self._phase(vectors, filter)  # same label as the queries: positive; the other: negative
        self.queries[phase] += len(vectors)
        return self._timed(phase, self._store.search_batch, name, vectors, k, filter, *args, **kwargs)


def shard_state(store, folder: Path) -> dict:
    out: dict = {}
    shard = getattr(store, "_shards", {}).get(COLLECTION)  # EdgeStore internals: diagnostics only
    if shard is not None:
        try:
            info = shard.info()
            out.update(shard_segments=int(info.segments_count), shard_points=int(info.points_count))
        except Exception:  # noqa: BLE001
            pass
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    out["shard_disk_mib"] = round(size / MiB, 1)
    return out


# --------------------------------------------------------------------------- exact reference on rows
def exact_rows(emb: np.ndarray, labels: np.ndarray, rows: np.ndarray, hard_negatives: int,
               chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """mine_exact's answer for `rows` only (same masking, same argmax/top-k)."""
    e = torch.as_tensor(emb)
    y = torch.as_tensor(labels)
    h = n_negatives(labels, hard_negatives)
    pos = np.empty(len(rows), np.int64)
    neg = np.empty((len(rows), h), np.int64)
    for start in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[start : start + chunk])
        sims = e[r] @ e.T
        sims[torch.arange(len(r)), r] = float("-inf")
        same = y[r, None] == y[None, :]
        best, arg = sims.masked_fill(~same, float("-inf")).max(dim=1)
        pos[start : start + len(r)] = torch.where(torch.isinf(best), r, arg).numpy()
        if h:
            neg[start : start + len(r)] = sims.masked_fill(same, float("-inf")).topk(h, dim=1).indices.numpy()
    return pos, neg


def agreement(emb: np.ndarray, rows: np.ndarray, got: tuple[np.ndarray, np.ndarray],
              ref: tuple[np.ndarray, np.ndarray]) -> dict:
    pos_ok = got[0] == ref[0]
    neg_ok = (got[1] == ref[1]).all(axis=1)
    mismatches = []
    for i in np.flatnonzero(~(pos_ok & neg_ok))[:20]:
        q = emb[rows[i]].astype(np.float64)
        for kind, a, b in (("positive", got[0][i], ref[0][i]), ("negative", got[1][i, 0], ref[1][i, 0])):
            if a != b:
                gap = float(q @ emb[b].astype(np.float64) - q @ emb[a].astype(np.float64))
                mismatches.append({"item": int(rows[i]), "kind": kind, "store": int(a), "exact": int(b),
                                   "cosine_gap_exact_minus_store": gap})
    return {
        "queries": int(len(rows)),
        "positives_equal": round(float(pos_ok.mean()), 6),
        "negatives_equal": round(float(neg_ok.mean()), 6),
        "both_equal": round(float((pos_ok & neg_ok).mean()), 6),
        "mismatches": mismatches,
        "max_abs_cosine_gap": max((abs(m["cosine_gap_exact_minus_store"]) for m in mismatches), default=None),
    }


# --------------------------------------------------------------------------- store probes
def _qps(store, vectors: np.ndarray, **kwargs) -> float:
    start = time.perf_counter()
    store.search_batch(COLLECTION, vectors, **kwargs)
    return round(len(vectors) / (time.perf_counter() - start), 1)


def probe_projection(ids, emb, labels, n: int, epochs: int, args) -> dict:
    """Per-query times on a small throwaway collection, projected to N points and N queries."""
    n0 = min(n, PROBE_POINTS)
    folder = Path(tempfile.mkdtemp(prefix="mining-probe-", dir=args.work))
    try:
        store = open_store(IndexConfig(backend="embedded", batch_size=args.batch_size), folder)
        store.ensure_collection(COLLECTION, emb.shape[1], ENCODER)
        store.upsert(COLLECTION, ids[:n0], emb[:n0], [{"label": int(y)} for y in labels[:n0]])
        rows = np.arange(min(n0, PROBE_QUERIES))
        rows0 = rows[labels[rows] == 0]
        start = time.perf_counter()
        store.search_batch(COLLECTION, emb[rows0], k=2, filter={"label": 0}, exact=True)  # positive, as mine_store
        store.search_batch(COLLECTION, emb[rows0], k=1, filter={"label": 1}, exact=True)
        per_item = (time.perf_counter() - start) / max(len(rows0), 1)  # one positive + one negative query
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    projected = per_item * (n / n0) * n * epochs
    return {"points": n0, "queries": int(len(rows0)), "seconds_per_item_at_probe": round(per_item, 6),
            "projected_search_s_all_epochs": round(projected, 1)}


def diagnostics(store, ids, emb, labels, rows: np.ndarray) -> dict:
    """Query rates of variants of the two mining queries, on the collection as it is now."""
    picked = rows[labels[rows] == 0]
    vecs = emb[picked]
    return {
        "queries": int(len(picked)),
        "note": "queries/s, one search_batch each, label-0 items of the sample, exact=True",
        "positive_as_mined_qps": _qps(store, vecs, k=2, filter={"label": 0}, exact=True),  # self dropped after
        "positive_with_id_exclusion_qps": _qps(store, vecs, k=1, filter={"label": 0},
                                               exclude_ids=[[ids[r]] for r in picked], exact=True),
        "negative_as_mined_qps": _qps(store, vecs, k=1, filter={"label": 1}, exact=True),
        "no_filter_k1_qps": _qps(store, vecs, k=1, exact=True),
    }


# --------------------------------------------------------------------------- default path vs bare search
def default_epoch(e: np.ndarray, labels: np.ndarray, h: int, queries: np.ndarray | None) -> float:
    """Seconds of the mining fit.py runs by default, with its bookkeeping (numpy in, tensors out)."""
    start = time.perf_counter()
    mined = mine_exact(e, labels, h, device="cpu", queries=queries)
    torch.as_tensor(mined.positives), torch.as_tensor(mined.negatives)
    return time.perf_counter() - start


def bare_epoch(e: torch.Tensor, rows: range, k: int, chunk: int) -> float:
    """Seconds of torch.mm + topk over the rows in chunks: an exact search with nothing around it."""
    start = time.perf_counter()
    for r0 in range(rows.start, rows.stop, chunk):
        torch.mm(e[r0 : min(r0 + chunk, rows.stop)], e.T).topk(k, dim=1)
    return time.perf_counter() - start


def default_vs_bare(n: int, labels: np.ndarray, args) -> dict:
    h = n_negatives(labels, 1)
    chunk = default_chunk(n)
    whole = n <= args.exact_whole_max
    s = n if whole else min(args.exact_sample, n)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        e = make_embeddings(n, args.dim, args.seed + 1 if epoch == 1 else args.seed + 100 + epoch)
        t = torch.from_numpy(e)
        offset = 0 if whole else int(np.random.default_rng(args.seed + epoch).integers(0, n - s + 1))
        rows = range(offset, offset + s)
        queries = None if whole else np.arange(offset, offset + s)
        rec: dict = {"epoch": epoch}
        for side in (("default", "bare") if epoch % 2 else ("bare", "default")):
            if side == "bare":
                measured = bare_epoch(t, rows, 1 + h, chunk)
                rec["bare_measured_s"] = measured
                rec["bare_epoch_s"] = measured * n / s
            else:
                measured = default_epoch(e, labels, h, queries)
                rec["default_measured_s"] = measured
                if whole:
                    rec["default_epoch_s"] = measured
                else:
                    setup = default_epoch(e, labels, h, np.zeros(0, np.int64))
                    rec["default_setup_s"] = setup
                    # (noise can make a tiny sample's run shorter than the set-up measured apart)
                    rec["default_epoch_s"] = setup + max(measured - setup, 0.0) * n / s
        rec["ratio_default_over_bare"] = rec["default_epoch_s"] / rec["bare_epoch_s"]
        rec = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in rec.items()}
        epochs.append(rec)
        print(f"  n={n:>7,} epoch {epoch}: default (mine_exact) {rec['default_epoch_s']:8.2f} s, bare mm+topk "
              f"{rec['bare_epoch_s']:8.2f} s, ratio {rec['ratio_default_over_bare']:.3f}"
              + ("" if whole else f" (rows {s:,} of {n:,}, extrapolated)"), flush=True)
    return {
        "rows": "whole" if whole else f"measured on {s} of {n} query rows, extrapolated",
        "chunk": chunk,
        "bare": f"torch.mm(chunk of rows, all.T).topk({1 + h}) per chunk",
        "epochs": epochs,
        "default_epoch_s_median": _sig(statistics.median(r["default_epoch_s"] for r in epochs)),
        "bare_epoch_s_median": _sig(statistics.median(r["bare_epoch_s"] for r in epochs)),
        "ratio": round(statistics.median(r["ratio_default_over_bare"] for r in epochs), 3),
        "target_ratio": 1.2,
    }


# --------------------------------------------------------------------------- one size
def run_size(n: int, args) -> dict:
    dim, h_wanted = args.dim, 1
    ids = make_ids(n)
    labels = make_labels(n, args.seed)
    emb = make_embeddings(n, dim, args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    sample = np.sort(rng.choice(n, size=min(args.sample, n), replace=False))
    row: dict = {"n": n, "dim": dim, "hard_negatives": h_wanted, "label_1_share": round(float(labels.mean()), 4)}
    row["default_vs_bare"] = default_vs_bare(n, labels, args)
    if args.skip_store:
        return row

    # exact path on the first epoch's embeddings
    exact_cpu: list[float] = []

    def exact(e: np.ndarray) -> tuple[float, float, str, tuple]:
        with PeakMemory() as mem:
            start, cpu = time.perf_counter(), time.process_time()
            mined = mine_exact(e, labels, h_wanted, chunk=args.chunk, device="cpu")
            seconds = time.perf_counter() - start
            exact_cpu.append(time.process_time() - cpu)
        return seconds, mem.extra_mib, mem.method, (mined.positives, mined.negatives)

    exact_s, exact_mib, mem_method, exact_first = exact(emb)
    exact_times = [exact_s]
    row["exact"] = {"chunk": args.chunk or default_chunk(n), "device": "cpu", "torch_threads": torch.get_num_threads(),
                    "peak_extra_mib": exact_mib, "memory_method": mem_method}
    print(f"  n={n:>7,} exact (mine_exact, torch) {exact_s:7.2f} s/epoch, peak +{exact_mib:,.0f} MiB", flush=True)

    # whole or sampled?
    if len(sample) >= n:
        whole, probe = True, None
    elif args.whole_budget <= 0:
        whole, probe = False, None
    else:
        probe = probe_projection(ids, emb, labels, n, args.epochs, args)
        whole = probe["projected_search_s_all_epochs"] <= args.whole_budget
    rows = np.arange(n) if whole else sample
    row["searches"] = "whole" if whole else f"measured on {len(sample)} of {n} queries, extrapolated"
    row["search_sample"] = int(len(rows))
    row["probe"] = probe
    print(f"  n={n:>7,} store searches: {row['searches']}"
          + (f" (probe projected {probe['projected_search_s_all_epochs']:,.0f} s for {args.epochs} epoch(s), "
             f"budget {args.whole_budget:g} s)" if probe else ""), flush=True)

    folder = Path(tempfile.mkdtemp(prefix=f"mining-{n}-", dir=args.work))
    epochs = []
    try:
        base = open_store(IndexConfig(backend="embedded", batch_size=args.batch_size), folder)
        for epoch in range(1, args.epochs + 1):
            e = emb if epoch == 1 else make_embeddings(n, dim, args.seed + 100 + epoch)
            store = TimedStore(base, e, labels)
            with PeakMemory() as mem:
                start, cpu = time.perf_counter(), time.process_time()
                if whole:
                    mined = mine_store(store, COLLECTION, ids, e, labels, h_wanted, batch_size=args.batch_size)
                    got = (mined.positives, mined.negatives)
                else:
                    mined = mine_store(store, COLLECTION, ids, e, labels, h_wanted, batch_size=args.batch_size,
                                       queries=rows)
                    got = (mined.positives, mined.negatives)
                wall = time.perf_counter() - start
                wall_cpu = time.process_time() - cpu
            sec, cpu_s = dict(store.seconds), dict(store.cpu)
            refresh_s = sec.get("ensure_collection", 0.0) + sec.get("upsert", 0.0) + sec.get("stale_check", 0.0)
            search_measured = sec.get("search_positive", 0.0) + sec.get("search_negative", 0.0)
            scale = n / len(rows)
            searches_s = search_measured * scale
            other_s = max(0.0, wall - refresh_s - search_measured)  # python around the calls (not extrapolated)
            store_s = wall if whole else refresh_s + searches_s + other_s
            search_cpu = cpu_s.get("search_positive", 0.0) + cpu_s.get("search_negative", 0.0)
            store_cpu = wall_cpu + search_cpu * (scale - 1)  # the measured epoch + the searches not run
            # the reference for agreement
            if whole or epoch == 1:
                if epoch == 1:
                    ref_full = exact_first
                else:
                    t, _, _, ref_full = exact(e)
                    exact_times.append(t)
                ref = (ref_full[0][rows], ref_full[1][rows])
                ref_kind = "mine_exact"
            else:
                ref = exact_rows(e, labels, rows, h_wanted)
                ref_kind = "exact on the sampled rows"
            if epoch == 1 and not whole:
                check = exact_rows(e, labels, rows, h_wanted)
                row["sampled_reference_equals_mine_exact"] = bool(
                    (check[0] == ref[0]).all() and (check[1] == ref[1]).all())
            agree = agreement(e, rows, got, ref)
            agree["reference"] = ref_kind
            q_pos, q_neg = store.queries["search_positive"], store.queries["search_negative"]
            rec = {
                "epoch": epoch,
                "refresh": "insert into an empty collection" if epoch == 1 else "overwrite the N points already there",
                "store_epoch_s": _sig(store_s),
                "refresh_s": _sig(refresh_s),
                "upsert_s": _sig(sec.get("upsert", 0.0)),
                "upsert_pts_per_s": round(n / sec["upsert"], 1),
                "stale_check_s": _sig(sec.get("stale_check", 0.0)),
                "searches_measured_s": _sig(search_measured),
                "searches_per_epoch_s": _sig(searches_s),
                "other_s": _sig(other_s),
                "positive_queries": q_pos,
                "negative_queries": q_neg,
                "positive_qps": round(q_pos / sec["search_positive"], 1),
                "negative_qps": round(q_neg / sec["search_negative"], 1),
                "store_peak_extra_mib": mem.extra_mib,
                "exact_epoch_s": _sig(exact_times[-1]),
                "ratio_store_over_exact": round(store_s / exact_times[-1], 2),
                "store_epoch_cpu_s": _sig(store_cpu),
                "searches_per_epoch_cpu_s": _sig(search_cpu * scale),
                "exact_epoch_cpu_s": _sig(exact_cpu[-1]),
                "ratio_cpu_time": round(store_cpu / exact_cpu[-1], 2),
                "agreement": agree,
                **shard_state(base, folder),
            }
            epochs.append(rec)
            print(f"  n={n:>7,} epoch {epoch}: store {store_s:8.1f} s (upsert {rec['upsert_s']:.1f} s = "
                  f"{rec['upsert_pts_per_s']:,.0f} pts/s, searches {searches_s:.1f} s: positive {rec['positive_qps']:,.0f} q/s, "
                  f"negative {rec['negative_qps']:,.0f} q/s), ratio {rec['ratio_store_over_exact']:.1f}, "
                  f"agreement {agree['both_equal']:.4f}, {rec.get('shard_segments', '?')} segments, "
                  f"{rec['shard_disk_mib']:,.0f} MiB on disk", flush=True)
            if epoch == 1:
                drows = rows[: args.diag_queries] if whole else sample[: args.diag_queries]
                row["diagnostics_after_first_refresh"] = diagnostics(base, ids, e, labels, drows)
        if args.epochs > 1:
            row["diagnostics_after_last_refresh"] = diagnostics(base, ids, e, labels, rows[: args.diag_queries])
        base.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    store_times = [r["store_epoch_s"] for r in epochs]
    exact_med = statistics.median(exact_times)
    row["exact"].update(epoch_s=[_sig(t) for t in exact_times], median_epoch_s=_sig(exact_med),
                        epoch_cpu_s=[_sig(t) for t in exact_cpu])
    row["epochs"] = epochs
    row["summary"] = {
        "store_first_epoch_s": store_times[0],
        "store_last_epoch_s": store_times[-1],
        "store_mean_epoch_s": round(float(np.mean(store_times)), 3),
        "exact_epoch_s": _sig(exact_med),
        "ratio_first_epoch": round(store_times[0] / exact_med, 2),
        "ratio_last_epoch": round(store_times[-1] / exact_med, 2),
        "ratio_mean": round(float(np.mean(store_times)) / exact_med, 2),
        "ratio_cpu_time_mean": round(float(np.mean([r["ratio_cpu_time"] for r in epochs])), 2),
        "agreement_both_equal_min": min(r["agreement"]["both_equal"] for r in epochs),
    }
    return row


def table(results: list[dict]) -> str:
    head = (f"{'N':>8} {'epoch':>5} {'searches':>10} {'store s':>9} {'refresh':>8} {'search':>9} "
            f"{'exact s':>8} {'ratio':>7} {'agree':>7} {'pos q/s':>8} {'neg q/s':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        mode = "whole" if r["searches"] == "whole" else f"{r['search_sample']:,} smpl"
        for e in r["epochs"]:
            lines.append(
                f"{r['n']:>8,} {e['epoch']:>5} {mode:>10} {e['store_epoch_s']:>9.1f} {e['refresh_s']:>8.1f} "
                f"{e['searches_per_epoch_s']:>9.1f} {e['exact_epoch_s']:>8.2f} {e['ratio_store_over_exact']:>7.1f} "
                f"{e['agreement']['both_equal']:>7.4f} {e['positive_qps']:>8,.0f} {e['negative_qps']:>8,.0f}"
            )
    return "\n".join(lines)


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000],
                        help="comma-separated item counts (default 10000,100000)")
    parser.add_argument("--sample", type=int, default=2000, help="queries the store searches when not run whole")
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimension (RGCL's map_dim)")
    parser.add_argument("--epochs", type=int, default=3, help="refreshes per size (epoch 1 inserts, later ones overwrite)")
    parser.add_argument("--whole-budget", type=float, default=180.0,
                        help="run the store's searches whole when the probe projects at most this many seconds for all epochs "
                             "(0: sample whenever --sample < N, no probe)")
    parser.add_argument("--diag-queries", type=int, default=500, help="queries per diagnostic variant")
    parser.add_argument("--chunk", type=int, default=None, help="mine_exact's chunk in the store section (default: its own)")
    parser.add_argument("--exact-whole-max", type=int, default=20_000,
                        help="the default path and the bare search run whole up to this many items, sampled above")
    parser.add_argument("--exact-sample", type=int, default=4096, help="query rows they run on when sampled")
    parser.add_argument("--skip-store", action="store_true", help="only the default path against the bare search")
    parser.add_argument("--batch-size", type=int, default=512, help="upsert batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work", help="scratch folder for the stores")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mining.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    started = time.time()
    load_before, ticks_before = os.getloadavg(), cpu_ticks()
    results = []
    for n in sorted(args.sizes):
        results.append(run_size(n, args))
    load_after, ticks_after = os.getloadavg(), cpu_ticks()
    steal = None
    if ticks_before and ticks_after and ticks_after[1] > ticks_before[1]:
        steal = round((ticks_after[0] - ticks_before[0]) / (ticks_after[1] - ticks_before[1]), 4)

    report = {
        "benchmark": "RGCL hard-negative mining per epoch: mine_exact (the default) vs a bare torch.mm + topk, and "
                     "mine_store (embedded vector store) vs mine_exact",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
            "cpu_steal_share": steal,
        },
        "versions": {pkg: _version(pkg) for pkg in ("qdrant-edge-py", "torch", "numpy")},
        "settings": {
            "sizes": sorted(args.sizes), "dim": args.dim, "sample": args.sample, "epochs": args.epochs,
            "hard_negatives": 1, "whole_budget_s": args.whole_budget, "chunk": args.chunk,
            "upsert_batch_size": args.batch_size, "seed": args.seed, "backend": "embedded (qdrant-edge)",
            "data": "i.i.d. normal vectors, L2-normalised, float32; labels uniform 0/1; each later epoch a fresh "
                    "random matrix for the same ids and labels",
            "store_epoch_s": "refresh (ensure_collection + upsert + stale-id check, always whole) + searches "
                             "(whole, or measured on the sample and scaled by N/sample) + Python around the calls",
            "ratio": "store seconds per epoch / exact (mine_exact) seconds per epoch at the same N; >1: the store is slower",
            "ratio_cpu_time": "the same with process CPU time (all threads) instead of wall-clock: less sensitive to "
                              "other load on the machine; torch uses every core, the store's searches fewer",
        },
        "results": results,
        "summary": {str(r["n"]): {"searches": r["searches"], **r["summary"]} for r in results if "summary" in r},
        "default_vs_bare": {str(r["n"]): {k: v for k, v in r["default_vs_bare"].items() if k != "epochs"}
                            for r in results},
        "wall_s": round(time.time() - started, 1),
    }
    write_json(args.out, report)
    print()
    for r in results:
        d = r["default_vs_bare"]
        print(f"  n={r['n']:,} default / bare: {d['default_epoch_s_median']} / {d['bare_epoch_s_median']} s per epoch, "
              f"ratio {d['ratio']} ({d['rows']})")
    results = [r for r in results if "summary" in r]
    print(table(results))
    for r in results:
        d1 = r["diagnostics_after_first_refresh"]
        print(f"  n={r['n']:,} after the first refresh, q/s: positive as mined (k=2, drop self) "
              f"{d1['positive_as_mined_qps']:,}, with an id exclusion (k=1) {d1['positive_with_id_exclusion_qps']:,}, "
              f"negative {d1['negative_as_mined_qps']:,}, "
              f"no filter {d1['no_filter_k1_qps']:,}")
    print(f"\nload average 1 min {report['machine']['load_average_1min']}, steal {steal}; wall {report['wall_s']} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
