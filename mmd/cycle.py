"""What a scheduled cycle needs besides the stages; the flows in `flows/` call these and hold no logic.

- `cycle_lock`: an exclusive lock on `<data>/.cycle.lock` (fcntl, released by the kernel
  when the holder dies, so a killed cycle never leaves it stuck). A second cycle waits or is
  refused with a message naming the running one. DVC's own lock forbids parallel repros
  too; this one also covers cycles that call the library directly, and the ingest flow.
- `run_stage`: a stage by name, through `dvc repro --single-item <stage>` in a DVC project
  (DVC reruns it only when its deps, params or outputs changed, so a cycle started again after
  a failure resumes where it stopped, and dvc.lock records what produced each output), or by
  calling the library directly elsewhere. Either way it says how long the stage took.
- `version_cycle`: after the gate, `dvc push` (data and models to the remote) and, when
  `cycle.commit` is on, a git commit of dvc.lock: what a clean clone needs to reproduce the cycle.
- `summary_rows`: one line per stage with its figures (each stage's typed result knows its own), for the
  demo's table and the flow's artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterator

from mmd import stages
from mmd.config import Settings
from mmd.errors import EXIT_RETRYABLE, PushFailed, Retryable
from mmd.items import now_iso
from mmd.results import GateReport, StageResult
from mmd.stages import Stage
from mmd.util import file_lock


class CycleRunning(RuntimeError):
    """Another cycle holds the lock."""


@dataclass
class StageRun:
    """One stage of a cycle: how it ran (dvc or direct), whether DVC skipped it, its seconds and its result."""

    stage: str
    how: str
    status: str
    seconds: float
    result: StageResult | None

    def row(self) -> dict:
        return {"stage": self.stage, "how": self.how, "status": self.status, "seconds": self.seconds,
                "figures": self.result.figures() if self.result is not None else ""}


def cycle_stages(settings: Settings) -> list[Stage]:
    """The stages of one retrain cycle, in order: the data plane, a training stage per family, the gate."""
    return stages.cycle_stages(settings.params.evaluate.families)


def is_dvc_project(settings: Settings) -> bool:
    return (settings.root / "dvc.yaml").is_file() and (settings.root / ".dvc").is_dir()


def uses_dvc(settings: Settings, override: bool | None = None) -> bool:
    """`override` if given, else `cycle.dvc` (auto: when the params file sits in a DVC project)."""
    if override is not None:
        return override
    mode = settings.params.cycle.dvc
    return is_dvc_project(settings) if mode == "auto" else mode == "on"


def _env() -> dict[str, str]:
    """DVC runs each stage's `mmd …` command in a shell: the venv's commands come first on its PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def _tool(name: str) -> str:
    """A command installed beside this Python (the venv), else on PATH."""
    found = shutil.which(name, path=_env()["PATH"])
    if found is None:
        raise FileNotFoundError(f"{name} is not installed beside this Python nor on PATH")
    return found


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _run_streaming(cmd: list[str], cwd: Path, what: str, on_line: Callable[[str], None] | None) -> str:
    """Run `cmd`, passing each line it prints (stdout and stderr) to `on_line` as it comes: a long stage's
    progress reaches the flow's log while it runs. Its output; RuntimeError with the tail when it fails."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line is not None and line.strip():
            on_line(line.rstrip())
    code = proc.wait()
    out = "".join(lines)
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}):\n{out[-6000:]}")
    return out


def run_stage(settings: Settings, name: str, use_dvc: bool | None = None,
              log: Callable[[str], None] | None = None) -> StageRun:
    """Run one stage (see the module docstring): directly, or through `dvc repro --single-item`, after which
    its result is the report it left (the last one when DVC skipped it). `log` gets the stage's output lines."""
    stage = stages.get(name, settings.params.evaluate.families)
    start = time.perf_counter()
    if not uses_dvc(settings, use_dvc):
        result = stage.run(settings, log)
        return StageRun(name, "direct", "ran", round(time.perf_counter() - start, 3), result)
    target = f"gpu/dvc.yaml:{name}" if stage.gpu else name
    try:
        out = _run_streaming([_tool("dvc"), "repro", "--single-item", target], settings.root, f"dvc repro {target}", log)
    except RuntimeError as exc:
        if f"exited with {EXIT_RETRYABLE}" in str(exc):  # the stage said: try again later
            raise Retryable(str(exc)) from None
        raise
    skipped = "didn't change, skipping" in out
    return StageRun(name, "dvc", "skipped" if skipped else "ran", round(time.perf_counter() - start, 3),
                    stage.last(settings))


@contextlib.contextmanager
def cycle_lock(settings: Settings, wait: bool = False, poll_s: float = 5.0) -> Iterator[Path]:
    """Hold the cycle lock for the duration of the block; CycleRunning when another cycle has it
    (or, with `wait`, block until it is free)."""
    path = settings.layout.cycle_lock
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


# --- versioning after the gate -----------------------------------------------------------

def _default_remote(root: Path) -> str | None:
    proc = subprocess.run([_tool("dvc"), "remote", "default"], cwd=root, env=_env(), capture_output=True, text=True)
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name and "No default remote" not in name else None


def _tracked_outputs(root: Path) -> list[str]:
    """What git keeps of a DVC pipeline: dvc.lock, the outputs git does not ignore (the metrics, plots and
    reports declared `cache: false`) and the .gitignore files DVC writes for the outputs it caches."""
    import yaml

    git = _tool("git")
    locks = [p for p in ("dvc.lock", "gpu/dvc.lock") if (root / p).exists()]
    outs: list[str] = []
    for lock in locks:
        base = (root / lock).parent
        for stage in (yaml.safe_load((root / lock).read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                path = (base / out["path"]).resolve()
                if path.exists():
                    outs.append(str(path.relative_to(root)))
    ignored = set(subprocess.run([git, "check-ignore", "--stdin"], cwd=root, input="\n".join(outs),
                                 capture_output=True, text=True).stdout.split())
    untracked = _run([git, "status", "--porcelain", "--untracked-files=all"], root, "git status").stdout.splitlines()
    gitignores = [line[3:] for line in untracked if line.endswith(".gitignore")]
    return locks + [o for o in outs if o not in ignored] + gitignores


def _git_commit(root: Path, message: str, sender: str) -> str | None:
    """Commit what a clean clone needs beside `dvc pull` (`_tracked_outputs`); the new commit, or None
    when nothing changed. Only those paths are committed, whatever else is staged."""
    git = _tool("git")
    if subprocess.run([git, "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode != 0:
        raise RuntimeError(f"cycle.commit is on but {root} is not a git repository")
    paths = _tracked_outputs(root)
    _run([git, "add", "--", *paths], root, "git add")
    if subprocess.run([git, "diff", "--cached", "--quiet", "--", *paths], cwd=root).returncode == 0:
        return None
    # an unattended machine often has no git identity: the cycle commits as mmd <notify.sender>
    has_identity = subprocess.run([git, "config", "--get", "user.email"], cwd=root, capture_output=True).returncode == 0
    who = [] if has_identity else ["-c", "user.name=mmd", "-c", f"user.email={sender}"]
    _run([git, *who, "commit", "-q", "-m", message, "--", *paths], root, "git commit")
    return _run([git, "rev-parse", "HEAD"], root, "git rev-parse").stdout.strip()


def version_cycle(settings: Settings, gate: GateReport, use_dvc: bool | None = None) -> dict:
    """After the gate: `dvc push` and the optional commit of dvc.lock (`cycle.push`, `cycle.commit`).
    Outside a DVC project there is nothing to version and nothing is done."""
    cfg = settings.params.cycle
    out: dict = {"pushed": False, "remote": None, "commit": None}
    if not uses_dvc(settings, use_dvc):
        out["skipped"] = "not a DVC project"
        return out
    if cfg.commit:
        decisions = ", ".join(f"{f} {d.action}" + (f" v{d.champion_after}" if d.champion_after else "")
                              for f, d in gate.families.items())
        out["commit"] = _git_commit(settings.root, f"mmd cycle {gate.gated_at or now_iso()}: {decisions}",
                                    settings.params.notify.sender)
    remote = _default_remote(settings.root) if cfg.push != "off" else None
    if cfg.push == "on" and remote is None:
        raise RuntimeError("cycle.push is on but DVC has no default remote (dvc remote add -d NAME URL)")
    if remote:
        try:
            _run([_tool("dvc"), "push", "-q"], settings.root, f"dvc push to {remote}")
        except RuntimeError as exc:
            raise PushFailed(str(exc)) from None
        out.update(pushed=True, remote=remote)
    return out


# --- the summary ---------------------------------------------------------------------------

def summary_rows(ran: dict[str, StageRun]) -> list[dict]:
    """One row per stage of this cycle (run or skipped by DVC): stage, how, status, seconds, figures."""
    return [run.row() for run in ran.values() if isinstance(run, StageRun)]
