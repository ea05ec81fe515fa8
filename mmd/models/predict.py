"""`mmd predict`: calibrated scores of a trained detector for new items.

Input (`--input`):
- a .jsonl file, one object a line: `text` (required), `image` (optional: a path relative
  to the file's folder, or absolute), `id` and `label` (optional);
- a .parquet table of items (the validated items' schema; `image_path` relative to the
  data folder); by default the validated items themselves.
A line that is not a JSON object, or has no text, is quarantined with its reason
(`<data>/predictions/quarantine.parquet`), never dropped silently. An unreadable picture
leaves the item text-only and is counted.

Output (`--output`, default `<data>/predictions/<model>.parquet`): id, score = calibrated
P(label 1), predicted (score >= 0.5), label where known, has_image, the model's variant and
training time; and a summary (with metrics when labels are known).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmd.config import Settings
from mmd.items import ITEM_SCHEMA, now_iso, read_table, sha256_hex, write_table
from mmd.quarantine import append_records, quarantine

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("score", pa.float32()), ("predicted", pa.int8()), ("label", pa.int8()),
    ("has_image", pa.bool_()), ("text", pa.string()), ("image_path", pa.string()), ("model", pa.string()),
    ("variant", pa.string()), ("model_trained_at", pa.string()), ("predicted_at", pa.string()),
])


@dataclass
class PredictReport:
    model: str
    variant: str
    items: int
    quarantined: int
    missing_images: int
    predicted_1: int
    mean_score: float
    output: Path
    metrics: dict | None

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "output"}, "output": str(self.output)}


def read_jsonl(path: Path) -> tuple[list[dict], list]:
    """Rows from a JSON-lines file (image paths made absolute), and quarantine records for bad lines."""
    rows, bad = [], []
    base = path.resolve().parent
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            ref = f"{path.name}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(quarantine("predict", path.name, "bad_json", f"not JSON: {exc.msg}", ref, line))
                continue
            if not isinstance(obj, dict):
                bad.append(quarantine("predict", path.name, "not_an_object", "a line must be a JSON object", ref, line))
                continue
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                bad.append(quarantine("predict", path.name, "missing_field", "no `text`", ref, line))
                continue
            image = obj.get("image") or obj.get("image_path")
            label = obj.get("label")
            rows.append({
                "id": str(obj.get("id") or sha256_hex(f"{text}\x1f{image or ''}")[:16]),
                "text": text,
                "image_path": str((base / image).resolve()) if image else None,
                "label": int(label) if label in (0, 1) else None,
            })
    return rows, bad


def run_predict(settings: Settings, model: str = "cmc", input: Path | None = None, output: Path | None = None,
                model_dir: Path | None = None) -> PredictReport:
    from mmd.evaluate.metrics import classification_metrics
    from mmd.models.families import all_families
    from mmd.models.serving import load_predictor

    if model not in all_families():
        raise ValueError(f"unknown model {model!r}: one of {', '.join(all_families())}")
    predictor = load_predictor(settings, model, model_dir)
    meta, variant, score = predictor.meta, predictor.variant, predictor.score
    bad: list = []
    if input is None or Path(input).suffix == ".parquet":
        src = Path(input) if input else settings.layout.items
        if not src.exists():
            raise FileNotFoundError(f"{src} does not exist" + ("" if input else ": run `mmd validate` first"))
        rows = read_table(src, ITEM_SCHEMA).to_pylist()
        data_dir = settings.data_dir
    elif Path(input).suffix in (".jsonl", ".json"):
        rows, bad = read_jsonl(Path(input))
        data_dir = Path("/")  # absolute paths, checked to exist by the embedding step
    else:
        raise ValueError(f"{input}: give a .jsonl or a .parquet file")
    out_path = Path(output) if output else settings.layout.predictions(model)
    if bad:
        append_records(out_path.parent / "quarantine.parquet", bad)
    scores, has_image = score(rows, data_dir) if rows else (np.zeros(0, np.float32), np.zeros(0, bool))
    pred = (scores >= 0.5).astype(np.int8)
    now = now_iso()
    table = pa.Table.from_pylist([
        {"id": r["id"], "score": float(s), "predicted": int(p), "label": r.get("label"), "has_image": bool(h),
         "text": (r.get("text") or "")[:500], "image_path": r.get("image_path"), "model": model,
         "variant": variant, "model_trained_at": meta.get("trained_at"), "predicted_at": now}
        for r, s, p, h in zip(rows, scores, pred, has_image)], schema=OUTPUT_SCHEMA)
    write_table(table, out_path)
    labels = np.array([-1 if r.get("label") is None else int(r["label"]) for r in rows], np.int64)
    known = labels >= 0
    metrics = None
    if known.any():
        metrics = classification_metrics(labels[known], scores[known],
                                         meta.get("label_names", settings.params.train.label_names))
    missing = int(sum(1 for r, h in zip(rows, has_image) if r.get("image_path") and not h))
    return PredictReport(model, variant, len(rows), len(bad), missing, int(pred.sum()),
                         float(scores.mean()) if len(scores) else 0.0, out_path, metrics)
