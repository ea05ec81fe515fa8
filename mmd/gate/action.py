"""The gate's action for one family: register the challenger, promote or hold it, write its model card.

Registration is idempotent by content (the same model files are the same version); the alias moves
atomically (`mmd.registry`), so a crash leaves the old champion or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pyarrow as pa

from mmd.config import Settings
from mmd.evaluate.gates import Decision, decide
from mmd.gate.evidence import Evidence, Items
from mmd.items import write_table
from mmd.registry import Registry, lineage, model_digest
from mmd.util import write_json

REFERENCE_SCHEMA = pa.schema([("id", pa.string()), ("role", pa.string()), ("ingested_at", pa.string())])


def act(settings: Settings, family: str, evidence: Evidence, items: Items, registry: Registry,
        log: Callable[[str], None] | None = None) -> dict:
    """Register, decide, promote or hold; the family's entry of gate.json."""
    from mmd.models.families import get

    cfg = settings.params.gate
    folder = settings.layout.model(family)
    champion = evidence.champion
    chal_meta = json.loads((folder / "config.json").read_text())
    staging = settings.layout.gate_staging / family
    staging.mkdir(parents=True, exist_ok=True)
    write_table(pa.Table.from_pylist([{"id": i, "role": items.role[i], "ingested_at": items.by_id[i]["ingested_at"]}
                                      for i in evidence.reference], schema=REFERENCE_SCHEMA),
                staging / "reference.parquet")
    metrics = evidence.metrics
    evaluation = {"holdout": metrics["challenger"]["holdout"], "fresh": metrics["challenger"]["fresh"],
                  "champion": metrics.get("champion"), "delta": evidence.delta}
    write_json(staging / "evaluation.json", evaluation)
    digest = model_digest(folder)
    if champion is not None and champion.digest == digest:
        decision = Decision(family, "passed", "keep", ["the challenger is the champion already (same files)"],
                            evidence.checks, evidence.first)
    else:
        decision = decide(family, evidence.checks, cfg, evidence.first)
    decision.challenger = {"trained_at": chal_meta.get("trained_at"), "variant": chal_meta.get(get(family).variant_key)
                           or chal_meta.get("variant"), "digest": digest[:12]}
    decision.champion = None if champion is None else {"version": champion.number, "digest": champion.digest[:12]}
    sections = ("embed", "select", "train", family, *get(family).reads, "evaluate", "gate")
    lin = {**lineage(settings.root, folder, settings.sections(dict.fromkeys(sections))), "data_cutoff": evidence.cutoff}
    version, created = registry.register(family, folder, lin, {"holdout": metrics["challenger"]["holdout"],
                                                                 "holdout_id": metrics.get("holdout_id")},
                                         {"reference.parquet": staging / "reference.parquet",
                                          "evaluation.json": staging / "evaluation.json", **_figures(settings, family)})
    reason = "; ".join(decision.reasons)
    if decision.action == "promote":
        registry.promote(family, version.number, reason, decision.to_dict())
    elif decision.action == "hold":
        registry.hold(family, version.number, reason, decision.to_dict())
    registry.write_card(version, evaluation, decision.to_dict())
    after = registry.champion(family)
    if log:
        log(f"{family}: {decision.status} -> {decision.action} (v{version.number}); " + reason)
    fresh = evidence.fresh
    return {**decision.to_dict(), "metrics": metrics, "delta": evidence.delta,
            "fresh_batch": {"since": evidence.fresh_since, "items": len(fresh),
                            "labelled": sum(1 for i in fresh if items.by_id[i]["label"] is not None)},
            "version": {"number": version.number, "created": created, "card": str(version.path / "card.html")},
            "champion_after": None if after is None else after.number}


def _figures(settings: Settings, family: str) -> dict[str, Path]:
    """The holdout figures evaluate drew for this challenger (ROC, reliability, histograms, confusion;
    the score distribution), kept with the version for its model card."""
    from mmd.registry.card import FIGURES
    from mmd.results import EvaluateReport

    report = EvaluateReport.read(settings.layout)
    ev = report.families.get(family) if report else None
    plots = (ev.plots or {}) if ev else {}
    return {name: Path(plots[key]) for key, name in FIGURES.items() if plots.get(key) and Path(plots[key]).is_file()}
