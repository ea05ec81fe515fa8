"""The `scale:` section: where embedding and scoring run. The default is one process, exactly as
without the section; `engine: dask` spreads the work, sharded by content hash, over Dask workers
(`mmd.scale`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# what distributed's Client takes: [scheme://]host:port (IPv6 in brackets)
_ADDRESS = re.compile(r"((tcp|tls|ws|wss)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}")


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    # none: every stage in its own process, as always; dask: embedding and scoring on Dask workers
    engine: Literal["none", "dask"] = "none"
    # null: a LocalCluster of `workers` processes started by the stage (and stopped after it);
    # "tcp://host:8786": a running scheduler (its workers, whatever `workers` says)
    scheduler: str | None = None
    workers: int = Field(2, ge=1)              # LocalCluster only
    threads_per_worker: int = Field(1, ge=1)   # LocalCluster only: tasks a worker runs at once
    # torch's intra-op threads in each worker: 1 keeps workers from fighting over cores
    torch_threads: int = Field(1, ge=1)
    # the work is cut into this many shards by content hash: an item lands in the same shard whatever
    # the worker count; more shards balance better, fewer cost less scheduling
    shards: int = Field(32, ge=1, le=4096)
    # a scheduler that does not answer, or has no worker, within this fails the stage
    connect_timeout_s: float = Field(10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _consistent(self) -> "ScaleConfig":
        if self.scheduler is not None:
            if self.engine != "dask":
                raise ValueError("scale.scheduler is set but scale.engine is none: set engine: dask to use it")
            if not _ADDRESS.fullmatch(self.scheduler.strip()):
                raise ValueError(f"scale.scheduler {self.scheduler!r} is not a scheduler address "
                                 "such as tcp://scheduler:8786")
        return self
