"""RGCL on HarMeme (Mei et al.'s table, on the public Harm-C set beside the project).

One command (`make experiment-rgcl`) writes docs/experiments/rgcl-harmeme.{md,json}:

1. ingest, validate and embed HarMeme's train.jsonl and val.jsonl with the offline encoder
   (MiniLM text + EfficientNet-Lite0 image features: no CLIP weights exist offline);
2. train on train (early stopping on 15% of it, carved by picture), score on val;
3. for each seed: RGCL scored by RKC (K = 20, rank weights) and by its logistic head; the
   same network trained with BCE alone (a plain MLP); and a logistic regression on the
   concatenated features. Mean ± std over the seeds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

SEEDS = (0, 1, 2)
PUBLISHED = {"AUROC": 0.918, "accuracy": 0.870,
             "note": "Mei et al. (ACL 2024), HarMeme test split, frozen CLIP ViT-L/14 features"}
COLUMNS = ("auroc", "accuracy", "macro_f1")


def prepare_plain(settings) -> None:
    from mmd.embed import run_embed
    from mmd.ingest import run_ingest
    from mmd.validate import run_validate

    run_ingest(settings, show_progress=False)
    run_validate(settings)
    run_embed(settings, show_progress=False)


def logistic_regression(data, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([data.train.text, data.train.image], axis=1)
    xt = np.concatenate([data.test.text, data.test.image], axis=1)
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=0.1, max_iter=3000, random_state=seed).fit(scaler.transform(x), data.train.labels)
    return clf.predict_proba(scaler.transform(xt))[:, 1]


def main() -> None:
    from mmd.evaluate.metrics import classification_metrics
    from mmd.models.data import load_training_data
    from mmd.models.rgcl.fit import train_rgcl
    from synthetic_selection import start

    started = time.perf_counter()
    args, settings = start(__doc__, "experiment-rgcl.yaml", prepare_plain)
    cfg, tcfg = settings.params.rgcl, settings.params.train
    data = load_training_data(settings)
    print(data.summary(), flush=True)
    plain_cfg = cfg.model_copy(update={"bce_weight": 1.0, "early_stop": "bce"})
    runs: dict[str, list[dict]] = {"RGCL + RKC": [], "RGCL, logistic head": [], "MLP (BCE only)": [],
                                   "logistic regression": []}
    for seed in SEEDS:
        rgcl = train_rgcl(data, cfg, tcfg, seed=seed, log=lambda m: print(m, flush=True))
        runs["RGCL + RKC"].append(rgcl.metrics["test"]["rkc"])
        runs["RGCL, logistic head"].append(rgcl.metrics["test"]["head"])
        plain = train_rgcl(data, plain_cfg, tcfg, seed=seed)
        runs["MLP (BCE only)"].append(plain.metrics["test"]["head"])
        runs["logistic regression"].append(classification_metrics(data.test.labels, logistic_regression(data, seed),
                                                                   tcfg.label_names))
        print(f"seed {seed}: " + ", ".join(f"{k} AUROC {v[-1]['auroc']:.3f}" for k, v in runs.items()), flush=True)
    rows = []
    for name, ms in runs.items():
        rows.append({"method": name, "mean": {c: float(np.mean([m[c] for m in ms])) for c in COLUMNS},
                     "std": {c: float(np.std([m[c] for m in ms])) for c in COLUMNS}, "runs": ms})
    result = {"made_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seeds": list(SEEDS), "data": data.summary(),
              "rgcl": cfg.model_dump(mode="json"), "published": PUBLISHED, "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    lines = ["| method | AUROC | accuracy | macro-F1 |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(f"{r['mean'][c]:.3f} ± {r['std'][c]:.3f}" for c in COLUMNS)
                     + " |")
    lines.append(f"| RGCL (published: {PUBLISHED['note']}) | {PUBLISHED['AUROC']:.3f} | {PUBLISHED['accuracy']:.3f} | - |")
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rgcl-harmeme.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "rgcl-harmeme-table.md").write_text(table)
    print(table)
    print(f"wrote {out} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
