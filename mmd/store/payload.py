"""What goes into and comes out of every store backend: plain payload values, the filter language, and
the one error every backend raises."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

_SHOWN = 10  # offending ids listed in a message before "… and N more"


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why and what to do."""


_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python values, recursively (payloads must be JSON)."""
    if type(value) in _JSON_SCALARS:  # the common case, checked cheaply first
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# (field, value, negated): value -> MatchValue, [values] -> MatchAny; negated conditions must not hold
Condition = tuple[str, Any, bool]


def _condition(field: str, value: Any, negated: bool) -> Condition:
    if isinstance(value, (list, tuple, set, frozenset)):
        values = list(value)
        kinds = {bool if isinstance(v, bool) else int if isinstance(v, int) else str if isinstance(v, str) else None for v in values}
        if not values or None in kinds or bool in kinds or len(kinds) > 1:
            raise StoreError(
                f"filter[{field!r}]: a list must be non-empty and hold only strings or only integers, got {values!r:.80}"
            )
        return (field, values, negated)
    if isinstance(value, (str, int, bool)):
        return (field, value, negated)
    raise StoreError(f"filter[{field!r}]: values must be a string, integer, boolean or a list of them, got {value!r:.80}")


def parse_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """{field: value or [values] or {"not": value or [values]}} -> checked conditions, all of which must hold.

    `{"not": …}` excludes: `{"group": {"not": "sandy"}}` keeps points whose group is anything
    else, or absent.
    """
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise StoreError(f"filter must be a mapping of field -> value or [values], got {type(filter).__name__}")
    out: list[Condition] = []
    for field, value in filter.items():
        if not isinstance(field, str) or not field:
            raise StoreError(f"filter keys must be payload field names, got {field!r}")
        value = _plain(value)
        if isinstance(value, dict):
            if set(value) != {"not"}:
                raise StoreError(f"filter[{field!r}]: the only mapping a filter takes is {{'not': value or [values]}}, "
                                 f"got {value!r:.80}")
            out.append(_condition(field, value["not"], True))
        else:
            out.append(_condition(field, value, False))
    return out


def _list_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(map(str, ids[:_SHOWN]))
    return shown + (f" … and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def check_vectors(name: str, vectors: Any, dim: int | None, ids: Sequence[str], rebuild_hint: str = "") -> np.ndarray:
    """Vectors a collection can hold: a float (N, dim) array, finite, none all zero; as contiguous float32."""
    if not isinstance(vectors, np.ndarray):
        raise StoreError(f"{name}: vectors must be a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise StoreError(f"{name}: vectors must be 2-D (items x dim), got shape {vectors.shape}")
    if vectors.dtype.kind != "f":
        raise StoreError(f"{name}: vectors must be floating point, got dtype {vectors.dtype}")
    if len(vectors) != len(ids):
        raise StoreError(f"{name}: {len(ids)} ids but {len(vectors)} vectors")
    if dim is not None and vectors.shape[1] != dim:
        raise StoreError(
            f"{name}: vectors have dim {vectors.shape[1]} but the collection holds dim {dim}; "
            f"a different encoder needs its own index: {rebuild_hint}"
        )
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        offenders = [ids[i] for i in np.flatnonzero(bad)]
        raise StoreError(f"{name}: NaN or infinite values in the vectors of {len(offenders)} item(s): {_list_ids(offenders)}")
    zero = ~matrix.any(axis=1)
    if zero.any():
        offenders = [ids[i] for i in np.flatnonzero(zero)]
        raise StoreError(f"{name}: all-zero vectors (no cosine direction) for {len(offenders)} item(s): {_list_ids(offenders)}")
    return matrix

def check_payload(name: str, item_id: str, payload: Mapping[str, Any] | None) -> dict:
    """A payload as plain JSON, carrying its item id."""
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise StoreError(f"{name}: payload of item {item_id} must be a mapping, got {type(payload).__name__}")
    clean = _plain(payload)
    other = clean.get("item_id", item_id)
    if other != item_id:
        raise StoreError(f"{name}: payload of item {item_id} carries item_id {other!r}; the store sets it")
    clean["item_id"] = item_id
    try:
        json.dumps(clean, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{name}: payload of item {item_id} is not plain JSON ({exc})") from None
    return clean
