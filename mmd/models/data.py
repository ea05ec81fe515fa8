"""What every detector trains and is scored on: real labelled items plus the selected
synthetic set, split without leaks, with their text and image features.

- Real items: the validated items matching `train.items`, with a label. Items of a
  `train.splits.test` split test, of a `train.splits.val` split validate, the rest train.
  Items with no split of their own test when their picture falls in the fixed holdout
  (`train.holdout_fraction`, a hash with a fixed salt: the same items in every cycle, so a
  champion and its challenger are scored on the same data and neither trained on it).
  Without a val split, `val_fraction` of the training items validate, carved by picture
  (items sharing an image stay on one side), by group (event) or by item.
- Leak guard: a training item whose picture is also in val or test is dropped, and so is a
  synthetic item with a parent, or a picture, in val or test. Both are counted.
- Moderators' labels: a label moderators agreed on (`<data>/moderation/labels.parquet`, written by
  ingest from their votes under `review.require_agreement`) replaces the item's own label, or labels
  an unlabelled item; the item then takes its role like any other (in the fixed holdout it evaluates).
- Synthetic items: `<data>/selected/selected.parquet` when `train.synthetic`; they only
  ever train.
- Features: the encoder's text and image vectors, from the embedding cache (nothing seen
  before is encoded again; the cache is only read: it is the embed stage's output). An
  item whose picture is missing or unreadable is text-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmd.config import Settings, TrainConfig
from mmd.formats.pool import read_selected
from mmd.items import ITEM_SCHEMA, read_table

ROLES = ("train", "val", "test")


class ModelMismatch(ValueError):
    """A saved model that does not fit the encoder or the code at hand."""


class TrainingDataError(ValueError):
    """Data a detector cannot be trained on (none, one class only, nothing to validate on)."""


def row_matches(row: dict, filter: dict) -> bool:
    """The store's filter language on a plain row: {field: value | [values] | {"not": value or [values]}}."""
    for key, want in filter.items():
        have = row.get(key)
        negate = isinstance(want, dict)
        if negate:
            want = want["not"]
        hit = have in want if isinstance(want, (list, tuple)) else have == want
        if hit == negate:
            return False
    return True


@dataclass
class Split:
    """One side of the data: rows and their features, in one order."""

    ids: list[str]
    labels: np.ndarray            # (N,) int64
    text: np.ndarray              # (N, text_dim) float32
    image: np.ndarray             # (N, image_dim) float32, zeros where has_image is False
    has_image: np.ndarray         # (N,) bool
    synthetic: np.ndarray         # (N,) bool
    texts: list[str] = field(default_factory=list)          # raw inputs, for fine-tuning
    image_paths: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "Split":
        idx = np.asarray(index, dtype=np.int64)
        return Split([self.ids[i] for i in idx], self.labels[idx], self.text[idx], self.image[idx],
                     self.has_image[idx], self.synthetic[idx], [self.texts[i] for i in idx] if self.texts else [],
                     [self.image_paths[i] for i in idx] if self.image_paths else [])

    def picture_keys(self) -> list[str]:
        """Each item's picture (a stored path names its content), or `id:<id>` for an item without one:
        the items that share a key are one story (the loss weights, the picture-clustered bootstrap)."""
        paths = self.image_paths or [None] * len(self)
        return [p if p and h else f"id:{i}" for p, h, i in zip(paths, self.has_image, self.ids)]

    def summary(self) -> dict:
        return {"items": len(self), "label_1": int(self.labels.sum()), "label_0": int(len(self) - self.labels.sum()),
                "with_image": int(self.has_image.sum()), "synthetic": int(self.synthetic.sum())}


@dataclass
class TrainData:
    train: Split
    val: Split
    test: Split | None
    encoder: str
    text_dim: int
    image_dim: int
    report: dict

    def summary(self) -> dict:
        return {"encoder": self.encoder, **{r: (getattr(self, r).summary() if getattr(self, r) is not None else None)
                                            for r in ROLES}, **self.report}


def _key(row: dict, by: str) -> str:
    if by == "image":  # a text-only item shares no picture: it stands alone
        return row.get("image_sha256") or row["id"]
    if by == "group":
        return row.get("group") or row.get("image_sha256") or row["id"]
    return row["id"]


def _in_val(key: str, seed: int | str, fraction: float) -> bool:
    h = int(hashlib.sha256(f"{seed}\x1f{key}".encode()).hexdigest()[:12], 16)
    return h / float(16**12) < fraction


def in_holdout(row: dict, cfg: TrainConfig) -> bool:
    """Is this real item in the evaluation holdout? Its split says so, or, with no split (or a split of
    `holdout_from`), its picture (or group, or id: `val_group_by`) hashes into `holdout_fraction` under a
    salt no knob changes."""
    split = row.get("split") or ""
    if split in cfg.splits.test:
        return True
    if split and split not in cfg.holdout_from:
        return False
    return _in_val(_key(row, cfg.val_group_by), "holdout", cfg.holdout_fraction)


def assign_roles(rows: list[dict], cfg: TrainConfig) -> tuple[dict[str, list[dict]], dict]:
    """Real labelled rows -> {train, val, test} rows, and what was carved or dropped."""
    roles: dict[str, list[dict]] = {r: [] for r in ROLES}
    for row in rows:
        split = row.get("split") or ""
        role = "test" if in_holdout(row, cfg) else "val" if split in cfg.splits.val else "train"
        roles[role].append(row)
    report: dict[str, Any] = {"val_carved": False}
    if not roles["val"]:
        keep, carved = [], []
        for row in roles["train"]:
            (carved if _in_val(_key(row, cfg.val_group_by), cfg.seed, cfg.val_fraction) else keep).append(row)
        roles["train"], roles["val"] = keep, carved
        report.update(val_carved=True, val_carved_by=cfg.val_group_by)
    held_images = {r["image_sha256"] for role in ("val", "test") for r in roles[role] if r.get("image_sha256")}
    test_images = {r["image_sha256"] for r in roles["test"] if r.get("image_sha256")}
    before = len(roles["train"]), len(roles["val"])
    roles["train"] = [r for r in roles["train"] if r.get("image_sha256") not in held_images]
    roles["val"] = [r for r in roles["val"] if r.get("image_sha256") not in test_images]
    report["dropped_image_shared_with_heldout"] = (before[0] - len(roles["train"])) + (before[1] - len(roles["val"]))
    return roles, report


def read_items(settings: Settings) -> tuple[list[dict], dict]:
    """The validated items with the moderators' agreed labels applied, and how many labels were applied
    (and how many of those changed a label the source gave)."""
    from mmd.review.votes import moderated_labels

    src = settings.layout.items
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist: run `mmd validate` first")
    rows = read_table(src, ITEM_SCHEMA).to_pylist()
    moderated = moderated_labels(settings.layout)
    applied = changed = 0
    for row in rows:
        label = moderated.get(row["id"])
        if label is not None:
            applied += 1
            changed += row["label"] is not None and row["label"] != label
            row["label"] = int(label)
    return rows, {"moderated_labels": applied, "moderated_changed": changed}


def training_rows(settings: Settings, synthetic: bool | None = None) -> tuple[dict[str, list[dict]], dict]:
    """The item rows of train / val / test (see the module docstring: filter, roles, leak rules,
    synthetic rows marked `_synthetic`), and what was carved or dropped."""
    cfg = settings.params.train
    items, moderated = read_items(settings)
    rows = [r for r in items if r["label"] is not None and row_matches(r, dict(cfg.items))]
    if not rows:
        raise TrainingDataError(f"no labelled items in {settings.layout.items} match train.items {dict(cfg.items)}")
    roles, report = assign_roles(rows, cfg)
    report.update(moderated)

    use_synthetic = cfg.synthetic if synthetic is None else synthetic
    sel_path = settings.layout.selected
    report["synthetic_dropped_leak"] = 0
    if use_synthetic and sel_path.exists():
        held_ids = {r["id"] for role in ("val", "test") for r in roles[role]}
        held_images = {r["image_sha256"] for role in ("val", "test") for r in roles[role] if r.get("image_sha256")}
        synth = [r for r in read_selected(settings) if r["label"] is not None]
        clean = [r for r in synth if not (set(r.get("parent_ids") or []) & held_ids)
                 and r.get("image_sha256") not in held_images]
        report["synthetic_dropped_leak"] = len(synth) - len(clean)
        roles["train"] += [{**r, "_synthetic": True} for r in clean]
    elif use_synthetic:
        report["synthetic_missing"] = f"{sel_path} not found: run `mmd select` to add synthetic data"
    sizes = {k: len(v) for k, v in roles.items()}
    labels = {r["label"] for r in roles["train"]}
    if len(labels) < 2:
        raise TrainingDataError(f"the training split has labels {sorted(labels)}: a detector needs both classes "
                                f"({sizes} items per split)")
    if not roles["val"]:
        raise TrainingDataError(f"nothing to validate on ({sizes} items per split): add a val split or raise "
                                "train.val_fraction")
    return roles, report


def load_training_data(settings: Settings, encoder=None, synthetic: bool | None = None) -> TrainData:
    """Assemble train/val/test with features (see the module docstring)."""
    from mmd.encoders import build_encoder

    roles, report = training_rows(settings, synthetic)
    if encoder is None:
        encoder = build_encoder(settings.params.embed, settings.root)
    if encoder.keyed_by_id:
        n = sum(1 for r in roles["train"] if r.get("_synthetic"))
        if n:
            roles["train"] = [r for r in roles["train"] if not r.get("_synthetic")]
            report["synthetic_skipped"] = (f"{n} synthetic items: the {settings.params.embed.backend} encoder looks "
                                           "vectors up by item id and has none for them")
    cache = _read_only_cache(settings, encoder)
    splits: dict[str, Split | None] = {}
    report["missing_images"] = 0
    for role in ROLES:
        splits[role], missing = _features(settings, roles[role], encoder, cache, settings.data_dir) \
            if roles[role] else (None, 0)
        report["missing_images"] += missing
    return TrainData(splits["train"], splits["val"], splits["test"], encoder.identity, encoder.text_dim,
                     encoder.image_dim, report)


def _read_only_cache(settings: Settings, encoder):
    """The embed stage's cache, read only (it is that stage's versioned output); None for an id-keyed encoder."""
    from mmd.encoders import EmbeddingCache

    return None if encoder.keyed_by_id else EmbeddingCache.for_encoder(settings.layout.embed_cache, encoder,
                                                                       read_only=True)


def _features(settings: Settings, rows: list[dict], encoder, cache, data_dir: Path) -> tuple[Split, int]:
    """Rows -> a Split with their text and image vectors (labels -1 where unknown), and how many
    pictures could not be read (those items are text-only)."""
    from mmd.encoders import embed_items

    ecfg = settings.params.embed
    res = embed_items(rows, encoder, cache, data_dir, ecfg.batch_size, ecfg.num_workers)
    split = Split(res.ids, np.array([-1 if r.get("label") is None else int(r["label"]) for r in rows], np.int64),
                  np.asarray(res.text, np.float32), np.asarray(res.image, np.float32),
                  np.asarray(res.has_image, bool), np.array([bool(r.get("_synthetic")) for r in rows], bool),
                  [r.get("text") or "" for r in rows], [r.get("image_path") for r in rows])
    return split, len(res.missing_images)


def item_features(settings: Settings, rows: list[dict], encoder=None, data_dir: Path | None = None,
                  cache=None) -> Split:
    """Features of arbitrary item rows (`id`, `text`, optional `image_path` relative to `data_dir`,
    the data folder by default), for prediction; labels are -1 where unknown. `cache`: the embed
    stage's cache opened read only by the caller (a worker scoring many shards opens it once)."""
    from mmd.encoders import build_encoder

    if encoder is None:
        encoder = build_encoder(settings.params.embed, settings.root)
    if cache is None:
        cache = _read_only_cache(settings, encoder)
    return _features(settings, rows, encoder, cache, data_dir or settings.data_dir)[0]
