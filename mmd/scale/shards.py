"""Shards by content hash: which shard a piece of work belongs to, and putting the shards' results back
in the original order. Pure functions, no engine: the single-process path never imports Dask.

A shard is `blake2b(key) mod shards`, where the key is a content hash (a text's or an image's sha256,
an item's `content_hash`) or an item id. So the same content always lands in the same shard, whatever
the number of workers or the order of the input, and a rerun sends it to the same shard again.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def shard_of(key: str, shards: int) -> int:
    """The shard of a key: stable across runs, processes and machines (Python's hash() is salted per process)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def plan(keys: Sequence[str], shards: int) -> list[tuple[int, np.ndarray]]:
    """(shard, positions in `keys`) for every shard that holds something, positions in input order."""
    of = np.fromiter((shard_of(k, shards) for k in keys), dtype=np.int64, count=len(keys))
    order = np.argsort(of, kind="stable")
    cuts = np.flatnonzero(np.diff(of[order])) + 1
    return [(int(of[group[0]]), group) for group in np.split(order, cuts) if len(group)]


def merge(n: int, groups: Sequence[np.ndarray], parts: Sequence[np.ndarray]) -> np.ndarray:
    """The shards' row-wise results (`parts[i]` for the rows at `groups[i]`) as one array in input order."""
    if len(groups) != len(parts):
        raise ValueError(f"merge: {len(groups)} shards but {len(parts)} results")
    first = next((np.asarray(p) for p in parts if len(p)), None)
    if first is None:
        return np.zeros(n, np.float32)
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    filled = np.zeros(n, bool)
    for group, part in zip(groups, parts):
        part = np.asarray(part)
        if len(part) != len(group):
            raise ValueError(f"merge: a shard of {len(group)} rows returned {len(part)} results")
        out[group] = part
        filled[group] = True
    if not filled.all():
        raise ValueError(f"merge: {int((~filled).sum())} of {n} rows came back from no shard")
    return out
