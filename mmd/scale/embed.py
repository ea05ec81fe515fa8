"""Sharded embedding: the cache misses, cut into shards by content hash, encoded on Dask workers.

The driver decides what to encode (each distinct text and image the cache lacks, once), groups it by
shard (`shard_of(sha256)`: a text or a picture lands in the same shard however many workers there
are), and sends each shard to a worker, which encodes it with the encoder it loaded once. The driver
alone writes: it puts the returned vectors in the cache and flushes, then assembles the items in their
order from the cache with `embed_items`, which finds everything there and encodes nothing. So the
vectors file, the cache and the report come out as from one process, and a second run encodes nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from mmd.encoders import EmbeddingCache, EmbedResult, Encoder, embed_items, text_key
from mmd.encoders.cache import image_content_keys
from mmd.scale.engine import Engine, ScaleError
from mmd.scale.shards import shard_of
from mmd.scale.spec import worker_spec


def shard_payloads(items: Sequence[dict[str, Any]], cache: EmbeddingCache, data_dir: Path,
                   shards: int) -> dict[int, dict[str, list]]:
    """shard -> {"texts": [(key, text)], "images": [(key, image_path)]}: what the cache lacks, each
    distinct content once, in first-seen order within its shard."""
    out: dict[int, dict[str, list]] = {}

    def slot(key: str) -> dict[str, list]:
        return out.setdefault(shard_of(key, shards), {"texts": [], "images": []})

    text_of = {text_key(r.get("text")): (r.get("text") or "") for r in items}
    for key in cache.missing_texts(text_of):
        slot(key)["texts"].append((key, text_of[key]))
    image_keys, _ = image_content_keys(items, data_dir)
    first_ref: dict[str, str] = {}
    for item, key in zip(items, image_keys):
        if key is not None:
            first_ref.setdefault(key, item["image_path"])
    for key in cache.missing_images(first_ref):
        slot(key)["images"].append((key, first_ref[key]))
    return out


def embed_sharded(settings, items: Sequence[dict[str, Any]], encoder: Encoder, cache: EmbeddingCache,
                  data_dir: Path, engine: Engine, show_progress: bool = False) -> EmbedResult:
    """`embed_items` with the cache misses encoded on `engine`'s workers (see the module docstring).

    `settings` names the encoder (its `embed` section) for the workers. An encoder that looks vectors up
    by item id computes nothing, so it runs here as before."""
    cfg = settings.params.embed
    if encoder.keyed_by_id:
        return embed_items(items, encoder, cache, data_dir, cfg.batch_size, cfg.num_workers, show_progress)
    payloads = shard_payloads(items, cache, Path(data_dir), settings.params.scale.shards)
    spec = worker_spec(settings, ("embed",))
    from mmd.scale.worker import encode_shard

    results = engine.map(encode_shard, list(payloads.values()), spec, str(data_dir),
                         label="encoding shards" if show_progress else None)
    encoded_texts = encoded_images = 0
    for res in results:
        if res["identity"] != encoder.identity:
            raise ScaleError(f"a worker built encoder {res['identity']!r}, this process {encoder.identity!r}: "
                             "workers must run the same mmd, packages and weights as the driver")
        if res["text_keys"]:
            cache.put_texts(res["text_keys"], res["text"])
        if res["image_keys"]:
            cache.put_images(res["image_keys"], res["image"])
        encoded_texts += len(res["text_keys"])
        encoded_images += len(res["image_keys"])
    cache.flush()
    # everything is cached now but the pictures no worker could read: those are tried here once more
    # (a worker on another machine may not see a file this one does) and reported missing if they fail
    result = embed_items(items, encoder, cache, data_dir, cfg.batch_size, 0)
    return dataclasses.replace(
        result, encoded_texts=result.encoded_texts + encoded_texts, cached_texts=result.cached_texts - encoded_texts,
        encoded_images=result.encoded_images + encoded_images, cached_images=result.cached_images - encoded_images)
