"""Dask distributed as the engine of sharded work: connect (or start a LocalCluster), run one task per
shard, gather the results in shard order.

`open_engine(cfg)` yields None for `scale.engine: none`, so a caller writes one `with` and passes the
engine (or None: the single-process path) to the sharded functions. Dask is imported only here and in
`mmd.scale.worker`, and only when the engine is dask.

Only the driver (the stage's process) writes anything: the embedding cache, the vectors, the store.
Workers compute and return arrays; they read the data folder (pictures, the embedding cache, model
folders), so on several machines it must be mounted at the same path everywhere.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from mmd.config import ScaleConfig


class ScaleError(RuntimeError):
    """The engine cannot run: no scheduler at the address, no worker, Dask missing."""


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ScaleError(f"scale.engine: dask needs the distributed package ({exc}): "
                         "pip install -c constraints.txt 'dask[distributed]==2026.8.0' (the `scale` extra)") from exc
    return distributed


class Engine:
    """Dask work for one stage: connects (or starts a LocalCluster) on first use, so a stage with nothing
    to distribute (everything cached) starts nothing; `close` stops what it started."""

    def __init__(self, cfg: ScaleConfig):
        self.cfg = cfg
        self._client: Any = None
        self._cluster: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client, self._cluster = _connect(self.cfg)
        return self._client

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def share(self, value: Any) -> Any:
        """Send a large read-only value to every worker once; pass the returned handle to `map` or `submit`."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def submit(self, fn: Callable, *args: Any) -> Any:
        """One task; its future's `result()` waits for it (and raises what the task raised)."""
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn: Callable, payloads: Sequence[Any], *shared: Any, label: str | None = None) -> list[Any]:
        """`fn(payload, *shared)` on the workers, a task per payload; the results in payload order.
        A task that raises fails the call with the worker's exception. `label`: show progress."""
        if not payloads:
            return []
        futures = [self.submit(fn, p, *shared) for p in payloads]
        try:
            if label:
                from distributed import as_completed

                from mmd.util import progress

                for _ in progress(as_completed(futures), label, total=len(futures)):
                    pass
            return self.client.gather(futures)
        finally:
            for f in futures:
                f.release()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


# What a LocalCluster's worker processes start with, instead of Dask's pre-spawn defaults: the native
# thread pools sized like torch's (`scale.torch_threads`), and no MALLOC_TRIM_THRESHOLD_. Setting that
# variable (Dask sets 65536) turns off glibc's adaptive mmap threshold, so every activation over 128 KiB
# is mapped and faulted in afresh: the offline encoder ran 1.75x slower with it (128 HarMeme items on one
# thread, 6.6 s against 3.8 s).
def worker_environment(cfg: ScaleConfig) -> dict[str, str | None]:
    threads = str(cfg.torch_threads)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "MALLOC_TRIM_THRESHOLD_": None}


def _local_cluster(distributed, cfg: ScaleConfig):
    import dask

    env = worker_environment(cfg)
    # the nanny also writes these into this process's environment before it spawns a worker; put ours back
    # so that what the stage starts later (DataLoader workers, subprocesses) does not inherit them
    saved = {key: os.environ.get(key) for key in env}
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{key}": value for key, value in env.items()}):
            # processes, not threads: torch, the tokenizers and the GIL make threads contend; no dashboard,
            # so stages running side by side on one machine do not fight over port 8787
            return distributed.LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker,
                                            processes=True, host="127.0.0.1", dashboard_address=None,
                                            silence_logs=logging.ERROR)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _connect(cfg: ScaleConfig) -> tuple[Any, Any]:
    distributed = _import_distributed()
    from mmd.scale.worker import WorkerState

    cluster = None
    if cfg.scheduler is None:
        cluster = _local_cluster(distributed, cfg)
        address = cluster.scheduler_address
    else:
        address = cfg.scheduler.strip()
    try:
        client = distributed.Client(address, timeout=cfg.connect_timeout_s, set_as_default=False)
    except (OSError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise ScaleError(f"scale.scheduler: no Dask scheduler answered at {address} within "
                         f"{cfg.connect_timeout_s:g} s ({exc}); start one (`dask scheduler`) or set scheduler: "
                         "null for a local cluster") from exc
    try:
        client.wait_for_workers(1, timeout=cfg.connect_timeout_s)
        client.register_plugin(WorkerState())
    except BaseException as exc:
        client.close()
        if cluster is not None:
            cluster.close()
        if isinstance(exc, (TimeoutError, OSError)):
            raise ScaleError(f"the Dask scheduler at {address} has no worker after {cfg.connect_timeout_s:g} s: "
                             f"start workers (`dask worker {address}`)") from exc
        raise
    return client, cluster


def connect(cfg: ScaleConfig) -> Engine:
    """An engine connected now: to `cfg.scheduler`, or to a LocalCluster of `cfg.workers` processes. Fails
    within `cfg.connect_timeout_s` with a ScaleError when no scheduler answers there or it has no worker."""
    engine = Engine(cfg)
    engine.client  # noqa: B018 - connecting is the point
    return engine


@contextmanager
def open_engine(cfg: ScaleConfig) -> Iterator[Engine | None]:
    """The engine `cfg` asks for for the length of a `with` (None: one process), closed after it. It
    connects when first given work."""
    if cfg.engine == "none":
        yield None
        return
    engine = Engine(cfg)
    try:
        yield engine
    finally:
        engine.close()
