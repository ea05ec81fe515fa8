"""Start-up: what a command costs before it does anything, before and after commands imported only what they use.

Each command runs in a fresh process, 5 times, median wall time: `mmd --help`, a config error (an unknown
key: it must fail fast), `mmd status` on an empty project, and the fixed cost of a DVC stage's process
(`mmd stage index` / before: `mmd index` on a project whose store is in sync: the import plus a count).
"Before" runs the code of a git revision (default 07d74c9, the last commit before the redesign) from a
`git archive` under the same Python; "after" this checkout; `--also REV` measures another revision the same
way as "after" (e.g. the commit a change started from), in the same run. Writes benchmarks/results/startup.json.

    python benchmarks/bench_startup.py [--before REV] [--also REV] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _time(cmd: list[str], cwd: Path, code_root: Path, repeats: int, ok: tuple[int, ...] = (0,)) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_root), HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}


def measure(code_root: Path, project: Path, repeats: int, stage_cmd: list[str], params: str) -> dict:
    py = sys.executable
    cli = [py, "-c", "import sys; sys.argv[0] = 'mmd'; from mmd.cli import main; main()"]
    return {
        "help": _time(cli + ["--help"], project, code_root, repeats),
        "config_error": _time(cli + ["status", "--params", "bad.yaml"], project, code_root, repeats, ok=(2,)),
        "status": _time(cli + ["status", "--params", params], project, code_root, repeats),
        "dvc_stage_process": _time(cli + stage_cmd + ["--params", params], project, code_root, repeats),
    }


def project(folder: Path) -> Path:
    """A folder with the demo params, a small demo inbox ingested, validated, embedded and indexed."""
    folder.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"].update(memes=8, claims=6, posts=6)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "bad.yaml").write_text("ingest: {bogus: 1}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    for args in (["demo"], ["ingest", "-q"], ["validate"], ["embed", "-q"], ["index"]):
        subprocess.run([sys.executable, "-m", "mmd.cli", *args], cwd=folder, env=env, check=True, capture_output=True)
    return folder


def _checkout(rev: str, folder: Path) -> None:
    folder.mkdir()
    archive = subprocess.run(["git", "archive", rev, "mmd", "flows"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)


def _params_of(rev: str, path: Path) -> None:
    params = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=ROOT, check=True,
                                           capture_output=True, text=True).stdout)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="07d74c9")
    parser.add_argument("--also", default=None, help="another revision, measured like this checkout")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        old = work / "before"
        _checkout(args.before, old)
        # the project is made once, by this checkout; the old code reads the same files with its own params
        proj = project(work / "project")
        _params_of(args.before, proj / "params-before.yaml")
        if args.also:
            _checkout(args.also, work / "also")
            _params_of(args.also, proj / "params-also.yaml")
        load0 = os.getloadavg()[0]
        before = measure(old, proj, args.repeats, ["index"], "params-before.yaml")
        also = measure(work / "also", proj, args.repeats, ["stage", "index"], "params-also.yaml") if args.also else None
        after = measure(ROOT, proj, args.repeats, ["stage", "index"], "params.yaml")
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = {k: round(after[k]["median_s"] / before[k]["median_s"], 3) for k in before}
    report = {"benchmark": "start-up of mmd commands, before and after importing only what a command uses",
              "before": {"revision": args.before, **before}, "after": after, "after_over_before": ratio,
              **({"also": {"revision": args.also, **also}} if also else {}),
              "repeats": args.repeats,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_before": load0, "loadavg_after": load1}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"before": before, "also": also, "after": after, "after_over_before": ratio}, indent=2))


if __name__ == "__main__":
    main()
