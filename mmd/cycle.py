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
- `summary_rows`: one line per stage with its figures, for the demo's table and the flow's artifact.
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
# stages declared outside the root dvc.yaml (the GPU pipeline)
DVC_TARGETS = {"train_lmm": "gpu/dvc.yaml:train_lmm"}


def cycle_stages(settings: Settings) -> list[str]:
    """The stages of one retrain cycle, in order: the data plane, a training stage per family, the gate."""
    families = [f"train_{f}" for f in settings.params.evaluate.families]
    return ["ingest", "validate", "embed", "index", "synthesize", "select", *families, "evaluate", "gate"]


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


def run_stage(settings: Settings, stage: str, use_dvc: bool | None = None) -> dict:
    """Run one stage (see the module docstring).

    Returns `{stage, how: dvc|direct, status: ran|skipped, seconds, report}`; `report` is what the
    stage returned (direct) or the report file it left (DVC; the last one when DVC skipped it)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    start = time.perf_counter()
    if not uses_dvc(settings, use_dvc):
        report = STAGES[stage](settings)
        return {"stage": stage, "how": "direct", "status": "ran", "seconds": round(time.perf_counter() - start, 3),
                "report": report}
    target = DVC_TARGETS.get(stage, stage)
    proc = _run([_tool("dvc"), "repro", "--single-item", target], settings.root, f"dvc repro {target}")
    path = settings.reports_dir / REPORTS[stage]
    report = json.loads(path.read_text()) if path.exists() else {}
    skipped = "didn't change, skipping" in proc.stdout
    return {"stage": stage, "how": "dvc", "status": "skipped" if skipped else "ran",
            "seconds": round(time.perf_counter() - start, 3), "report": report}


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


def version_cycle(settings: Settings, gate: dict, use_dvc: bool | None = None) -> dict:
    """After the gate: `dvc push` and the optional commit of dvc.lock (`cycle.push`, `cycle.commit`).
    Outside a DVC project there is nothing to version and nothing is done."""
    cfg = settings.params.cycle
    out: dict = {"pushed": False, "remote": None, "commit": None}
    if not uses_dvc(settings, use_dvc):
        out["skipped"] = "not a DVC project"
        return out
    if cfg.commit:
        decisions = ", ".join(f"{f} {d.get('action')}" + (f" v{d['champion_after']}" if d.get("champion_after") else "")
                              for f, d in gate.get("families", {}).items())
        out["commit"] = _git_commit(settings.root, f"mmd cycle {gate.get('gated_at', now_iso())}: {decisions}",
                                    settings.params.notify.sender)
    remote = _default_remote(settings.root) if cfg.push != "off" else None
    if cfg.push == "on" and remote is None:
        raise RuntimeError("cycle.push is on but DVC has no default remote (dvc remote add -d NAME URL)")
    if remote:
        _run([_tool("dvc"), "push", "-q"], settings.root, f"dvc push to {remote}")
        out.update(pushed=True, remote=remote)
    return out


# --- the summary ---------------------------------------------------------------------------

def _pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def _figures(stage: str, r: dict) -> str:
    """A stage's headline figures, from its report."""
    if not r:
        return ""
    if stage == "ingest":
        t = r.get("totals", {})
        return (f"{t.get('in', 0)} in: {t.get('accepted', 0)} accepted, {t.get('quarantined', 0)} quarantined, "
                f"{t.get('duplicates', 0)} duplicates, {t.get('skipped', 0)} skipped")
    if stage == "validate":
        return f"{r.get('in')} in: {r.get('accepted')} pass ({_pct(r.get('pass_rate'))}), {r.get('quarantined')} quarantined"
    if stage == "embed":
        return (f"{r.get('embedded')} embedded; encoded {r.get('encoded_texts')} texts and {r.get('encoded_images')} "
                f"images, {r.get('cached_texts', 0) + r.get('cached_images', 0)} from the cache")
    if stage == "index":
        return f"{r.get('total')} points: {r.get('upserted')} upserted, {r.get('deleted')} deleted, {r.get('unchanged')} unchanged"
    if stage == "synthesize":
        return f"{r.get('new')} new synthetic items, pool {r.get('pool_before')} -> {r.get('pool_after')}"
    if stage == "select":
        return (f"{r.get('selected')} of {r.get('candidates')} selected ({r.get('ranked_by') or r.get('method')}); "
                f"divergence to real {_num(r.get('divergence_selected'))} vs random {_num(r.get('divergence_random'))}")
    if stage.startswith("train_"):
        m = r.get("val") or {}
        m = m.get("rkc", m)  # RGCL reports its head and RKC; RKC is what it serves
        return f"{r.get('variant') or r.get('model') or stage[6:]}: val macro-F1 {_num(m.get('macro_f1'))} on {m.get('n', '-')} items"
    if stage == "evaluate":
        h = r.get("holdout", {})
        fams = ", ".join(f"{f} macro-F1 {_num(v.get('holdout', {}).get('macro_f1'))}" for f, v in r.get("families", {}).items())
        return f"holdout {h.get('items', 0)} items: {fams}"
    if stage == "gate":
        return ", ".join(f"{f} {d.get('status')} -> {d.get('action')}"
                         + (f" (champion v{d['champion_after']})" if d.get("champion_after") else "")
                         for f, d in r.get("families", {}).items())
    return ""


def summary_rows(ran: dict[str, dict]) -> list[dict]:
    """One row per stage of this cycle (run or skipped by DVC): stage, how, status, seconds, figures."""
    return [{"stage": name, "how": run["how"], "status": run["status"], "seconds": run["seconds"],
             "figures": _figures(name, run.get("report") or {})}
            for name, run in ran.items() if isinstance(run, dict) and "how" in run]
