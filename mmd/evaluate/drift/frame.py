"""Item rows -> one row each of the columns the data-drift check compares."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from mmd.config.gate import DEFAULT_COLUMNS
from mmd.evaluate.drift.check import _float
# ---------------------------------------------------------------------------------------
# Item rows -> a frame of the checked columns


def _image_brightness(path: Path) -> float:
    """Mean grey level (0..255) of the picture thumbnailed to 64 px; NaN when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("L", (64, 64))  # JPEG: decode at reduced size
            im.thumbnail((64, 64))
            return float(np.asarray(im.convert("L"), dtype=np.float64).mean())
    except Exception:  # unreadable, truncated, not an image, missing: all mean "no figure"
        return float("nan")


def _as_dict(row: Any) -> Mapping:
    if isinstance(row, Mapping):
        return row
    if dataclasses.is_dataclass(row):
        return dataclasses.asdict(row)
    if hasattr(row, "model_dump"):
        return row.model_dump()
    raise TypeError(f"item_frame takes dicts (or dataclasses), got {type(row).__name__}")


def _category(value: Any) -> str:
    return "unknown" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "unknown"


def _size(value: Any) -> float:
    f = _float(value)
    return float("nan") if f is None else f


def item_frame(rows: Iterable[Any], data_dir: Path | None = None, image_stats: bool = True) -> pd.DataFrame:
    """Item rows -> one row each of the `DEFAULT_COLUMNS` features.

    text_length (chars) and word_count of the text; label as the category "0"/"1"/
    "unknown"; kind, source, language ("unknown" when missing); has_image "yes" when the
    item names an image path, else "no"; image_width / image_height (float, NaN without
    an image; taken from the row, or from the file when the row has none); and
    image_brightness, the mean grey level of the picture thumbnailed to 64 px (NaN when
    there is no image, it cannot be read, or image_stats=False).
    """
    records = []
    for raw in rows:
        row = _as_dict(raw)
        text = row.get("text") or ""
        image_path = row.get("image_path") or None
        width, height = _size(row.get("image_width")), _size(row.get("image_height"))
        brightness = float("nan")
        if image_path is not None and image_stats:
            path = Path(image_path)
            if not path.is_absolute() and data_dir is not None:
                path = Path(data_dir) / path
            brightness = _image_brightness(path)
            if math.isnan(width) or math.isnan(height):
                with contextlib.suppress(Exception):
                    from PIL import Image

                    with Image.open(path) as im:
                        width, height = float(im.size[0]), float(im.size[1])
        if image_path is None:
            width = height = float("nan")
        records.append({
            "text_length": float(len(text)),
            "word_count": float(len(text.split())),
            "label": _label(row.get("label")),
            "kind": _category(row.get("kind")),
            "source": _category(row.get("source")),
            "language": _category(row.get("language")),
            "has_image": "yes" if image_path is not None else "no",
            "image_width": width,
            "image_height": height,
            "image_brightness": brightness,
        })
    return pd.DataFrame.from_records(records, columns=list(DEFAULT_COLUMNS))
