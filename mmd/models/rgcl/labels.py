"""Moderators' labels between retrains: they join the RKC database of the model in service at once.

A labelled item (text, optional picture, 0 or 1) is kept in `<data>/labels/labels.parquet` (pictures
copied beside it) and embedded with the serving model's head into its RKC collection: predictions
change at once, the weights do not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from mmd.config import Settings
from mmd.items import now_iso, read_table, sha256_hex, write_table
from mmd.models.rgcl.predictor import LABELS_SCHEMA, MODEL_NAME, load_model, sync_database


def add_labels(settings: Settings, rows: list[dict], by: str = "cli") -> dict:
    """Newly labelled items (text, optional image path, label 0/1) join the RKC database at once:
    kept in `<data>/labels/labels.parquet` (pictures copied beside it) and upserted into the store."""
    from mmd.encoders import build_encoder
    from mmd.models.serving import serving_dir
    from mmd.store import open_store

    at = settings.layout
    encoder = build_encoder(settings.params.embed, settings.root)
    predictor = load_model(serving_dir(settings, MODEL_NAME), encoder)  # labels serve the model in service
    clean = []
    for r in rows:
        if r.get("label") not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {r.get('label')!r}")
        text = (r.get("text") or "").strip()
        if not text:
            raise ValueError("a labelled item needs its text")
        image_rel = None
        if r.get("image"):
            src = Path(r["image"])
            if not src.is_file():
                raise FileNotFoundError(f"image {src} not found")
            blob = src.read_bytes()
            sha = sha256_hex(blob)
            dest = at.label_images / f"{sha}{src.suffix.lower() or '.img'}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(src, dest)
            image_rel = dest.relative_to(settings.data_dir).as_posix()
        item_id = r.get("id") or "label-" + sha256_hex(f"{text}\x1f{image_rel or ''}")[:16]
        clean.append({"id": str(item_id), "text": text, "image_path": image_rel, "label": int(r["label"]),
                      "added_at": now_iso(), "by": by})
    existing = read_table(at.labels, LABELS_SCHEMA)
    keep = [x for x in existing.to_pylist() if x["id"] not in {c["id"] for c in clean}]
    write_table(pa.Table.from_pylist(keep + clean, schema=LABELS_SCHEMA), at.labels)
    with open_store(settings) as store:
        sync_database(settings, predictor, store, encoder, fresh=[c["id"] for c in clean])
        total = store.count(predictor.cfg.collection)
    return {"added": len(clean), "database": total, "labels_file": str(at.labels)}
