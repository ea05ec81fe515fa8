"""Synthetic-data selection at scale: SemSim and DisSim time and peak memory against input size.

Selection (mmd.synth.scoring) has to rank pools far larger than memory comfortably holds
as one matrix: SemSim over a million candidates, DisSim over 100k candidates against 10k
real points, whose dense cost matrix alone would be 4 GB (float32). Both stream the
candidates in chunks; this measures whether that holds up: seconds and peak memory for
each input size, next to what the dense matrices would have needed.

Candidates are generated on the fly, chunk by chunk, from a seeded RNG (so the benchmark
itself never holds them all, and DisSim's two passes see the same rows): unit vectors
from a mixture of 8 Gaussian clusters around directions sharing a common component (the
"cone" CLIP embeddings live in), drawn uniformly. The real target set is a related
mixture: 5 of the 8 clusters with unequal weights, each slightly shifted, so the
transport problem is not trivial and 3/8 of the candidates come from nowhere near the
real data.

Each measurement runs in a fresh process (multiprocessing, 'spawn'): peak memory is
ru_maxrss at the end minus ru_maxrss after imports and the target set were made (the
baseline, taken after importing POT and a tiny warm-up call, so one-off costs of a
process stay out). The parent imports no torch: a spawned child's ru_maxrss starts at the
parent's RSS, which would otherwise sit under every baseline. Time spent generating
candidates is measured inside the stream and reported apart (`generate_s`); `seconds` is
the library's own time (total minus generation).
DisSim is also split into its phases (reservoir sample, Sinkhorn fit, scoring pass),
each with the peak memory reached by its end. A spot check at the smallest DisSim size
compares the exact potential (sample >= n) with one fitted on a 2000-point sample:
rank correlation and overlap of the selected top 10 %.

    python benchmarks/bench_select.py                     # SemSim 10k/100k/1M; DisSim 10k/30k/100k x 10k, 100k x 2k
    python benchmarks/bench_select.py --quick             # small sizes, a minute or two
    python benchmarks/bench_select.py --dissim-sizes 100000 --real 10000 --extra-real 0

torch uses its default thread count. Timings are wall-clock; the 1-minute load average
before and after and the CPU steal share are recorded to show how quiet the machine was.
Writes benchmarks/results/select.json (or --out).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mmd.util import cpu_ticks  # noqa: E402  (imports no torch: the parent must stay small)

MiB = 1024 * 1024
CLUSTERS = 8
REAL_WEIGHTS = np.array([0.30, 0.25, 0.20, 0.15, 0.10, 0.0, 0.0, 0.0])  # real data: 5 of the 8 clusters
COMMON, OWN = 0.6, 0.8  # cluster direction = COMMON * shared + OWN * own (unit); cos between clusters ~0.36
NOISE = 0.8  # norm of the per-point noise before normalising: cos within a cluster ~0.6
DRIFT = 0.3  # norm of the shift of each real cluster away from the synthetic one
TOP_SHARE = 0.10
SPOT_SAMPLE = 2000


# --------------------------------------------------------------------------- data
def cluster_centers(dim: int, seed: int = 12345) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    own = rng.standard_normal((CLUSTERS, dim))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centers = COMMON * shared + OWN * own
    return (centers / np.linalg.norm(centers, axis=1, keepdims=True)).astype(np.float32)


def _points(rng: np.random.Generator, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    dim = centers.shape[1]
    x = rng.standard_normal((len(labels), dim), dtype=np.float32)
    x *= np.float32(NOISE / np.sqrt(dim))
    x += centers[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _chunk_sizes(n: int, rows: int) -> Iterator[int]:
    for start in range(0, n, rows):
        yield min(rows, n - start)


def candidate_chunks(n: int, dim: int, seed: int, rows: int) -> Iterator[np.ndarray]:
    """n unit candidates in chunks of `rows`, the same rows on every call with the same arguments."""
    centers = cluster_centers(dim)
    labels_rng = np.random.default_rng([seed, n, 1])  # labels and noise on separate streams, so
    noise_rng = np.random.default_rng([seed, n, 2])  # candidate_labels can replay the labels alone
    for size in _chunk_sizes(n, rows):
        yield _points(noise_rng, centers, labels_rng.integers(0, CLUSTERS, size))


def candidate_labels(n: int, seed: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n, 1])
    return np.concatenate([rng.integers(0, CLUSTERS, size) for size in _chunk_sizes(n, rows)])


def real_target(m: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, m, 3])
    drift = np.random.default_rng(777).standard_normal((CLUSTERS, dim)).astype(np.float32)
    drift *= np.float32(DRIFT) / np.linalg.norm(drift, axis=1, keepdims=True)
    labels = rng.choice(CLUSTERS, size=m, p=REAL_WEIGHTS)
    return _points(rng, cluster_centers(dim) + drift, labels)


class Stopwatch:
    """Accumulates the time a stream spends producing its items (here: generating candidates)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, items: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        it = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield item


# --------------------------------------------------------------------------- one measurement (child process)
def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(spec: dict) -> dict:
    """Run one scoring call in this (fresh) process; time, peak memory over the baseline, details."""
    import gc

    import torch

    from mmd.synth import scoring

    n, m, dim, rows, seed = spec["n"], spec["m"], spec["dim"], spec["rows"], spec["seed"]
    target = real_target(m, dim, seed)
    # one-off costs of a process, not of the input size, stay below the baseline: POT (which
    # fit_potential imports lazily, ~170 MiB) and torch's first kernels / thread pool
    import ot  # noqa: F401

    warm = torch.from_numpy(target[:64])
    torch.logsumexp(scoring._cost(warm, warm).double(), dim=0)
    scoring.semsim_scores([target[:64]], target[:64])
    watch = Stopwatch()

    def chunks() -> Iterator[np.ndarray]:
        return watch.wrap(candidate_chunks(n, dim, seed, rows))

    gc.collect()
    base_max, base_rss = _maxrss_mib(), _rss_mib()
    row: dict = {"method": spec["method"], "n": n, "m": m if spec["method"] == "dissim" else None, "dim": dim}
    start = time.perf_counter()
    if spec["method"] == "semsim":
        scores = scoring.semsim_scores(chunks(), target)
        total = time.perf_counter() - start
        higher = True
    else:
        cfg = scoring.DisSimConfig(epsilon=spec["epsilon"], sample=spec["sample"], chunk=spec["chunk"])
        phases: dict[str, dict] = {}
        originals = {name: getattr(scoring, name) for name in ("reservoir", "fit_potential", "potentials")}

        def timed(name: str, fn: Callable) -> Callable:
            # dissim_scores looks these up as module globals, so patching the module times them in place
            def wrapper(*args, **kwargs):
                gen_before, t0 = watch.seconds, time.perf_counter()
                out = fn(*args, **kwargs)
                generated = watch.seconds - gen_before
                phases[name] = {
                    "seconds": round(time.perf_counter() - t0 - generated, 3),
                    "generate_s": round(generated, 3),
                    "peak_rss_increase_mib_by_end": round(_maxrss_mib() - base_max, 1),
                }
                return out

            return wrapper

        for name, fn in originals.items():
            setattr(scoring, name, timed(name, fn))
        try:
            scores, potential = scoring.dissim_scores(chunks, target, cfg, seed=seed)
        finally:
            for name, fn in originals.items():
                setattr(scoring, name, fn)
        total = time.perf_counter() - start
        higher = False
        fit_n = min(n, cfg.sample)
        row.update(
            sample=cfg.sample,
            exact=cfg.sample >= n,
            epsilon=cfg.epsilon,
            chunk=cfg.chunk,
            sinkhorn_iterations=potential.iterations,
            marginal_error=float(f"{potential.marginal_error:.3e}"),
            phases={"reservoir": phases.get("reservoir"), "fit": phases.get("fit_potential"),
                    "score": phases.get("potentials")},
            fit_cost_matrix_mib_float64=round(fit_n * m * 8 / MiB, 1),
            score_chunk_matrix_mib_float64=round(min(cfg.chunk, n) * m * 8 / MiB, 1),
            dense_cost_matrix_mib_float32=round(n * m * 4 / MiB, 1),
            dense_cost_matrix_mib_float64=round(n * m * 8 / MiB, 1),
        )
    peak_max = _maxrss_mib()
    assert len(scores) == n and np.isfinite(scores).all(), (len(scores), n)
    k = max(1, int(n * TOP_SHARE))
    t0 = time.perf_counter()
    top = scoring.top_k(scores, k, higher_is_better=higher)
    top_k_s = time.perf_counter() - t0
    labels = candidate_labels(n, seed, rows)
    row.update(
        seconds=round(total - watch.seconds, 3),
        generate_s=round(watch.seconds, 3),
        total_s=round(total, 3),
        us_per_candidate=round((total - watch.seconds) / n * 1e6, 3),
        peak_rss_increase_mib=round(peak_max - base_max, 1),
        baseline_maxrss_mib=round(base_max, 1),
        baseline_rss_mib=round(base_rss, 1) if base_rss is not None else None,
        dense_candidates_mib_float32=round(n * dim * 4 / MiB, 1),
        top_k_s=round(top_k_s, 4),
        top_share_from_real_clusters=round(float(np.isin(labels[top], np.flatnonzero(REAL_WEIGHTS)).mean()), 4),
        torch_threads=torch.get_num_threads(),
    )
    if spec.get("return_scores"):
        row["_scores"] = np.asarray(scores)
    return row


def run_in_fresh_process(spec: dict, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(1)
    start = time.perf_counter()
    try:
        return pool.apply_async(measure, (spec,)).get(timeout=timeout or None)
    except mp.TimeoutError:
        return {"method": spec["method"], "n": spec["n"], "m": spec.get("m"), "dim": spec["dim"],
                "timed_out": f"killed after {time.perf_counter() - start:.0f} s (--timeout {timeout:g})"}
    finally:
        pool.terminate()
        pool.join()


# --------------------------------------------------------------------------- report
def spot_check(exact: np.ndarray, sampled: np.ndarray, n: int) -> dict:
    from scipy.stats import spearmanr

    from mmd.synth.scoring import top_k

    k = max(1, int(n * TOP_SHARE))
    a, b = set(top_k(exact, k, False).tolist()), set(top_k(sampled, k, False).tolist())
    return {
        "spearman": round(float(spearmanr(exact, sampled).statistic), 4),
        "pearson": round(float(np.corrcoef(exact, sampled)[0, 1]), 4),
        "top_share": TOP_SHARE,
        "top_overlap": round(len(a & b) / k, 4),
    }


def derived(results: list[dict]) -> dict:
    ok = [r for r in results if "timed_out" not in r]
    sem = {r["n"]: r for r in ok if r["method"] == "semsim"}
    dis = {(r["n"], r["m"]): r for r in ok if r["method"] == "dissim" and r.get("series", True)}
    out: dict = {}
    if sem:
        lo, hi = sem[min(sem)], sem[max(sem)]
        out["semsim_memory_growth"] = {
            "from_n": lo["n"], "to_n": hi["n"],
            "peak_mib": [lo["peak_rss_increase_mib"], hi["peak_rss_increase_mib"]],
            "ratio": round(hi["peak_rss_increase_mib"] / max(lo["peak_rss_increase_mib"], 0.1), 2),
            "candidates_ratio": hi["n"] / lo["n"],
        }
        out["semsim_us_per_candidate"] = {str(n): r["us_per_candidate"] for n, r in sorted(sem.items())}
    if dis:
        out["dissim_us_per_candidate"] = {f"{n}x{m}": r["us_per_candidate"] for (n, m), r in sorted(dis.items())}
        n, m = max(dis)
        big = dis[(n, m)]
        out["dissim_largest"] = {
            "n": n, "m": m,
            "seconds": big["seconds"],
            "minutes": round(big["seconds"] / 60, 2),
            "fit_seconds": big["phases"]["fit"]["seconds"],
            "fit_share_of_seconds": round(big["phases"]["fit"]["seconds"] / big["seconds"], 3),
            "peak_rss_increase_mib": big["peak_rss_increase_mib"],
            "peak_over_dense_cost_float32": round(big["peak_rss_increase_mib"] / big["dense_cost_matrix_mib_float32"], 3),
            "peak_over_dense_cost_float64": round(big["peak_rss_increase_mib"] / big["dense_cost_matrix_mib_float64"], 3),
            "peak_over_fit_cost_matrix": round(big["peak_rss_increase_mib"] / big["fit_cost_matrix_mib_float64"], 2),
        }
        same_m = sorted((k, r) for k, r in dis.items() if k[1] == m)
        if len(same_m) > 1:
            (n0, _), r0 = same_m[0]
            out["dissim_growth_with_n"] = {
                "m": m, "from_n": n0, "to_n": n,
                "seconds_ratio": round(big["seconds"] / r0["seconds"], 2),
                "peak_memory_ratio": round(big["peak_rss_increase_mib"] / max(r0["peak_rss_increase_mib"], 0.1), 2),
                "candidates_ratio": n / n0,
            }
        same_n = sorted((k, r) for k, r in dis.items() if k[0] == n)
        if len(same_n) > 1:
            (_, m0), r0 = same_n[0]
            out["dissim_growth_with_m"] = {
                "n": n, "from_m": m0, "to_m": m,
                "seconds_ratio": round(big["seconds"] / r0["seconds"], 2),
                "fit_seconds_ratio": round(big["phases"]["fit"]["seconds"] / r0["phases"]["fit"]["seconds"], 2),
                "peak_memory_ratio": round(big["peak_rss_increase_mib"] / max(r0["peak_rss_increase_mib"], 0.1), 2),
                "real_points_ratio": m / m0,
            }
    return out


def table(results: list[dict]) -> str:
    head = f"{'method':7s} {'n':>9s} {'m':>6s} {'sample':>6s} {'seconds':>8s} {'gen s':>6s} {'us/cand':>8s} " \
           f"{'peak MiB':>9s} {'dense X MiB':>11s} {'dense C MiB':>11s} {'fit s':>7s} {'iters':>5s} {'marg err':>9s}"
    lines = [head, "-" * len(head)]
    for r in results:
        if "timed_out" in r:
            lines.append(f"{r['method']:7s} {r['n']:>9,} {r.get('m') or '':>6} {r['timed_out']}")
            continue
        dis = r["method"] == "dissim"
        lines.append(
            f"{r['method']:7s} {r['n']:>9,} {r['m'] if dis else '':>6} {r['sample'] if dis else '':>6} "
            f"{r['seconds']:>8.2f} {r['generate_s']:>6.1f} {r['us_per_candidate']:>8.2f} "
            f"{r['peak_rss_increase_mib']:>9.1f} {r['dense_candidates_mib_float32']:>11,.0f} "
            f"{format(r['dense_cost_matrix_mib_float32'], ',.0f') if dis else '':>11} "
            f"{r['phases']['fit']['seconds'] if dis else '':>7} {r['sinkhorn_iterations'] if dis else '':>5} "
            f"{format(r['marginal_error'], '.1e') if dis else '':>9}"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _dissim_defaults() -> dict:
    from dataclasses import asdict

    from mmd.synth.scoring import DisSimConfig

    return asdict(DisSimConfig())


def main(argv: list[str] | None = None) -> int:
    from mmd.util import write_json  # light: no torch

    # The parent stays light (numpy only; torch is imported by the children): a spawned child's
    # ru_maxrss starts at the parent's RSS (the kernel carries the pre-exec high-water mark), so a
    # heavy parent would hide the children's smaller peaks under the baseline.
    with mp.get_context("spawn").Pool(1) as pool:
        defaults = argparse.Namespace(**pool.apply(_dissim_defaults))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--semsim-sizes", type=_sizes, default=None, help="comma-separated (default 10000,100000,1000000)")
    ap.add_argument("--dissim-sizes", type=_sizes, default=None, help="comma-separated (default 10000,30000,100000)")
    ap.add_argument("--real", type=int, default=None, help="real points m for the DisSim series (default 10000)")
    ap.add_argument("--extra-real", type=int, default=None,
                    help="a second m, run at the largest DisSim size, to show scaling in m (default 2000; 0: skip)")
    ap.add_argument("--quick", action="store_true", help="SemSim 10k,100k; DisSim 2k,5k x 2k; extra m 500; spot sample 500")
    ap.add_argument("--dim", type=int, default=512, help="feature size (512: CLIP ViT-B/32)")
    ap.add_argument("--rows", type=int, default=8192, help="candidates per generated chunk")
    ap.add_argument("--epsilon", type=float, default=defaults.epsilon)
    ap.add_argument("--sample", type=int, default=defaults.sample, help="DisSim fit sample (DisSimConfig.sample)")
    ap.add_argument("--chunk", type=int, default=defaults.chunk, help="DisSim scoring chunk (DisSimConfig.chunk)")
    ap.add_argument("--spot-sample", type=int, default=SPOT_SAMPLE,
                    help="sample for the spot check against the exact potential at the smallest DisSim size (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before one measurement is abandoned (0: none)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "select.json")
    args = ap.parse_args(argv)
    if args.quick:
        semsim = args.semsim_sizes or [10_000, 100_000]
        dissim = args.dissim_sizes or [2_000, 5_000]
        real = args.real or 2_000
        extra = 500 if args.extra_real is None else args.extra_real
        if args.spot_sample == SPOT_SAMPLE:
            args.spot_sample = 500
    else:
        semsim = args.semsim_sizes or [10_000, 100_000, 1_000_000]
        dissim = args.dissim_sizes or [10_000, 30_000, 100_000]
        real = args.real or 10_000
        extra = 2_000 if args.extra_real is None else args.extra_real

    base = {"dim": args.dim, "rows": args.rows, "seed": args.seed, "epsilon": args.epsilon, "chunk": args.chunk}
    started = time.time()
    load_before, ticks_before = os.getloadavg(), cpu_ticks()
    results: list[dict] = []

    def run(spec: dict, series: bool = True) -> dict:
        row = run_in_fresh_process({**base, **spec}, args.timeout)
        scores = row.pop("_scores", None)
        row["series"] = series
        results.append(row)
        if "timed_out" in row:
            print(f"  {row['method']:7s} n={row['n']:>9,} {row['timed_out']}", flush=True)
        else:
            extra_info = ""
            if row["method"] == "dissim":
                ph = row["phases"]
                extra_info = (f" m={row['m']:,} sample={row['sample']:,}: reservoir {ph['reservoir']['seconds']:.1f} s, "
                              f"fit {ph['fit']['seconds']:.1f} s ({row['sinkhorn_iterations']} it), "
                              f"score {ph['score']['seconds']:.1f} s;")
            print(f"  {row['method']:7s} n={row['n']:>9,}{extra_info} {row['seconds']:.2f} s "
                  f"(+{row['generate_s']:.1f} s generating), peak +{row['peak_rss_increase_mib']:.0f} MiB", flush=True)
        row["_scores"] = scores
        return row

    for n in semsim:
        run({"method": "semsim", "n": n, "m": real})
    first = None
    for i, n in enumerate(sorted(dissim)):
        row = run({"method": "dissim", "n": n, "m": real, "sample": args.sample,
                   "return_scores": i == 0 and bool(args.spot_sample)})
        first = first or row
    if extra and dissim:
        run({"method": "dissim", "n": max(dissim), "m": extra, "sample": args.sample})
    spot = None
    if args.spot_sample and first is not None and first.get("_scores") is not None:
        n0 = first["n"]
        check = run({"method": "dissim", "n": n0, "m": real, "sample": args.spot_sample, "return_scores": True},
                    series=False)
        if check.get("_scores") is not None:
            spot = {"n": n0, "m": real, "reference_sample": first["sample"], "reference_exact": first["exact"],
                    "sample": args.spot_sample,
                    "seconds": [first["seconds"], check["seconds"]],
                    "top_share_from_real_clusters": [first["top_share_from_real_clusters"],
                                                     check["top_share_from_real_clusters"]],
                    **spot_check(first["_scores"], check["_scores"], n0)}
    for row in results:
        row.pop("_scores", None)
    load_after, ticks_after = os.getloadavg(), cpu_ticks()
    steal = None
    if ticks_before and ticks_after and ticks_after[1] > ticks_before[1]:
        steal = round((ticks_after[0] - ticks_before[0]) / (ticks_after[1] - ticks_before[1]), 4)
    threads = next((r["torch_threads"] for r in results if "torch_threads" in r), None)

    report = {
        "benchmark": "selection scale: SemSim and DisSim time and peak memory against input size",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": threads,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
            "cpu_steal_share": steal,
        },
        "versions": {pkg: _version(pkg) for pkg in ("numpy", "torch", "pot", "scipy")},
        "settings": {
            "semsim_sizes": semsim,
            "dissim_sizes": sorted(dissim),
            "real": real,
            "extra_real": extra,
            "dim": args.dim,
            "rows_per_generated_chunk": args.rows,
            "dissim": {"epsilon": args.epsilon, "sample": args.sample, "chunk": args.chunk,
                       "max_iter": defaults.max_iter, "tol": defaults.tol},
            "spot_sample": args.spot_sample,
            "seed": args.seed,
            "data": (
                f"unit vectors from {CLUSTERS} Gaussian clusters (directions {COMMON} * shared + {OWN} * own, "
                f"noise norm {NOISE}), candidates uniform over the clusters, generated chunk by chunk; real set: "
                f"clusters weighted {REAL_WEIGHTS.tolist()}, each shifted by a vector of norm {DRIFT}"
            ),
            "memory": "peak_rss_increase_mib: ru_maxrss at the end of the call minus ru_maxrss after imports and "
                      "the real set (fresh spawned process per measurement)",
            "seconds": "wall-clock of the library call minus the time spent generating candidates (generate_s)",
        },
        "results": results,
        "spot_check_sampled_potential": spot,
        "derived": derived(results),
        "wall_s": round(time.time() - started, 1),
    }
    write_json(args.out, report)
    print()
    print(table(results))
    if spot:
        print(f"\nspot check n={spot['n']:,} x m={spot['m']:,}: sample {spot['sample']:,} vs exact: spearman "
              f"{spot['spearman']}, pearson {spot['pearson']}, top-10% overlap {spot['top_overlap']}")
    print(f"\nload average 1 min {report['machine']['load_average_1min']}, steal {steal}; wall {report['wall_s']} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
