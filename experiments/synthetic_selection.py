"""Does selecting synthetic data help, which selection, and how much? (Zeng et al.'s open questions)

One command (`make experiment-synthetic`) runs the real pipeline on the public datasets
beside the project (../shared/datasets) and writes the table, the numbers and the plot
to docs/experiments/:

1. ingest, validate, embed and index MediaEval (tweets about 18 events) and HarMeme
   (COVID-19 memes) with the offline encoder;
2. hold out a test split that shares nothing with training: whole MediaEval events
   (TEST_EVENTS: both classes occur, the largest event trains) and a quarter of the
   HarMeme images (by image hash). Held-out items never parent or partner a synthetic
   item;
3. `mmd synthesize` on the training split: out-of-context pairs and caption edits from
   the tweets, recompositions from the memes;
4. per target and per method (random, SemSim, DisSim, hybrid proxy, hybrid RRF) select k
   synthetic items against the real training distribution (unlabeled, as in the paper),
   train the same classifier (logistic regression on the frozen mixed vectors) on a
   scarce real labelled set plus the k selected, and score F1 on the held-out split.
   k = 0 is the real-only baseline. Every number is a mean over REAL_SEEDS draws of the
   scarce real set (random selection also varies its own seed with it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmd.config import load_settings  # noqa: E402

TEST_EVENTS = ("nepal", "boston", "eclipse", "garissa", "sochi", "samurai", "bringback", "passport")
KS = (0, 100, 300, 1000, 3000)
METHODS = ("random", "semsim", "dissim", "hybrid_proxy", "hybrid_rrf")
REAL_SEEDS = (0, 1, 2)
N_REAL = 200  # labelled real examples: fact-checked data is scarce, which is why synthetic data is used
TARGETS = {
    "mediaeval": {"source": "mediaeval", "kind": "post"},
    "harmeme": {"source": "harmeme", "kind": "meme"},
}


def prepare(settings) -> None:
    """ingest -> validate (test split assigned) -> embed -> index -> synthesize, all incremental."""
    import pyarrow as pa

    from mmd.embed import run_embed
    from mmd.index import run_index
    from mmd.ingest import run_ingest
    from mmd.items import write_table
    from mmd.synth.generate import run_synthesize
    from mmd.validate import run_validate

    run_ingest(settings, show_progress=False)
    run_validate(settings)
    path = settings.data_dir / "validated" / "items.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    for r in rows:
        if r["source"] == "mediaeval":
            r["split"] = "test" if r["group"] in TEST_EVENTS else "train"
        elif r["source"] == "harmeme":
            r["split"] = "test" if int(r["image_sha256"][:8], 16) % 4 == 0 else "train"
    write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    t = time.perf_counter()
    run_embed(settings, show_progress=False)
    print(f"embed {time.perf_counter() - t:.0f}s", flush=True)
    run_index(settings)
    t = time.perf_counter()
    report = run_synthesize(settings)
    print(f"synthesize {time.perf_counter() - t:.0f}s: {report.to_dict()['generators']}", flush=True)


def load(settings):
    from mmd.formats.vectors import read_vectors

    items = pq.read_table(settings.data_dir / "validated" / "items.parquet").to_pandas()
    table, vec, _ = read_vectors(settings.data_dir / "embeddings" / "items.parquet")
    where = {i: n for n, i in enumerate(table.column("id").to_pylist())}
    items = items[items.id.isin(where)].reset_index(drop=True)
    items["row"] = items.id.map(where)
    pool = pq.read_table(settings.layout.pool).to_pandas()
    ptable, pvec, _ = read_vectors(settings.layout.pool_vectors)
    pwhere = {i: n for n, i in enumerate(ptable.column("id").to_pylist())}
    pool["row"] = pool.id.map(pwhere)
    return items, vec, pool, pvec


def f1s(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro"))


def run_target(name: str, spec: dict, items, vec, pool, pvec, cfg) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    from mmd.synth.scoring import dissim_scores, rrf, semsim_scores, top_k
    from mmd.synth.select import chunks_from, dissim_config, proxy_winner, split_target

    real = items[(items.source == spec["source"]) & items.label.notna()]
    train, test = real[real.split == "train"], real[real.split == "test"]
    parents = set(train.id)
    cand = pool[(pool.kind == spec["kind"]) & pool.parent_ids.map(lambda p: p[0] in parents) & pool.label.notna()]
    cand = cand.reset_index(drop=True)
    X_c, y_c = pvec[cand.row.to_numpy()], cand.label.to_numpy().astype(int)
    X_test, y_test = vec[test.row.to_numpy()], test.label.to_numpy().astype(int)
    target = vec[train.row.to_numpy()]
    if len(target) > cfg.max_target:
        target = target[np.random.default_rng(cfg.seed).permutation(len(target))[: cfg.max_target]]
    chunks = chunks_from(X_c)
    print(f"[{name}] real train {len(train)} (pos {train.label.mean():.2f}), test {len(test)} "
          f"(pos {test.label.mean():.2f}), candidates {len(cand)} (pos {y_c.mean():.2f}), target {len(target)}",
          flush=True)

    t = time.perf_counter()
    sem = semsim_scores(chunks(), target)
    dis, pot = dissim_scores(chunks, target, dissim_config(cfg), cfg.seed)
    held, fit = split_target(target, cfg.hybrid.holdout, cfg.seed)
    sem_fit = semsim_scores(chunks(), fit)
    dis_fit, _ = dissim_scores(chunks, fit, dissim_config(cfg), cfg.seed)
    print(f"[{name}] scoring {time.perf_counter() - t:.0f}s (sinkhorn {pot.iterations} it, "
          f"err {pot.marginal_error:.1e})", flush=True)
    orders = {"semsim": top_k(sem, len(sem)), "dissim": top_k(-dis, len(dis)),
              "hybrid_rrf": top_k(rrf(sem, dis), len(sem))}
    proxy = {}
    for k in KS[1:]:
        winner, div = proxy_winner(chunks, sem_fit, dis_fit, held, k, cfg.dissim.epsilon, cfg.seed)
        proxy[k] = (winner, div)

    results = []
    for method in METHODS:
        for k in KS:
            runs = []
            for seed in REAL_SEEDS:
                rng = np.random.default_rng(seed)
                pick_real = train.iloc[rng.permutation(len(train))[:N_REAL]]
                if k == 0:
                    sel = np.zeros(0, int)
                elif method == "random":
                    sel = rng.permutation(len(cand))[:k]
                elif method == "hybrid_proxy":
                    sel = orders[proxy[k][0]][:k]
                else:
                    sel = orders[method][:k]
                X = np.concatenate([vec[pick_real.row.to_numpy()], X_c[sel]])
                y = np.concatenate([pick_real.label.to_numpy().astype(int), y_c[sel]])
                clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(X, y)
                f1, macro = f1s(y_test, clf.predict(X_test))
                runs.append((f1, macro, float(y_c[sel].mean()) if len(sel) else float("nan")))
            f1, macro, pos = np.mean(runs, axis=0)
            row = {"target": name, "method": method, "k": k, "f1": round(float(f1), 4),
                   "macro_f1": round(float(macro), 4), "f1_std": round(float(np.std([r[0] for r in runs])), 4),
                   "synthetic_positive_share": None if k == 0 else round(float(pos), 3)}
            if method == "hybrid_proxy" and k:
                row["proxy_winner"], row["proxy_divergence"] = proxy[k]
            results.append(row)
            print(f"[{name}] {method:13s} k={k:5d} F1 {f1:.3f} macro {macro:.3f}", flush=True)
    return results


def write_outputs(results: list[dict], meta: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic-selection.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    targets = list(dict.fromkeys(r["target"] for r in results))
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for method in METHODS:
            rows = [r for r in results if r["target"] == target and r["method"] == method]
            ax.plot([max(r["k"], 30) for r in rows], [r["f1"] for r in rows], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xticks([30, *KS[1:]], ["0", *map(str, KS[1:])])
        ax.set_xlabel("k selected synthetic items (+ %d real)" % N_REAL)
        ax.set_ylabel("F1 (positive class) on held-out real")
        ax.set_title(target)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "synthetic-selection.png", dpi=110)

    tables = []
    for metric, title in (("f1", "F1 of the positive class"), ("macro_f1", "macro-F1")):
        lines = [f"{title} on the held-out real split (mean of {len(REAL_SEEDS)} draws of {N_REAL} real examples)", "",
                 "| target | k | " + " | ".join(METHODS) + " |", "|---|---:|" + "---:|" * len(METHODS)]
        for target in targets:
            for k in KS:
                values = [next(r[metric] for r in results
                               if r["target"] == target and r["method"] == m and r["k"] == k) for m in METHODS]
                cells = [f"{v:.3f}" for v in values]
                if k:
                    best = int(np.argmax(values))
                    cells[best] = f"**{cells[best]}**"
                lines.append(f"| {target} | {k} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    (out / "synthetic-selection-table.md").write_text("\n\n".join(tables) + "\n")


def start(doc: str, params: str, prepare_data=None, add_arguments=None):
    """An experiment's command line (--params, --out, --skip-prepare, and whatever `add_arguments`
    adds to the parser), its settings, and the data prepared by `prepare_data` (this experiment's
    `prepare` by default) unless --skip-prepare; exits when the real datasets are absent."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "configs" / params))
    parser.add_argument("--out", default=str(ROOT / "docs" / "experiments"))
    parser.add_argument("--skip-prepare", action="store_true", help="Reuse the data already prepared.")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    settings = load_settings(args.params)
    shared = ROOT.parent / "shared" / "datasets"
    if not shared.exists():
        sys.exit(f"the real datasets are not at {shared}; this experiment needs them")
    if not args.skip_prepare:
        (prepare_data or prepare)(settings)
    return args, settings


def main() -> None:
    started = time.perf_counter()
    args, settings = start(__doc__, "experiment-synthetic.yaml")
    items, vec, pool, pvec = load(settings)
    cfg = settings.params.select
    results = []
    for name, spec in TARGETS.items():
        results += run_target(name, spec, items, vec, pool, pvec, cfg)
    meta = {"encoder": settings.params.embed.backend, "text_weight": settings.params.embed.text_weight,
            "n_real": N_REAL, "real_seeds": list(REAL_SEEDS), "ks": list(KS), "test_events": list(TEST_EVENTS),
            "classifier": "sklearn LogisticRegression(C=1.0, class_weight=balanced) on the mixed vectors",
            "dissim": cfg.dissim.model_dump(), "hybrid_holdout": cfg.hybrid.holdout,
            "seconds": round(time.perf_counter() - started, 1)}
    write_outputs(results, meta, Path(args.out))
    print(f"wrote {args.out} in {meta['seconds']:.0f}s")


if __name__ == "__main__":
    main()
