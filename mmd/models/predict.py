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

MODELS = ("cmc", "rgcl", "lmm")

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


def serving_dir(settings: Settings, model: str) -> Path:
    """The model in service: the registry's champion, or the newest trained one while there is none."""
    from mmd.registry import Registry, registry_root

    champion = Registry(registry_root(settings)).serving_dir(model) if registry_root(settings).exists() else None
    return champion or settings.data_dir / "models" / model


def model_scorer(settings: Settings, model: str, model_dir: Path | None = None, collection: str | None = None):
    """(meta, variant, score(rows, data_dir) -> (calibrated P(label 1), has_image)) of a trained model
    (the one in service by default). CMC and RGCL score the encoder's features; the LMM reads the texts
    and pictures itself. RGCL's RKC searches `collection` (its configured one by default)."""
    model_dir = Path(model_dir) if model_dir else serving_dir(settings, model)
    if model == "lmm":
        from mmd.models.lmm.train import Items, load_lmm_detector, paths as lmm_paths

        detector = load_lmm_detector(model_dir, root=settings.root)

        def score_lmm(rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
            items = Items.from_rows(rows, data_dir)
            return (np.asarray(detector.predict_items(items), np.float32),
                    np.array([p is not None for p in items.images], bool))

        return detector.meta, detector.meta.get("recipe", "lmm"), score_lmm

    from mmd.encoders import build_encoder
    from mmd.models.data import item_features

    encoder = build_encoder(settings.params.embed, settings.root)
    if model == "cmc":
        from mmd.models.cmc.train import load_model, raw_inputs

        predictor = load_model(model_dir, encoder, settings.params.train.device)

        def predict(split, data_dir: Path) -> np.ndarray:
            return predictor.predict(split, raw_inputs(encoder, data_dir) if predictor.meta.get("finetuned") else None)

        meta, variant = predictor.meta, predictor.meta["variant"]
    else:
        from mmd.index import open_index
        from mmd.models.rgcl.train import load_model, sync_database

        rgcl = load_model(model_dir, encoder)
        meta, variant = rgcl.meta, rgcl.cfg.predict_with

        def predict(split, data_dir: Path) -> np.ndarray:
            if variant == "head":
                return rgcl.head_scores(split)
            with open_index(settings) as store:
                # a wiped store, or one holding another model's database, comes back from the files
                sync_database(settings, rgcl, store, encoder, collection=collection)
                return rgcl.rkc(store, split, collection=collection)

    def score(rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        split = item_features(settings, rows, encoder, data_dir=data_dir)
        return predict(split, data_dir), split.has_image

    return meta, variant, score


def run_predict(settings: Settings, model: str = "cmc", input: Path | None = None, output: Path | None = None,
                model_dir: Path | None = None) -> PredictReport:
    from mmd.embed import paths as embed_paths
    from mmd.evaluate.metrics import classification_metrics

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    meta, variant, score = model_scorer(settings, model, model_dir)
    bad: list = []
    if input is None or Path(input).suffix == ".parquet":
        src = Path(input) if input else embed_paths(settings)["input"]
        if not src.exists():
            raise FileNotFoundError(f"{src} does not exist" + ("" if input else ": run `mmd validate` first"))
        rows = read_table(src, ITEM_SCHEMA).to_pylist()
        data_dir = settings.data_dir
    elif Path(input).suffix in (".jsonl", ".json"):
        rows, bad = read_jsonl(Path(input))
        data_dir = Path("/")  # absolute paths, checked to exist by the embedding step
    else:
        raise ValueError(f"{input}: give a .jsonl or a .parquet file")
    out_path = Path(output) if output else settings.data_dir / "predictions" / f"{model}.parquet"
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
