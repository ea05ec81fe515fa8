"""A model's scores of every validated item (`<data>/evaluation/<family>.parquet`): what the gate reads.

One row per item: id, score (calibrated P(label 1)), label, role (holdout / train / val / unlabelled /
other), ingested_at, kind, source.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmd.config import Settings
from mmd.util import read_parquet

HOLDOUT = "holdout"

SCORES_SCHEMA = pa.schema([
    ("id", pa.string()), ("score", pa.float32()), ("label", pa.int8()), ("role", pa.string()),
    ("ingested_at", pa.string()), ("kind", pa.string()), ("source", pa.string()),
])


def score_table(rows: list[dict], role: dict[str, str], scores: np.ndarray) -> pa.Table:
    return pa.Table.from_pylist([
        {"id": r["id"], "score": float(s), "label": r["label"], "role": role[r["id"]],
         "ingested_at": r["ingested_at"], "kind": r["kind"], "source": r["source"]}
        for r, s in zip(rows, scores)], schema=SCORES_SCHEMA)


def read_scores(settings: Settings, family: str) -> dict[str, float]:
    """id -> score of a family's challenger."""
    rows = read_parquet(settings.layout.evaluation_scores(family), ["id", "score"]).to_pylist()
    return {r["id"]: r["score"] for r in rows}
