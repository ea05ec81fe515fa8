"""What a worker needs to rebuild the driver's settings: the params sections a task reads, as plain
JSON values, and the folder the params came from (relative paths resolve against it, so on several
machines the project must be mounted at the same path everywhere)."""

from __future__ import annotations

from typing import Iterable

from mmd.config import Settings


def worker_spec(settings: Settings, sections: Iterable[str]) -> dict:
    """The spec of a task that reads `sections` (and `paths`), for a worker's torch threads.

    The encoder and detectors on a worker use `scale.torch_threads` rather than `embed.threads` and
    `train.threads` (the driver's machine's cores), and no DataLoader processes (a Dask worker is a
    daemon process, which may not start any)."""
    threads = settings.params.scale.torch_threads
    params = settings.sections(tuple(dict.fromkeys(("paths", *sections))))
    if "embed" in params:
        params["embed"] = {**params["embed"], "threads": threads, "num_workers": 0}
    if "train" in params:
        params["train"] = {**params["train"], "threads": threads}
    return {"params": params, "root": str(settings.root), "torch_threads": threads}
