"""Encoders (open_clip, offline pretrained, precomputed) and the embedding cache.

`build_encoder(cfg.embed, settings.root)` gives the configured backend;
`embed_items(rows, encoder, EmbeddingCache.for_encoder(root, encoder), data_dir)` embeds
item rows, computing only what the cache lacks. Backends are imported lazily: building
one never pays for the others' imports.
"""

from __future__ import annotations

from pathlib import Path

from mmd.config import EmbedConfig
from mmd.encoders.base import (
    EncodedItems,
    Encoder,
    EncoderUnavailable,
    MissingImage,
    l2_normalise,
    mix,
)
from mmd.encoders.cache import CacheIdentityError, EmbeddingCache, EmbedResult, embed_items, text_key

__all__ = [
    "CacheIdentityError",
    "EmbedResult",
    "EmbeddingCache",
    "EncodedItems",
    "Encoder",
    "EncoderUnavailable",
    "MissingImage",
    "build_encoder",
    "embed_items",
    "l2_normalise",
    "mix",
    "text_key",
]


def build_encoder(cfg: EmbedConfig, root: Path) -> Encoder:
    """The encoder `embed.backend` names; relative paths in `cfg` resolve against `root`
    (the params file's folder). Raises EncoderUnavailable saying how to provide weights."""
    if cfg.backend == "offline":
        from mmd.encoders.offline import OfflineEncoder

        return OfflineEncoder(device=cfg.device, threads=cfg.threads, runtime=cfg.runtime)
    if cfg.backend == "open_clip":
        from mmd.encoders.open_clip import OpenClipEncoder

        return OpenClipEncoder(cfg.open_clip, root=root, device=cfg.device, threads=cfg.threads)
    if cfg.backend == "precomputed":
        from mmd.encoders.precomputed import PrecomputedEncoder

        return PrecomputedEncoder(cfg.precomputed, root=root)
    raise EncoderUnavailable(f"unknown embed.backend {cfg.backend!r}")  # config validation prevents this
