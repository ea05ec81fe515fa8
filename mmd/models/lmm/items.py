"""The LMM's data: the same items, roles and leak rules as every other detector (`mmd.models.data`), but
raw texts and picture files instead of encoder features (a missing or unreadable picture makes a
text-only item)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmd.config import Settings
from mmd.models.data import ROLES


def load_image(path: Path | None, size: int) -> Any | None:
    """An RGB PIL picture whose longest side is `size`, or None (no file, unreadable)."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB")
    except Exception:  # a missing or broken picture: the item is text-only
        return None
    scale = size / max(img.size)
    if scale != 1:
        width, height = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    return img


@dataclass
class Items:
    """Raw items in one order: texts, picture files (absolute, None = text-only) and labels (-1 = unknown)."""

    ids: list[str]
    texts: list[str]
    images: list[Path | None]
    labels: np.ndarray
    synthetic: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    missing_images: int = 0   # rows whose picture file was absent or unsafe (they are text-only here)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, np.int64)
        if len(self.synthetic) != len(self.ids):
            self.synthetic = np.zeros(len(self.ids), bool)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], data_dir: Path) -> "Items":
        """Item rows (`id`, `text`, `image_path` relative to data_dir, `label`, `_synthetic`); a picture
        outside data_dir or not there makes a text-only item (counted in `missing_images`)."""
        from mmd.encoders.base import resolve_image_path

        images: list[Path | None] = []
        for r in rows:
            path = resolve_image_path(data_dir, r["image_path"]) if r.get("image_path") else None
            images.append(path if isinstance(path, Path) and path.is_file() else None)
        items = cls([str(r["id"]) for r in rows], [r.get("text") or "" for r in rows], images,
                    np.array([-1 if r.get("label") is None else int(r["label"]) for r in rows], np.int64),
                    np.array([bool(r.get("_synthetic")) for r in rows], bool))
        items.missing_images = sum(1 for r, p in zip(rows, images) if r.get("image_path") and p is None)
        return items

    def summary(self) -> dict:
        y = self.labels
        return {"items": len(self), "label_1": int((y == 1).sum()), "label_0": int((y == 0).sum()),
                "with_image": sum(p is not None for p in self.images), "synthetic": int(self.synthetic.sum())}


def load_items(settings: Settings, synthetic: bool | None = None) -> tuple[dict[str, Items | None], dict]:
    """Train / val / test items as `mmd.models.data.load_training_data` assigns them (same filter,
    roles and leak rules), as raw texts and picture files; and what was carved or dropped."""
    from mmd.models.data import training_rows

    roles, report = training_rows(settings, synthetic)
    splits = {role: Items.from_rows(roles[role], settings.data_dir) if roles[role] else None for role in ROLES}
    report["missing_images"] = sum(s.missing_images for s in splits.values() if s is not None)
    return splits, report
