"""What a scheduled cycle needs besides the stages: one cycle at a time, and a stage runner.

- `cycle_lock`: an exclusive lock on `<data>/.cycle.lock` (fcntl, released by the kernel
  when the holder dies, so a killed cycle never leaves it stuck). A second cycle waits or is
  refused with a message naming the running one. DVC's own lock forbids parallel repros
  too; this one also covers cycles that call the library directly.
- `run_stage`: a stage by name, through `dvc repro --single-item <stage>` in a DVC project
  (DVC reruns it only when its deps, params or outputs changed, so a cycle started again after
  a failure resumes where it stopped, and dvc.lock records what produced each output), or by
  calling the library directly elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from mmd.config import Settings
from mmd.items import now_iso
from mmd.util import file_lock


class CycleRunning(RuntimeError):
    """Another cycle holds the lock."""


def _train(family: str) -> Callable[[Settings], dict]:
    def run(settings: Settings) -> dict:
        if family == "cmc":
            from mmd.models.cmc.train import run_train_cmc

            return run_train_cmc(settings)
        if family == "rgcl":
            from mmd.models.rgcl.train import run_train_rgcl

            return run_train_rgcl(settings)
        from mmd.models.lmm.train import run_train_lmm

        return run_train_lmm(settings)

    return run


def _call(module: str, function: str, **kwargs) -> Callable[[Settings], dict]:
    def run(settings: Settings) -> dict:
        import importlib

        result = getattr(importlib.import_module(module), function)(settings, **kwargs)
        return result if isinstance(result, dict) else result.to_dict()

    return run


STAGES: dict[str, Callable[[Settings], dict]] = {
    "ingest": _call("mmd.ingest", "run_ingest", show_progress=False),
    "validate": _call("mmd.validate", "run_validate"),
    "embed": _call("mmd.embed", "run_embed", show_progress=False),
    "index": _call("mmd.index", "run_index"),
    "synthesize": _call("mmd.synth.generate", "run_synthesize"),
    "select": _call("mmd.synth.select", "run_select"),
    "train_cmc": _train("cmc"),
    "train_rgcl": _train("rgcl"),
    "train_lmm": _train("lmm"),
    "evaluate": _call("mmd.evaluate.evaluate", "run_evaluate"),
    "gate": _call("mmd.gate", "run_gate"),
}
# the stages whose report file a DVC run leaves behind (what `run_stage` returns in that mode)
REPORTS = {"ingest": "ingest.json", "validate": "validation.json", "embed": "embed.json", "index": "index.json",
           "synthesize": "synthesize.json", "select": "select.json", "train_cmc": "train_cmc.json",
           "train_rgcl": "train_rgcl.json", "train_lmm": "train_lmm.json", "evaluate": "evaluate.json",
           "gate": "gate.json"}


def is_dvc_project(settings: Settings) -> bool:
    return (settings.root / "dvc.yaml").is_file() and (settings.root / ".dvc").is_dir()


def run_stage(settings: Settings, stage: str, use_dvc: bool | None = None) -> dict:
    """Run one stage (see the module docstring); returns its report."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    if use_dvc is None:
        use_dvc = is_dvc_project(settings)
    if not use_dvc:
        return STAGES[stage](settings)
    dvc = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if dvc is None:
        raise FileNotFoundError("dvc is not installed beside this Python")
    proc = subprocess.run([dvc, "repro", "--single-item", stage], cwd=settings.root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = settings.reports_dir / REPORTS[stage]
    out = json.loads(report.read_text()) if report.exists() else {}
    return {**out, "dvc": "skipped" if "didn't change, skipping" in proc.stdout else "ran"}


@contextlib.contextmanager
def cycle_lock(settings: Settings, wait: bool = False, poll_s: float = 5.0) -> Iterator[Path]:
    """Hold the cycle lock for the duration of the block; CycleRunning when another cycle has it
    (or, with `wait`, block until it is free)."""
    path = settings.data_dir / ".cycle.lock"
    holder = path.with_name(".cycle.holder")
    while True:
        with file_lock(path, wait=False) as held:
            if held:
                holder.write_text(f"pid {os.getpid()} since {now_iso()}")
                yield path
                return
            if not wait:
                who = holder.read_text().strip() if holder.exists() else "another process"
                raise CycleRunning(f"a cycle is already running ({who}); this one was refused. "
                                   f"It ends by itself; the lock is {path}")
        time.sleep(poll_s)
