"""Detection quality on held-out real data: each family's default against simple baselines, per dataset.

One command (`make experiment-quality`) writes docs/experiments/quality.{json,md}; the README's
"Detection quality" section is its table. Both datasets come from ../shared/datasets, features from the
offline encoder (MiniLM-L6 text, EfficientNet-Lite0 image), seeds 0, 1, 2:

- **HarMeme**, train -> val (the 175 labelled val memes; its test split is not in ../shared): the data of
  `make experiment-rgcl` (configs/experiment-rgcl.yaml: early stopping on 15% of train, carved by picture).
- **MediaEval**, the 2015 development set with eight whole events held out (nepal, boston, eclipse, garissa,
  sochi, samurai, bringback, passport: 2,851 posts after dedupe, no picture or event shared with training): the data of
  `make experiment-cmc` (configs/experiment-cmc.yaml: posts only, plus the 100 DisSim-selected synthetic
  posts).

Rows: a logistic regression on the text features alone (class weights none and balanced; the bar a
detector has to clear), one on text + image, CMC with the variant and class weights params.yaml sets
(`cmc.variant`, `cmc.class_weight`, `cmc.picture_weight`) and the other settings measured for that choice, and RGCL with its
default predictor (RKC) and its logistic head. Figures are on the held-out split at the 0.5 threshold of
the calibrated scores: mean ± std over the seeds, and for each row the 95% interval of the seed-mean from a
bootstrap that resamples whole pictures (posts that share a picture, and memes that share an image, are
not independent), 1,000 draws.

    python experiments/quality.py [--datasets harmeme,mediaeval] [--skip-prepare] [--reuse] [--render] [--out DIR]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

SEEDS = (0, 1, 2)
DRAWS = 1000
COLUMNS = ("accuracy", "auroc", "macro_f1", "pos_p", "pos_r", "pos_f1", "neg_p", "neg_r", "neg_f1")
# the CMC settings measured beside the default, per dataset: (variant, class weights, picture weights)
CMC_ROWS = {
    "harmeme": [("cmc", "none", "none"), ("cmc", "none", "equal"), ("text", "none", "equal"),
                ("text_distill", "balanced", "equal"), ("block", "balanced", "equal")],
    "mediaeval": [("cmc", "none", "none"), ("cmc", "none", "equal"), ("text", "none", "none"),
                  ("text", "none", "equal"), ("text", "balanced", "equal"), ("text_distill", "none", "equal"),
                  ("text_distill", "balanced", "equal"),
                  ("block", "balanced", "equal")],
}
PUBLISHED = {
    "harmeme": [
        {"method": "RGCL (Mei et al., ACL 2024)", "encoder": "CLIP ViT-L/14, frozen", "split": "HarMeme test",
         "auroc": 0.918, "accuracy": 0.870},
    ],
    "mediaeval": [
        {"method": "SpotFake (Singhal et al., 2019)", "encoder": "BERT + VGG-19", "split": "MediaEval 2016 test",
         "accuracy": 0.777},
        {"method": "BDANN (Zhang et al., 2020)", "encoder": "BERT + VGG-19, event-adversarial",
         "split": "MediaEval 2016 test", "accuracy": 0.830},
        {"method": "HMCAN (Qian et al., 2021)", "encoder": "BERT + ResNet-50", "split": "MediaEval 2016 test",
         "accuracy": 0.897},
    ],
}
DATASETS = {
    "harmeme": {"params": "experiment-rgcl.yaml", "prepare": "rgcl", "labels": ("harmless", "harmful")},
    "mediaeval": {"params": "experiment-cmc.yaml", "prepare": "cmc", "labels": ("real", "fake")},
}


def _flat(m: dict, label_names) -> dict[str, float]:
    neg, pos = label_names
    out = {"accuracy": m["accuracy"], "auroc": float("nan") if m["auroc"] is None else m["auroc"],
           "macro_f1": m["macro_f1"]}
    for side, name in (("pos", pos), ("neg", neg)):
        pc = m["per_class"][name]
        out |= {f"{side}_p": pc["precision"], f"{side}_r": pc["recall"], f"{side}_f1": pc["f1"]}
    return out


def picture_clusters(split) -> np.ndarray:
    """A cluster id per item: items that share a picture resample together (text-only items alone)."""
    _, cluster = np.unique(np.array(split.picture_keys()), return_inverse=True)
    return cluster


def cluster_interval(y: np.ndarray, scores: list[np.ndarray], cluster: np.ndarray, label_names,
                     seed: int = 0) -> dict[str, list[float]]:
    """95% interval of each column's seed-mean, resampling whole clusters."""
    from mmd.evaluate.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(cluster == c) for c in range(cluster.max() + 1)]
    values: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for _ in range(DRAWS):
        idx = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[idx])) < 2:
            continue
        flats = [_flat(classification_metrics(y[idx], p[idx], label_names), label_names) for p in scores]
        for c in COLUMNS:
            values[c].append(float(np.nanmean([f[c] for f in flats])))
    return {c: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for c, v in values.items() if v}


def fit_logistic(x: np.ndarray, y: np.ndarray, class_weight: str | None = "balanced",
                 seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic regression (C = 1) on standardised features: features -> P(label 1). The baseline of the
    quality and OCR experiments."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=1.0, max_iter=5000, class_weight=class_weight, random_state=seed)
    clf.fit(scaler.transform(x), y)
    return lambda z: clf.predict_proba(scaler.transform(z))[:, 1]


def logistic(data, features: Callable, class_weight: str | None, seed: int) -> np.ndarray:
    return fit_logistic(features(data.train), data.train.labels, class_weight, seed)(features(data.test))


def measure(name: str, settings, log: Callable[[str], None], stored: dict | None = None) -> dict:
    """Every row's test scores per seed on one dataset, and its figures; a detector row whose settings are in
    `stored` (an earlier run's rows, with --reuse) is taken from there instead of trained again."""
    from mmd.evaluate.metrics import classification_metrics
    from mmd.models.cmc.fit import train_variant
    from mmd.models.data import load_training_data
    from mmd.models.rgcl.fit import train_rgcl

    labels = DATASETS[name]["labels"]
    tcfg = settings.params.train.model_copy(update={"label_names": labels})
    data = load_training_data(settings)
    log(f"{name}: {json.dumps(data.summary())}")
    cmc, rgcl = settings.params.cmc, settings.params.rgcl
    default = (cmc.variant, cmc.class_weight, cmc.picture_weight)
    rows: dict[str, dict] = {}
    earlier = {tuple(r["config"]): (row, r) for row, r in (stored or {}).items() if r.get("config")}

    def reused(config: list) -> bool:
        if tuple(config) not in earlier:
            return False
        row, r = earlier[tuple(config)]
        rows[row] = r
        log(f"{name}: {row}: reused from the stored results")
        return True

    def add(row: str, scores: list[np.ndarray], about: str, config: list | None = None) -> None:
        flats = [_flat(classification_metrics(data.test.labels, p, labels), labels) for p in scores]
        rows[row] = {"about": about, "config": config, "runs": flats,
                     "mean": {c: float(np.nanmean([f[c] for f in flats])) for c in COLUMNS},
                     "std": {c: float(np.nanstd([f[c] for f in flats])) for c in COLUMNS},
                     "interval": cluster_interval(data.test.labels, scores, picture_clusters(data.test), labels)}
        m = rows[row]["mean"]
        log(f"{name}: {row}: accuracy {m['accuracy']:.3f} AUROC {m['auroc']:.3f} {labels[0]} F1 {m['neg_f1']:.3f} "
            f"R {m['neg_r']:.3f}, {labels[1]} F1 {m['pos_f1']:.3f} R {m['pos_r']:.3f}")

    for cw in ("none", "balanced"):
        add(f"logistic regression, text ({cw})",
            [logistic(data, lambda s: s.text, None if cw == "none" else "balanced", s) for s in SEEDS],
            "the text features alone")
    add("logistic regression, text + image (balanced)",
        [logistic(data, lambda s: np.concatenate([s.text, s.image], 1), "balanced", s) for s in SEEDS],
        "the concatenated features")
    for variant, cw, pw in dict.fromkeys([default, *CMC_ROWS[name]]):
        if reused(["cmc", variant, cw, pw]):
            continue
        c = cmc.model_copy(update={"class_weight": cw, "picture_weight": pw})
        runs = [train_variant(data, c, tcfg, variant, s) for s in SEEDS]
        add(cmc_row(variant, cw, pw), [r.scores["test"] for r in runs],
            f"{variant}: best epochs {[r.stopped for r in runs]}", ["cmc", variant, cw, pw])
    if reused(["rgcl", "rkc"]) and reused(["rgcl", "head"]):
        return {"data": data.summary(), "labels": list(labels), "rows": rows, "published": PUBLISHED[name]}
    heads, rkcs = [], []
    for s in SEEDS:
        tr = train_rgcl(data, rgcl, tcfg, seed=s)
        rkcs.append(tr.rkc["test"])
        heads.append(head_scores(tr, data))
    add(f"RGCL + RKC (k = {rgcl.rkc.k})", rkcs, "retrieval kNN over the training embeddings", ["rgcl", "rkc"])
    add("RGCL, logistic head", heads, "the head's calibrated scores", ["rgcl", "head"])
    return {"data": data.summary(), "labels": list(labels), "rows": rows, "published": PUBLISHED[name]}


def cmc_row(variant: str, class_weight: str, picture_weight: str) -> str:
    return f"CMC {variant}, class weights {class_weight}, picture weights {picture_weight}"


def defaults(settings) -> list[list]:
    """The configs params.yaml trains by default, as the rows' `config` names them."""
    cmc, rgcl = settings.params.cmc, settings.params.rgcl
    return [["cmc", cmc.variant, cmc.class_weight, cmc.picture_weight], ["rgcl", rgcl.predict_with]]


def head_scores(trained, data) -> np.ndarray:
    """The RGCL head's calibrated test scores."""
    import torch

    from mmd.models.rgcl.predictor import embed_all, sigmoid, tensors

    _, logit = embed_all(trained.head, tensors(data.test, torch.device("cpu")))
    return sigmoid(logit, trained.temperature)


def table(name: str, result: dict) -> str:
    neg, pos = result["labels"]
    heads = ["method", "accuracy", "AUROC", "macro-F1", f"{pos} P", f"{pos} R", f"{pos} F1", f"{neg} P",
             f"{neg} R", f"{neg} F1"]
    order = ("accuracy", "auroc", "macro_f1", "pos_p", "pos_r", "pos_f1", "neg_p", "neg_r", "neg_f1")
    lines = [f"**{name}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row, r in result["rows"].items():
        if r.get("config") in result["default"]:
            row += " **(the default)**"
        cells = []
        for c in order:
            cell = f"{r['mean'][c]:.3f} ± {r['std'][c]:.3f}"
            if c in ("accuracy", "auroc", "neg_f1") and c in r["interval"]:
                lo, hi = r["interval"][c]
                cell += f" [{lo:.3f}, {hi:.3f}]"
            cells.append(cell)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for p in result["published"]:
        cells = [f"{p[c]:.3f}" if c in p else "–" for c in ("accuracy", "auroc")]
        lines.append(f"| {p['method']}, published: {p['encoder']}, {p['split']} | " + " | ".join(cells)
                     + " | " + " | ".join("–" for _ in order[2:]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse

    from mmd.config import load_settings
    from synthetic_selection import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="harmeme,mediaeval")
    parser.add_argument("--out", default=str(ROOT / "docs" / "experiments"))
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the data already prepared")
    parser.add_argument("--reuse", action="store_true",
                        help="take the detector rows already in quality.json with the same settings, train only new ones")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: mark params.yaml's defaults in the stored results and write the table")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        return write(out, json.loads((out / "quality.json").read_text()))
    if not (ROOT.parent / "shared" / "datasets").exists():
        sys.exit(f"the real datasets are not at {ROOT.parent / 'shared' / 'datasets'}; this experiment needs them")
    from cmc_ablation import prepare_selected
    from rgcl_harmeme import prepare_plain

    preparers = {"rgcl": prepare_plain, "cmc": lambda s: (prepare(s), prepare_selected(s))}
    # measuring one dataset keeps the other's stored results
    result: dict = json.loads((out / "quality.json").read_text()) if (out / "quality.json").exists() else {}
    result.update({"made_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seeds": list(SEEDS), "draws": DRAWS})
    result.setdefault("datasets", {})
    for name in args.datasets.split(","):
        started = time.perf_counter()
        spec = DATASETS[name]
        settings = load_settings(ROOT / "configs" / spec["params"])
        if not args.skip_prepare:
            preparers[spec["prepare"]](settings)
        stored = result["datasets"].get(name, {}).get("rows") if args.reuse else None
        result["datasets"][name] = measure(name, settings, lambda m: print(m, flush=True), stored)
        # a --reuse run's time is not the time of the whole measurement: kept apart
        key = "seconds_of_reuse_runs" if args.reuse else "seconds"
        result.setdefault(key, {})[name] = round(time.perf_counter() - started, 1)
        write(out, result)


def write(out: Path, result: dict) -> None:
    """quality.json, and the table with the rows params.yaml trains by default marked."""
    from mmd.config import load_settings

    for name, r in result["datasets"].items():
        r["default"] = defaults(load_settings(ROOT / "configs" / DATASETS[name]["params"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join(table(n, r) for n, r in result["datasets"].items())
    (out / "quality-table.md").write_text(text)
    print(text)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
