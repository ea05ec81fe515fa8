"""How to mix text and image vectors into the one vector selection and retrieval use.

Measured on real HarMeme memes (train as the database, val as queries) with the offline
encoders: for each text weight w of the mixed vector L2norm([w*t, (1-w)*i]),
- kNN AUROC: rank-weighted vote of the 20 nearest train memes (the retrieval classifier's rule);
- self-retrieval: a val meme's own caption + picture finds it among all memes (recall@1).
Writes benchmarks/results/mixing.json.

    .venv/bin/python benchmarks/bench_mixing.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U form, ties counted half."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def knn_scores(db: np.ndarray, db_labels: np.ndarray, queries: np.ndarray, k: int = 20) -> np.ndarray:
    sims = queries @ db.T
    top = np.argsort(-sims, axis=1)[:, :k]
    weights = np.arange(k, 0, -1, dtype=np.float64)  # rank weights K - k + 1
    return (db_labels[top] * weights).sum(axis=1) / weights.sum()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="use only the first N train memes (0 = all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mixing.json")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"skipped: {SHARED} not found")
    sys.path.insert(0, str(ROOT))
    from mmd.config import load_settings
    from mmd.encoders import EmbeddingCache, build_encoder, embed_items, mix
    from mmd.ingest import run_ingest
    from mmd.items import ITEM_SCHEMA, read_table

    work = ROOT / "benchmarks" / ".work" / "mixing"
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = {"data": str(work / "data"), "reports": str(work / "reports")}
    params["ingest"]["sources"] = [{"name": "harmeme", "type": "memes", "preset": "harmeme",
                                    "files": [str(SHARED / "harmeme" / "train.jsonl"), str(SHARED / "harmeme" / "val.jsonl")],
                                    "images_dir": str(SHARED / "harmeme" / "images")}]
    params["ingest"]["allowed_roots"] = [str(SHARED)]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    settings = load_settings(work / "params.yaml")
    run_ingest(settings, show_progress=False)
    rows = read_table(settings.data_dir / "ingested" / "items.parquet", ITEM_SCHEMA).to_pylist()
    train = [r for r in rows if r["split"] == "train"][: args.limit or None]
    val = [r for r in rows if r["split"] == "val"]
    encoder = build_encoder(settings.params.embed, settings.root)
    cache = EmbeddingCache.for_encoder(settings.data_dir / "embeddings" / "cache", encoder)
    t0 = time.perf_counter()
    enc = embed_items(train + val, encoder, cache, settings.data_dir, 32, 1, show_progress=True)
    cache.flush()
    encode_s = time.perf_counter() - t0
    n = len(train)
    labels = np.array([r["label"] for r in train + val], dtype=np.float64)

    results = []
    for w in (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0):
        vecs = mix(enc.text, enc.image, enc.has_image, w)
        scores = knn_scores(vecs[:n], labels[:n], vecs[n:])
        self_hits = np.argmax(vecs[n:] @ vecs.T, axis=1) == np.arange(n, len(vecs))
        results.append({"text_weight": w, "knn_auroc": round(auroc(scores, labels[n:]), 4),
                        "self_retrieval_at_1": round(float(self_hits.mean()), 4)})
        print(results[-1])
    best = max(results, key=lambda r: r["knn_auroc"])
    out = {
        "benchmark": "mixed-modal vector: text weight",
        "data": f"HarMeme train ({n}) as database, val ({len(val)}) as queries; binary harmful label",
        "encoder": encoder.identity,
        "knn": "20 nearest, rank weights K-k+1 (RGCL's retrieval classifier rule)",
        "encode_seconds": round(encode_s, 1),
        "results": results,
        "best_text_weight_by_auroc": best["text_weight"],
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
