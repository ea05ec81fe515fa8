"""The gate's evidence for one family: what the checks found, with no registry write.

1. the champion (the registry's alias) is scored on the same items as the challenger;
2. the fresh batch is what arrived since the champion's training data was cut (the latest
   ingest run when there is no champion yet);
3. the checks of `mmd.evaluate.gates` run, drift among them (`mmd.evaluate.drift`):
   - data_drift / embedding_drift: the fresh batch against the champion's training reference;
   - synthetic_vs_real: the challenger's training set (real + selected synthetic) against the
     current real data (the fresh batch, or every item when the batch is too small);
   - prediction_drift: the challenger's scores on the fresh items it did not train on (holdout,
     unlabelled) against its scores on the earlier such items.
The drift pages for people are written under `<reports>/drift/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmd.config import Settings
from mmd.evaluate import drift as D
from mmd.evaluate.evaluate import holdout_metrics, item_roles, scorer
from mmd.evaluate.gates import SKIPPED, Check, champion_check, floors_check, from_drift
from mmd.formats.scores import HOLDOUT, read_scores
from mmd.formats.vectors import read_vectors
from mmd.registry import Registry, Version
from mmd.results import IngestReport
from mmd.util import read_parquet


class Items:
    """The validated items, their roles, mixed vectors, and the fresh batch."""

    def __init__(self, settings: Settings):
        self.rows, self.role = item_roles(settings)
        self.by_id = {r["id"]: r for r in self.rows}
        table, mixed, _ = read_vectors(settings.layout.vectors)
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

    def labelled(self, ids: Sequence[str], scores: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i in ids if self.by_id[i]["label"] is not None and i in scores]
        return (np.array([self.by_id[i]["label"] for i in keep], np.int64),
                np.array([scores[i] for i in keep], np.float64))

    def training_reference(self) -> tuple[list[str], str | None]:
        """The real items a challenger learned from (train and val), and the newest ingest time among them."""
        ids = [i for i, role in self.role.items() if role in ("train", "val")]
        times = [self.by_id[i]["ingested_at"] for i in ids if self.by_id[i]["ingested_at"]]
        return ids, (max(times) if times else None)


@dataclass
class Evidence:
    family: str
    champion: Version | None
    checks: list[Check]
    metrics: dict[str, Any]
    delta: dict | None
    fresh_since: str | None
    fresh: list[str]
    reference: list[str]               # the challenger's real training items (train + val)
    cutoff: str | None                 # the newest ingest time among them: the next fresh batch starts after it
    notes: dict = field(default_factory=dict)

    @property
    def first(self) -> bool:
        return self.champion is None


def _metrics(settings: Settings, items: Items, ids: Sequence[str], scores: dict[str, float]) -> dict | None:
    y, p = items.labelled(ids, scores)
    return holdout_metrics(y, p, settings) if len(y) else None


def holdout_id(ids: Sequence[str]) -> str:
    """A short fingerprint of a set of item ids (order does not matter)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]


def synthetic_vectors(settings: Settings) -> np.ndarray:
    path = settings.layout.selected_features
    if not settings.params.train.synthetic or not path.exists():
        return np.zeros((0, 0), np.float32)
    return read_vectors(path)[1]


def _reference_ids(path: Path) -> list[str]:
    return read_parquet(path, ["id"]).column("id").to_pylist() if path.exists() else []


def gather(settings: Settings, family: str, items: Items, registry: Registry, validation: Check,
           engine=None) -> Evidence:
    """Every check for this family's challenger (see the module docstring); the champion is scored on
    `engine`'s Dask workers when there is one (`mmd.scale`)."""
    from mmd.evaluate.metrics import paired_bootstrap

    cfg, dcfg = settings.params.gate, settings.params.gate.drift
    chal_scores = read_scores(settings, family)
    champion = registry.champion(family)
    holdout = [i for i in items.by_id if items.role[i] == HOLDOUT]
    ref_ids, cutoff = items.training_reference()

    # the fresh batch: what the champion never saw; with no champion, the newest ingest run
    if champion is not None:
        fresh_since = champion.lineage.get("data_cutoff")
        fresh = items.since(after=fresh_since)
    else:
        last_ingest = IngestReport.read(settings.layout)
        fresh_since = last_ingest.started_at if last_ingest else None
        fresh = items.since(start=fresh_since)
    metrics: dict = {"challenger": {"holdout": _metrics(settings, items, holdout, chal_scores),
                                    "fresh": _metrics(settings, items, fresh, chal_scores)},
                     # which items the holdout figures are on: versions compare only where this is the same
                     "holdout_id": holdout_id([i for i in holdout if items.by_id[i]["label"] is not None])}
    checks: list[Check] = [validation, floors_check(metrics["challenger"]["holdout"], cfg)]

    champion_error, champ_scores = None, {}
    if champion is not None:
        try:
            # the serving collection is the champion's
            _, score = scorer(settings, family, champion.path, engine=engine)
            champ_scores = dict(zip([r["id"] for r in items.rows], map(float, score(items.rows))))
        except Exception as exc:  # another encoder, a missing file: the comparison cannot run, and says why
            champion_error = f"{type(exc).__name__}: {exc}"
        metrics["champion"] = {"version": champion.number,
                               "holdout": _metrics(settings, items, holdout, champ_scores) if champ_scores else None,
                               "fresh": _metrics(settings, items, fresh, champ_scores) if champ_scores else None}
    delta = None
    if champ_scores and metrics["challenger"]["holdout"]:
        y, p_new = items.labelled(holdout, chal_scores)
        _, p_old = items.labelled(holdout, champ_scores)
        ev = settings.params.evaluate
        delta = paired_bootstrap(y, p_new, p_old, cfg.primary_metric, settings.params.train.label_names,
                                 ev.bootstrap, ev.confidence, ev.seed)
    checks.append(champion_check(metrics["challenger"]["holdout"], (metrics.get("champion") or {}).get("holdout"),
                                 cfg, delta, champion_error, champion is None))

    drift_dir = settings.layout.drift
    if champion is not None:
        champ_ref = _reference_ids(champion.path / "reference.parquet")
        batch = f"the fresh batch: {len(fresh)} real items ingested after {fresh_since or 'the beginning'}"
        sides = (f"the champion's (v{champion.number}) real training items ({len(champ_ref)})", batch)
        checks.append(from_drift(D.data_drift(items.frame(champ_ref), items.frame(fresh), dcfg, "data_drift",
                                              drift_dir / f"{family}-data.html", sides)))
        checks.append(from_drift(D.embedding_drift(items.vectors(champ_ref), items.vectors(fresh), dcfg,
                                                   "embedding_drift", drift_dir / f"{family}-embeddings.html", sides)))
        # like with like: only items the challenger did not train on, before and in the fresh batch
        unseen = [i for i in items.by_id if items.role[i] not in ("train", "val") and i in chal_scores]
        fresh_set = set(fresh)
        before = [chal_scores[i] for i in unseen if i not in fresh_set]
        checks.append(from_drift(D.score_drift(
            np.array(before), np.array([chal_scores[i] for i in unseen if i in fresh_set]), dcfg,
            "prediction_drift", drift_dir / f"{family}-predictions.html",
            (f"the challenger's scores on {len(before)} earlier real items it did not train on",
             f"its scores on {batch}"))))
    else:
        checks += [Check(name, SKIPPED, ["no champion yet: nothing to compare the fresh batch with"])
                   for name in ("data_drift", "embedding_drift", "prediction_drift")]
    synthetic = synthetic_vectors(settings)
    current = fresh if len(fresh) >= dcfg.min_rows else list(items.by_id)
    train_real = [i for i in ref_ids if items.role[i] == "train"]
    reference = np.concatenate([items.vectors(train_real), synthetic]) if len(synthetic) else items.vectors(train_real)
    if len(synthetic):
        sides = (f"the challenger's training set: {len(train_real)} real + {len(synthetic)} SYNTHETIC items",
                 f"real items only: {'the fresh batch' if current is fresh else 'every item'} ({len(current)})")
        synth = from_drift(D.embedding_drift(reference, items.vectors(current), dcfg, "synthetic_vs_real",
                                             drift_dir / f"{family}-synthetic.html", sides))
        synth.figures.update(reference_real=len(train_real), reference_synthetic=int(len(synthetic)),
                             current=len(current), current_is="fresh batch" if current is fresh else "every item")
    else:
        synth = Check("synthetic_vs_real", SKIPPED, ["the challenger was trained without synthetic data"])
    checks.append(synth)
    return Evidence(family, champion, checks, metrics, delta, fresh_since, fresh, ref_ids, cutoff)
