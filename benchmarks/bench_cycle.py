"""Orchestration overhead of a demo cycle: the wall time of a whole cycle minus the time inside its stages.

Three cycles on the demo corpus (the `make demo` data, offline encoder, the default params)
under one local Prefect server, in one run:

1. `direct`: a plain folder, each stage called in the flow's process. The time inside the
   stages is what `run_stage` measures around each stage function; Prefect's overhead is the
   flow's wall time minus their sum (task and flow state changes, artifacts, the e-mail and
   versioning tasks, logging).
2. `dvc`: the same corpus in a fresh git + DVC project, each stage through `dvc repro`. Every
   stage does the same work as in 1, so DVC's overhead per stage (a new process importing
   torch and the stage's libraries, hashing deps and outputs, writing dvc.lock, caching the
   outputs) is its time here minus its time in 1; plus `dvc push` to a local remote.
3. `dvc, nothing new`: the same project again, as a nightly run with no new data: DVC skips every
   stage, so this cycle is all orchestration.

The Prefect server's start is measured once and reported apart (a served deployment pays it
once; `make demo` pays it per run). Writes JSON with the machine, the load and every figure. The
figures of the file it replaces are kept under "before" (or that file's own "before", so a rerun keeps
the first baseline), with after / before ratios of the summary.

    python benchmarks/bench_cycle.py                 # the demo sizes (60 memes, 40 claims, 40 posts)
    python benchmarks/bench_cycle.py --small         # configs/small-cycle.yaml: 20 / 10 / 12 and tiny detectors
    python benchmarks/bench_cycle.py --real          # the real datasets in a project: benchmarks/bench_cycle_real.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmd.util import cpu_ticks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

def _sh(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)


def project(root: Path, small: bool, dvc: bool) -> Path:
    """A folder with the params (defaults, or the small set) and the demo inbox; with `dvc`, a deployment's
    project made by `mmd init` (git + DVC, the generated dvc.yaml, a local remote)."""
    from mmd.config import load_settings, merge_params
    from mmd.demo import generate
    from mmd.project import init_project

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if small:
        params = merge_params(params, yaml.safe_load((ROOT / "configs" / "small-cycle.yaml").read_text()))
    params["ingest"]["sources"] = [{"name": "inbox", "type": "inbox", "path": str(root / "inbox")}]
    if dvc:
        base = root.parent / f"{root.name}-from.yaml"
        base.write_text(yaml.safe_dump(params, sort_keys=False))
        init_project(root, base, str(root.parent / f"{root.name}-remote"))
    else:
        root.mkdir(parents=True)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(root / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    return root / "params.yaml"


def measure(params: Path) -> dict:
    from flows.retrain import retrain_flow
    from mmd.cycle import StageRun

    t0, ticks0 = time.perf_counter(), cpu_ticks()
    ran = retrain_flow(str(params))
    wall = time.perf_counter() - t0
    ticks1 = cpu_ticks()
    stages = {name: {"seconds": run.seconds, "how": run.how, "status": run.status, "figures": run.row()["figures"]}
              for name, run in ran.items() if isinstance(run, StageRun)}
    inside = sum(s["seconds"] for s in stages.values())
    steal = None
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        steal = round((ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1]), 4)
    embed = ran["embed"].result
    return {"wall_s": round(wall, 2), "stages_s": round(inside, 2), "overhead_s": round(wall - inside, 2),
            "stages": stages, "decisions": {f: d.action for f, d in ran["gate"].result.families.items()},
            "encoded": {"texts": embed.encoded_texts, "images": embed.encoded_images} if embed else None,
            "pushed": ran["version"].get("pushed"), "cpu_steal_share": steal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a small corpus and tiny detectors")
    parser.add_argument("--real", action="store_true", help="the real datasets (benchmarks/bench_cycle_real.py)")
    parser.add_argument("--tmp", default=None, help="folder for the temporary projects")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cycle.json")
    args = parser.parse_args()
    if args.real:
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--real"]
        from benchmarks.bench_cycle_real import main as real

        return real()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-cycle-", dir=args.tmp))
    try:
        direct_params = project(work / "direct", args.small, dvc=False)
        dvc_params = project(work / "dvc", args.small, dvc=True)
        t0 = time.perf_counter()
        # a temporary local server on SQLite that drains this process's log and event workers before it stops
        with prefect_test_harness(server_startup_timeout=120):
            server_start = time.perf_counter() - t0
            with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "WARNING"}):
                print("cycle 1 of 3: stages called directly", flush=True)
                direct = measure(direct_params)
                print(f"  {direct['wall_s']} s, {direct['stages_s']} s inside stages", flush=True)
                print("cycle 2 of 3: stages through dvc repro", flush=True)
                dvc = measure(dvc_params)
                print(f"  {dvc['wall_s']} s", flush=True)
                print("cycle 3 of 3: through dvc repro again, nothing new", flush=True)
                noop = measure(dvc_params)
                print(f"  {noop['wall_s']} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    before = None
    if args.out.is_file():  # the earlier run's figures: the baseline this one is compared with
        earlier = json.loads(args.out.read_text())
        before = earlier.get("before") or {k: earlier[k] for k in ("machine", "summary", "per_stage") if k in earlier}
    inside = direct["stages_s"]
    per_stage = {name: {"direct_s": direct["stages"][name]["seconds"], "dvc_s": s["seconds"],
                        "dvc_overhead_s": round(s["seconds"] - direct["stages"][name]["seconds"], 2),
                        "skipped_when_nothing_new": noop["stages"][name]["status"] == "skipped",
                        "nothing_new_s": noop["stages"][name]["seconds"]}
                 for name, s in dvc["stages"].items()}
    report = {
        "benchmark": "orchestration overhead of a demo cycle (wall time minus the time inside the stages)",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "settings": {"corpus": "small" if args.small else "demo defaults (60 memes, 40 claims, 40 posts)",
                     "encoder": "offline (MiniLM + EfficientNet-Lite0)", "prefect_server": "local, SQLite"},
        "prefect_server_start_s": round(server_start, 2),
        "direct": direct,
        "dvc": dvc,
        "dvc_nothing_new": noop,
        "per_stage": per_stage,
        "summary": {
            "time_inside_stages_s": inside,
            "prefect_overhead_s": direct["overhead_s"],
            "prefect_overhead_share_of_cycle": round(direct["overhead_s"] / direct["wall_s"], 4),
            "prefect_plus_dvc_overhead_s": round(dvc["wall_s"] - inside, 2),
            "prefect_plus_dvc_overhead_share_of_cycle": round((dvc["wall_s"] - inside) / dvc["wall_s"], 4),
            "dvc_cycle_over_direct_cycle": round(dvc["wall_s"] / direct["wall_s"], 3),
            "nothing_new_cycle_s": noop["wall_s"],
            "nothing_new_cycle_over_full_cycle": round(noop["wall_s"] / dvc["wall_s"], 3),
        },
        "wall_s": round(time.time() - started, 1),
    }
    if before:
        report["before"] = before
        report["after_over_before"] = {k: round(v / before["summary"][k], 3) for k, v in report["summary"].items()
                                       if before["summary"].get(k)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
