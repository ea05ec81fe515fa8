"""Sharded synthetic scoring: SemSim and DisSim's scoring pass over the candidate stream on Dask workers.

The candidates still stream (from the store, page by page): each chunk is cut into shards by candidate
id, each shard is a task, and at most a few chunks are in flight, so the driver holds no more of the
pool than the single-process path does. What needs the whole pool stays on the driver: the real mean
(SemSim), the reservoir sample and the Sinkhorn fit of the real-side potential (DisSim), which is sent
to every worker once per pass. A candidate's score depends on that candidate alone, so the sharded
scores equal the single-process ones (up to float rounding in the matrix products, ~1e-7).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mmd.scale.engine import Engine
from mmd.scale.shards import plan
from mmd.synth.scoring import Potential, real_mean

# chunks whose shards may be queued or running at once, per worker: enough to keep every worker busy
# while the driver reads the next page, few enough that the pool never piles up in memory
IN_FLIGHT_PER_WORKER = 2


@dataclass
class ShardedScoring:
    """The two candidate passes of `mmd.synth.select.choose`, on `engine`'s workers; `ids` are the
    candidates' ids in stream order (the shard keys)."""

    engine: Engine
    ids: Sequence[str]
    shards: int
    torch_threads: int = 1

    def semsim(self, chunks: Iterable[np.ndarray], target: np.ndarray) -> np.ndarray:
        """What `semsim_scores(chunks, target)` returns."""
        from mmd.scale.worker import semsim_shard

        return self._stream(semsim_shard, chunks, real_mean(target))

    def potentials(self, potential: Potential, chunks: Iterable[np.ndarray]) -> np.ndarray:
        """What `potentials(potential, chunks)` returns."""
        from mmd.scale.worker import potential_shard

        return self._stream(potential_shard, chunks, self.engine.share(potential), self.torch_threads)

    def _stream(self, fn: Callable, chunks: Iterable[np.ndarray], *shared: Any) -> np.ndarray:
        out: np.ndarray | None = None
        pending: deque = deque()
        limit = max(1, IN_FLIGHT_PER_WORKER * self.engine.workers)
        offset = 0

        def collect(positions: np.ndarray, future) -> None:
            nonlocal out
            values = np.asarray(future.result())
            if out is None:
                out = np.empty(len(self.ids), dtype=values.dtype)
            out[positions] = values
            future.release()

        try:
            for chunk in chunks:
                chunk = np.asarray(chunk)
                if not len(chunk):
                    continue
                if offset + len(chunk) > len(self.ids):
                    raise ValueError(f"the candidate stream has more rows than its {len(self.ids)} ids")
                futures = [(offset + idx, self.engine.submit(fn, chunk[idx], *shared))
                           for _, idx in plan(self.ids[offset : offset + len(chunk)], self.shards)]
                pending.append(futures)
                offset += len(chunk)
                while len(pending) > limit:
                    for positions, future in pending.popleft():
                        collect(positions, future)
            while pending:
                for positions, future in pending.popleft():
                    collect(positions, future)
        finally:
            for futures in pending:
                for _, future in futures:
                    future.release()
        if offset != len(self.ids):
            raise ValueError(f"the candidate stream ended after {offset} of its {len(self.ids)} ids")
        return out if out is not None else np.zeros(0, np.float32)
