"""Search the indexed items by text and/or image: what `mmd search` shows a moderator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mmd.config import Settings
from mmd.formats.vectors import read_vectors


def query_vector(settings: Settings, text: str, image: Path | None) -> np.ndarray:
    """The mixed-modal vector of a query, built exactly as items' vectors are."""
    from mmd.encoders import build_encoder, mix

    cfg = settings.params.embed
    encoder = build_encoder(cfg, settings.root)
    _, _, indexed_with = read_vectors(settings.layout.vectors)
    if indexed_with and indexed_with != encoder.identity:
        raise ValueError(f"the index was built with {indexed_with}, but embed is configured for {encoder.identity}: "
                         "run `mmd embed` and `mmd index --rebuild`")
    t = encoder.encode_texts([text]) if text else np.zeros((1, encoder.text_dim), np.float32)
    if image is not None:
        with Image.open(image) as img:
            i = encoder.encode_images([img.convert("RGB")])
    else:
        i = np.zeros((1, encoder.image_dim), np.float32)
    has_image = np.array([image is not None])
    if not text:  # an image-only query: the text part stays zero
        return mix(t, i, has_image, 0.0)
    return mix(t, i, has_image, cfg.text_weight)


def search_items(settings: Settings, text: str, image: Path | None, k: int = 10, filters: dict | None = None):
    from mmd.index import ensure_indexed
    from mmd.store import open_store

    vec = query_vector(settings, text, image)[0]
    store = open_store(settings)
    try:
        ensure_indexed(settings, store)
        return store.search(settings.params.index.items_collection, vec, k=k, filter=filters)
    finally:
        store.close()
