"""Vector store throughput: embedded (qdrant-edge) against qdrant-client's local mode.

For each backend and size: upsert throughput (points/s, whole call, batches of
--batch-size), then filtered top-10 search throughput (queries/s, filter on `label`),
one query per call and as one search_batch call, with recall@10 against numpy brute
force (on low-rank vectors by default; `--data random` is HNSW's worst case). The embedded store is measured again after optimize() (HNSW built); local mode
has no index to build. Writes JSON with the machine, the settings, every figure and the
embedded/local ratios.

    python benchmarks/bench_store.py                    # 10k and 100k points, dim 512
    python benchmarks/bench_store.py --quick            # 2k and 10k
    python benchmarks/bench_store.py --sizes 5000 --dim 384 --backends embedded
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmd.config import IndexConfig  # noqa: E402
from mmd.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "bench:random-normal"
FILTER = {"label": 1}
K = 10
LATENT, NOISE = 32, 0.3


def sample_vectors(n: int, dim: int, kind: str, seed: int) -> np.ndarray:
    """`lowrank`: a 32-d latent through a fixed random projection plus noise, which is how
    real embeddings look to an index (low intrinsic dimension); `random`: i.i.d. normal,
    the worst case for HNSW, where approximate recall drops sharply."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(n, dim)).astype(np.float32)
    projection = np.random.default_rng(12345).normal(size=(LATENT, dim)) / np.sqrt(LATENT)
    return (rng.normal(size=(n, LATENT)) @ projection + NOISE * rng.normal(size=(n, dim))).astype(np.float32)


def make_data(n: int, dim: int, kind: str, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    vectors = sample_vectors(n, dim, kind, seed)
    labels = rng.integers(0, 2, size=n)
    kinds = ("meme", "fact_check", "post")
    ids = [f"{i:024x}" for i in range(n)]
    payloads = [
        {"label": int(labels[i]), "kind": kinds[i % 3], "source": f"src{i % 5}", "split": "train", "ingested_at": "2025-01-01T00:00:00+00:00"}
        for i in range(n)
    ]
    return ids, vectors, payloads


def brute_force_top(vectors: np.ndarray, keep: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    scores[:, ~keep] = -np.inf
    return [set(np.argsort(-row)[:k].tolist()) for row in scores]


def measure_search(store, queries: np.ndarray, budget_s: float, truth: list[set[int]], index_of: dict[str, int]) -> dict:
    """Single-query calls until all queries ran or the time budget is spent; then one batch call."""
    done, recalls = 0, []
    start = time.perf_counter()
    for i, query in enumerate(queries):
        hits = store.search("items", query, k=K, filter=FILTER)
        if i < len(truth):
            recalls.append(len({index_of[h.id] for h in hits} & truth[i]) / K)
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    single_s = time.perf_counter() - start
    batch = queries[: max(done, 1)]
    start = time.perf_counter()
    store.search_batch("items", batch, k=K, filter=FILTER)
    batch_s = time.perf_counter() - start
    return {
        "search_queries": done,
        "search_s": round(single_s, 3),
        "search_qps": round(done / single_s, 1),
        "search_batch_queries": len(batch),
        "search_batch_s": round(batch_s, 3),
        "search_batch_qps": round(len(batch) / batch_s, 1),
        "recall_at_10": round(float(np.mean(recalls)), 4) if recalls else None,
    }


def run_one(backend: str, n: int, dim: int, args: argparse.Namespace) -> dict:
    ids, vectors, payloads = make_data(n, dim, args.data)
    keep = np.array([p["label"] == FILTER["label"] for p in payloads])
    queries = sample_vectors(args.queries, dim, args.data, seed=1)  # new items, same distribution
    truth = brute_force_top(vectors, keep, queries[: args.recall_queries], K)
    index_of = {item: i for i, item in enumerate(ids)}
    folder = Path(tempfile.mkdtemp(prefix=f"bench-store-{backend}-", dir=args.tmp))
    row: dict = {"backend": backend, "size": n, "dim": dim}
    try:
        store = open_store(IndexConfig(backend=backend, batch_size=args.batch_size), folder)
        store.ensure_collection("items", dim, ENCODER)
        start = time.perf_counter()
        store.upsert("items", ids, vectors, payloads)
        upsert_s = time.perf_counter() - start
        assert store.count("items") == n
        row.update(upsert_s=round(upsert_s, 3), upsert_pts_per_s=round(n / upsert_s, 1))
        print(f"  {backend:8s} n={n:>7,} upsert {n / upsert_s:>10,.0f} pts/s ({upsert_s:.1f} s)", flush=True)
        row.update(measure_search(store, queries, args.search_budget, truth, index_of))
        print(
            f"  {backend:8s} n={n:>7,} search {row['search_qps']:>10,.1f} q/s single, "
            f"{row['search_batch_qps']:,.1f} q/s batched, recall@10 {row['recall_at_10']}",
            flush=True,
        )
        if backend == "embedded" and args.optimize:
            start = time.perf_counter()
            store.optimize("items")
            row["optimize_s"] = round(time.perf_counter() - start, 3)
            optimized = measure_search(store, queries, args.search_budget, truth, index_of)
            row["optimized"] = optimized
            print(
                f"  {backend:8s} n={n:>7,} optimize {row['optimize_s']:.1f} s, then search "
                f"{optimized['search_qps']:,.1f} q/s single, {optimized['search_batch_qps']:,.1f} q/s batched, "
                f"recall@10 {optimized['recall_at_10']}",
                flush=True,
            )
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def ratios(results: list[dict]) -> dict:
    out = {}
    by = {(r["backend"], r["size"]): r for r in results if "skipped" not in r}
    for (backend, n), emb in by.items():
        loc = by.get(("local", n))
        if backend != "embedded" or loc is None:
            continue
        out[str(n)] = {
            key: round(emb[key] / loc[key], 2)
            for key in ("upsert_pts_per_s", "search_qps", "search_batch_qps")
            if emb.get(key) and loc.get(key)
        }
        if "optimized" in emb:
            out[str(n)]["search_qps_optimized"] = round(emb["optimized"]["search_qps"] / loc["search_qps"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None, help="comma-separated (default 10000,100000)")
    parser.add_argument("--quick", action="store_true", help="sizes 2000,10000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--backends", default="embedded,local")
    parser.add_argument("--data", choices=("lowrank", "random"), default="lowrank", help="vector distribution (see sample_vectors)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="most single-query calls per measurement")
    parser.add_argument("--recall-queries", type=int, default=20)
    parser.add_argument("--search-budget", type=float, default=20.0, help="seconds of single queries per measurement")
    parser.add_argument(
        "--max-upsert-s", type=float, default=600.0,
        help="skip a size whose upsert, projected from the smaller size, would take longer (0: never skip)",
    )
    parser.add_argument("--no-optimize", dest="optimize", action="store_false", help="skip the embedded optimize() pass")
    parser.add_argument("--tmp", default=None, help="folder for the temporary stores")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    sizes = args.sizes or ([2_000, 10_000] if args.quick else [10_000, 100_000])
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    started = time.time()
    results = []
    rate: dict[str, float] = {}  # backend -> points/s measured at the last size
    for n in sorted(sizes):
        for backend in backends:
            projected = n / rate[backend] if backend in rate else 0.0
            if args.max_upsert_s and projected > args.max_upsert_s:
                note = (
                    f"skipped: at the {rate[backend]:,.0f} pts/s measured at the smaller size, upserting {n:,} points "
                    f"would take ~{projected:,.0f} s > --max-upsert-s {args.max_upsert_s:g}"
                )
                print(f"  {backend:8s} n={n:>7,} {note}", flush=True)
                results.append({"backend": backend, "size": n, "dim": args.dim, "skipped": note, "projected_upsert_s": round(projected)})
                continue
            results.append(run_one(backend, n, args.dim, args))
            rate[backend] = results[-1]["upsert_pts_per_s"]
    report = {
        "benchmark": "vector store: upsert and filtered top-10 search",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "versions": {pkg: version(pkg) for pkg in ("qdrant-edge-py", "qdrant-client", "numpy")},
        "settings": {
            "sizes": sizes,
            "dim": args.dim,
            "backends": backends,
            "batch_size": args.batch_size,
            "k": K,
            "filter": FILTER,
            "filter_selectivity": 0.5,
            "queries": args.queries,
            "search_budget_s": args.search_budget,
            "max_upsert_s": args.max_upsert_s,
            "data": args.data,
            "data_note": (
                f"{LATENT}-d normal latent through a fixed random projection + N(0, {NOISE}^2) noise"
                if args.data == "lowrank"
                else "i.i.d. normal vectors (worst case for HNSW recall)"
            ) + "; labels random 0/1; queries are fresh samples of the same distribution",
        },
        "results": results,
        "ratios_embedded_over_local": ratios(results),
        "skipped": [r["skipped"] for r in results if "skipped" in r],
        "wall_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios_embedded_over_local"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
