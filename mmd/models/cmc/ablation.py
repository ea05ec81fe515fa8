"""Wei et al.'s ablation: every variant of `cmc.ablation` trained on the same data and seeds, as a table."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mmd.config import Settings
from mmd.items import now_iso
from mmd.layout import ABLATION, ABLATION_TABLE
from mmd.models.cmc.config import VARIANTS
from mmd.models.cmc.fit import train_variant
from mmd.models.data import TrainData
from mmd.util import write_json

ABLATION_COLUMNS = ("accuracy", "fake_p", "fake_r", "fake_f1", "real_p", "real_r", "real_f1", "macro_f1", "auroc")


def _flat(m: dict, label_names: Sequence[str]) -> dict[str, float]:
    neg, pos = label_names
    return {"accuracy": m["accuracy"], "fake_p": m["per_class"][pos]["precision"],
            "fake_r": m["per_class"][pos]["recall"], "fake_f1": m["per_class"][pos]["f1"],
            "real_p": m["per_class"][neg]["precision"], "real_r": m["per_class"][neg]["recall"],
            "real_f1": m["per_class"][neg]["f1"], "macro_f1": m["macro_f1"],
            "auroc": float("nan") if m["auroc"] is None else m["auroc"]}


def run_ablation(settings: Settings, variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                 data: TrainData | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train every ablation variant (on frozen features) on the same data and seeds; write the table."""
    from mmd.models.data import load_training_data

    cfg, tcfg = settings.params.cmc, settings.params.train
    variants = list(variants or cfg.ablation)
    seeds = list(seeds or cfg.ablation_seeds)
    if cfg.finetune.enabled:
        raise ValueError("the ablation runs on frozen features: set cmc.finetune.enabled to false")
    data = data or load_training_data(settings)
    scored_on = "test" if data.test is not None else "val"
    rows = []
    for name in variants:
        runs = [train_variant(data, cfg, tcfg, name, seed, log=log) for seed in seeds]
        flat = [_flat(r.metrics[scored_on], tcfg.label_names) for r in runs]
        mean = {c: float(np.mean([f[c] for f in flat])) for c in ABLATION_COLUMNS}
        std = {c: float(np.std([f[c] for f in flat])) for c in ABLATION_COLUMNS}
        rows.append({"variant": name, "about": VARIANTS[name].about, "mean": mean, "std": std, "runs": flat,
                     "seconds": float(np.mean([r.seconds for r in runs])),
                     "best_epochs": [r.stopped for r in runs]})
    result = {"made_at": now_iso(), "scored_on": scored_on, "seeds": seeds, "label_names": list(tcfg.label_names),
              "data": data.summary(), "cmc": cfg.model_dump(mode="json"), "rows": rows}
    at = settings.layout
    write_json(at.path(ABLATION, family="cmc"), result)
    at.path(ABLATION_TABLE, family="cmc").write_text(ablation_table(result))
    return result


def ablation_table(result: dict) -> str:
    """The ablation as a Markdown table, in the paper's column order (means, ± std over seeds)."""
    neg, pos = result["label_names"]
    heads = ["variant", "accuracy", f"{pos} P", f"{pos} R", f"{pos} F1", f"{neg} P", f"{neg} R", f"{neg} F1",
             "macro-F1", "AUROC"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    several = len(result["seeds"]) > 1
    for row in result["rows"]:
        cells = [f"{row['mean'][c]:.3f}" + (f" ± {row['std'][c]:.3f}" if several else "") for c in ABLATION_COLUMNS]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
