"""The gate stage: champion against challenger, drift, the decision, promote or hold, the report.

Per model family with an evaluated challenger (`mmd evaluate`):
1. the champion (the registry's alias) is scored on the same items as the challenger;
2. the fresh batch is what arrived since the champion's training data was cut (the latest
   ingest run when there is no champion yet);
3. the checks of `mmd.evaluate.gates` run, drift among them (`mmd.evaluate.drift`):
   - data_drift / embedding_drift: the fresh batch against the champion's training reference;
   - synthetic_vs_real: the challenger's training set (real + selected synthetic) against the
     current real data (the fresh batch, or every item when the batch is too small);
   - prediction_drift: the challenger's scores on the fresh items it did not train on (holdout,
     unlabelled) against its scores on the earlier such items;
4. the challenger is registered (with its lineage, evaluation and training reference) and
   promoted or held; its model card records the decision.

Outputs: `<reports>/gate.json` (decisions, reasons and figures), `<reports>/drift/*.html`,
`<reports>/cycle.html` (the moderators' report) and the registry under `<data>/registry`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmd.config import Settings
from mmd.evaluate import drift as D
from mmd.evaluate.evaluate import HOLDOUT, holdout_metrics, item_roles, model_dir, paths as eval_paths, scorer
from mmd.evaluate.gates import (COULD_NOT_RUN, SKIPPED, Check, Decision, champion_check, decide, floors_check,
                                from_drift, validation_check)
from mmd.items import now_iso, write_table
from mmd.registry import Registry, lineage, model_digest, registry_root
from mmd.util import write_json

REFERENCE_SCHEMA = pa.schema([("id", pa.string()), ("role", pa.string()), ("ingested_at", pa.string())])


def paths(settings: Settings) -> dict[str, Path]:
    r = settings.reports_dir
    return {"report": r / "gate.json", "drift": r / "drift", "cycle": r / "cycle.html",
            "staging": settings.data_dir / "gate", "registry": registry_root(settings)}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Items:
    """The validated items, their roles, mixed vectors, and the fresh batch."""

    def __init__(self, settings: Settings):
        from mmd.embed import paths as embed_paths, read_vectors

        self.rows, self.role = item_roles(settings)
        self.by_id = {r["id"]: r for r in self.rows}
        table, mixed, _ = read_vectors(embed_paths(settings)["vectors"])
        self.row_of_vector = {i: n for n, i in enumerate(table.column("id").to_pylist())}
        self.mixed = mixed
        self.data_dir = settings.data_dir
        self._frame = None

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        idx = [self.row_of_vector[i] for i in ids if i in self.row_of_vector]
        return self.mixed[np.array(idx, dtype=np.int64)] if idx else np.zeros((0, self.mixed.shape[1]), np.float32)

    def since(self, after: str | None = None, start: str | None = None) -> list[str]:
        """Items ingested after `after` (exclusive), or from `start` on (inclusive); every item with neither."""
        return [r["id"] for r in self.rows if (after is None or (r["ingested_at"] or "") > after)
                and (start is None or (r["ingested_at"] or "") >= start)]

    def frame(self, ids: Sequence[str]):
        """The drift columns of these items (every picture is opened once per gate run, not per family)."""
        if self._frame is None:
            self._frame = D.item_frame(self.rows, self.data_dir).set_axis([r["id"] for r in self.rows])
        return self._frame.loc[[i for i in ids if i in self.by_id]].reset_index(drop=True)


def training_reference(items: Items) -> tuple[list[str], str | None]:
    """The real items a challenger learned from (train and val), and the newest ingest time among them."""
    ids = [i for i, role in items.role.items() if role in ("train", "val")]
    times = [items.by_id[i]["ingested_at"] for i in ids if items.by_id[i]["ingested_at"]]
    return ids, (max(times) if times else None)


def _labelled(items: Items, ids: Sequence[str], scores: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keep = [i for i in ids if items.by_id[i]["label"] is not None and i in scores]
    return (np.array([items.by_id[i]["label"] for i in keep], np.int64),
            np.array([scores[i] for i in keep], np.float64))


def _metrics(settings: Settings, items: Items, ids: Sequence[str], scores: dict[str, float]) -> dict | None:
    y, p = _labelled(items, ids, scores)
    return holdout_metrics(y, p, settings) if len(y) else None


def synthetic_vectors(settings: Settings) -> np.ndarray:
    from mmd.embed import read_vectors
    from mmd.synth.select import paths as select_paths

    path = select_paths(settings)["features"]
    if not settings.params.train.synthetic or not path.exists():
        return np.zeros((0, 0), np.float32)
    return read_vectors(path)[1]


def gate_family(settings: Settings, family: str, items: Items, registry: Registry, validation: Check,
                log: Callable[[str], None] | None = None) -> dict:
    from mmd.evaluate.metrics import paired_bootstrap

    cfg, dcfg = settings.params.gate, settings.params.gate.drift
    out = paths(settings)
    folder = model_dir(settings, family)
    chal = pq.read_table(eval_paths(settings)["dir"] / f"{family}.parquet").to_pylist()
    chal_scores = {r["id"]: r["score"] for r in chal}
    champion = registry.champion(family)
    first = champion is None
    holdout = [i for i in items.by_id if items.role[i] == HOLDOUT]
    ref_ids, cutoff = training_reference(items)

    # the fresh batch: what the champion never saw; with no champion, the newest ingest run
    if champion is not None:
        fresh_since = champion.lineage.get("data_cutoff")
        fresh = items.since(after=fresh_since)
    else:
        fresh_since = _latest_ingest_start(settings)
        fresh = items.since(start=fresh_since)
    metrics: dict = {"challenger": {"holdout": _metrics(settings, items, holdout, chal_scores),
                                    "fresh": _metrics(settings, items, fresh, chal_scores)}}
    checks: list[Check] = [validation, floors_check(metrics["challenger"]["holdout"], cfg)]

    champion_error, champ_scores = None, {}
    if champion is not None:
        try:
            _, score = scorer(settings, family, champion.path)  # the serving collection is the champion's
            champ_scores = dict(zip([r["id"] for r in items.rows], map(float, score(items.rows))))
        except Exception as exc:  # another encoder, a missing file: the comparison cannot run, and says why
            champion_error = f"{type(exc).__name__}: {exc}"
        metrics["champion"] = {"version": champion.number,
                               "holdout": _metrics(settings, items, holdout, champ_scores) if champ_scores else None,
                               "fresh": _metrics(settings, items, fresh, champ_scores) if champ_scores else None}
    delta = None
    if champ_scores and metrics["challenger"]["holdout"]:
        y, p_new = _labelled(items, holdout, chal_scores)
        _, p_old = _labelled(items, holdout, champ_scores)
        ev = settings.params.evaluate
        delta = paired_bootstrap(y, p_new, p_old, cfg.primary_metric, settings.params.train.label_names,
                                 ev.bootstrap, ev.confidence, ev.seed)
    checks.append(champion_check(metrics["challenger"]["holdout"], (metrics.get("champion") or {}).get("holdout"),
                                 cfg, delta, champion_error, first))

    drift_dir = out["drift"]
    if champion is not None:
        champ_ref = _reference_ids(champion.path / "reference.parquet")
        checks.append(from_drift(D.data_drift(items.frame(champ_ref), items.frame(fresh), dcfg, "data_drift",
                                              drift_dir / f"{family}-data.html")))
        checks.append(from_drift(D.embedding_drift(items.vectors(champ_ref), items.vectors(fresh), dcfg,
                                                   "embedding_drift", drift_dir / f"{family}-embeddings.html")))
        # like with like: only items the challenger did not train on, before and in the fresh batch
        unseen = [i for i in items.by_id if items.role[i] not in ("train", "val") and i in chal_scores]
        fresh_set = set(fresh)
        checks.append(from_drift(D.score_drift(np.array([chal_scores[i] for i in unseen if i not in fresh_set]),
                                               np.array([chal_scores[i] for i in unseen if i in fresh_set]), dcfg,
                                               "prediction_drift", drift_dir / f"{family}-predictions.html")))
    else:
        checks += [Check(name, SKIPPED, ["no champion yet: nothing to compare the fresh batch with"])
                   for name in ("data_drift", "embedding_drift", "prediction_drift")]
    synthetic = synthetic_vectors(settings)
    current = fresh if len(fresh) >= dcfg.min_rows else list(items.by_id)
    train_real = [i for i in ref_ids if items.role[i] == "train"]
    reference = np.concatenate([items.vectors(train_real), synthetic]) if len(synthetic) else items.vectors(train_real)
    if len(synthetic):
        synth = from_drift(D.embedding_drift(reference, items.vectors(current), dcfg, "synthetic_vs_real",
                                             drift_dir / f"{family}-synthetic.html"))
        synth.figures.update(reference_real=len(train_real), reference_synthetic=int(len(synthetic)),
                             current=len(current), current_is="fresh batch" if current is fresh else "every item")
    else:
        synth = Check("synthetic_vs_real", SKIPPED, ["the challenger was trained without synthetic data"])
    checks.append(synth)

    # register the challenger (idempotent by content), then promote or hold
    chal_meta = json.loads((folder / "config.json").read_text())
    staging = out["staging"] / family
    staging.mkdir(parents=True, exist_ok=True)
    write_table(pa.Table.from_pylist([{"id": i, "role": items.role[i], "ingested_at": items.by_id[i]["ingested_at"]}
                                      for i in ref_ids], schema=REFERENCE_SCHEMA), staging / "reference.parquet")
    evaluation = {"holdout": metrics["challenger"]["holdout"], "fresh": metrics["challenger"]["fresh"],
                  "champion": metrics.get("champion"), "delta": delta}
    write_json(staging / "evaluation.json", evaluation)
    digest = model_digest(folder)
    same = champion is not None and champion.digest == digest
    if same:
        decision = Decision(family, "passed", "keep", ["the challenger is the champion already (same files)"],
                            checks, first)
    else:
        decision = decide(family, checks, cfg, first)
    decision.challenger = {"trained_at": chal_meta.get("trained_at"), "variant": chal_meta.get("variant"),
                           "digest": digest[:12]}
    decision.champion = None if champion is None else {"version": champion.number, "digest": champion.digest[:12]}
    params_sections = {k: settings.params.model_dump(mode="json", by_alias=True)[k]
                       for k in ("embed", "select", "train", family, "evaluate", "gate")}
    lin = {**lineage(settings.root, folder, params_sections), "data_cutoff": cutoff}
    version, created = registry.register(family, folder, lin, {"holdout": metrics["challenger"]["holdout"]},
                                         {"reference.parquet": staging / "reference.parquet",
                                          "evaluation.json": staging / "evaluation.json"})
    reason = "; ".join(decision.reasons)
    if decision.action == "promote":
        registry.promote(family, version.number, reason, decision.to_dict())
    elif decision.action == "hold":
        registry.hold(family, version.number, reason, decision.to_dict())
    registry.write_card(version, evaluation, decision.to_dict())
    after = registry.champion(family)
    if log:
        log(f"{family}: {decision.status} -> {decision.action} (v{version.number}); " + reason)
    return {**decision.to_dict(), "metrics": metrics, "delta": delta,
            "fresh_batch": {"since": fresh_since, "items": len(fresh),
                            "labelled": sum(1 for i in fresh if items.by_id[i]["label"] is not None)},
            "version": {"number": version.number, "created": created, "card": str(version.path / "card.html")},
            "champion_after": None if after is None else after.number}


def _reference_ids(path: Path) -> list[str]:
    return pq.read_table(path).column("id").to_pylist() if path.exists() else []


def _latest_ingest_start(settings: Settings) -> str | None:
    from mmd.ingest import paths as ingest_paths

    return (_read_json(ingest_paths(settings)["report"]) or {}).get("started_at")


def run_gate(settings: Settings, families: Sequence[str] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """The DVC stage: a decision per evaluated family, the registry updated, the reports written."""
    from mmd.report import write_cycle_report
    from mmd.validate.run import paths as validate_paths

    evaluation = _read_json(eval_paths(settings)["report"])
    if evaluation is None:
        raise FileNotFoundError(f"{eval_paths(settings)['report']} not found: run `mmd evaluate` first")
    validation = validation_check(_read_json(validate_paths(settings)["report"]), settings.params.gate)
    items = Items(settings)
    registry = Registry(paths(settings)["registry"])
    for out in ("drift", "registry"):  # DVC outputs, even when nothing was written into them
        paths(settings)[out].mkdir(parents=True, exist_ok=True)
    report: dict = {"gated_at": now_iso(), "families": {}}
    for family in families or list(evaluation["families"]):
        ev = evaluation["families"].get(family) or {}
        if "skipped" in ev or not ev:
            report["families"][family] = {"status": COULD_NOT_RUN, "action": "hold",
                                          "reasons": [ev.get("skipped", f"{family} was not evaluated")], "checks": []}
            continue
        report["families"][family] = gate_family(settings, family, items, registry, validation, log)
    write_json(paths(settings)["report"], report)
    report["report_html"] = str(write_cycle_report(settings, report, paths(settings)["cycle"]))
    write_json(paths(settings)["report"], report)
    return report
