"""Throughput and latency of `POST /api/score` through the running service, at batch 1 and batch 32.

A demo project (the `make demo` corpus, the offline encoder, the default params) goes through one whole
cycle (stages called directly), so cmc and rgcl champions serve; then `mmd app` runs in its own process
(uvicorn) and this process posts to it over HTTP with one keep-alive connection, one request at a time.
Each item is a demo meme (its text and picture, as JSON with the picture in base64), made unique (a word
added to the text, one pixel of the picture changed) so that no request is answered from the embedding
cache: every text and picture is encoded, by each champion and for the nearest labelled items
(`app.neighbours`, 5). Latency is per request; throughput is items per second of wall time. Writes
`benchmarks/results/score.json` with the machine and the load (CPU steal) beside the figures.

    python benchmarks/bench_score.py [--project DIR] [--requests 40] [--batches 8] [--warmup 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmd.util import cpu_ticks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"


def build_project(root: Path) -> Path:
    """The demo corpus in `root`, through one whole cycle; its params file."""
    import yaml

    from mmd.config import load_settings
    from mmd.cycle import cycle_stages, run_stage
    from mmd.demo import generate

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    settings = load_settings(root / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    for stage in cycle_stages(settings):
        t = time.perf_counter()
        run = run_stage(settings, stage.name, use_dvc=False)
        print(f"  {stage.name:<11} {time.perf_counter() - t:6.1f}s  {run.row()['figures']}", flush=True)
    assert yaml.safe_load((root / "params.yaml").read_text())["embed"]["backend"] == "offline"
    return root / "params.yaml"


def payloads(settings, n: int) -> list[dict]:
    """n unique meme items (text + picture in base64), none of them in the embedding cache."""
    from PIL import Image

    from mmd.items import ITEM_SCHEMA, read_table

    memes = [r for r in read_table(settings.layout.items, ITEM_SCHEMA).to_pylist() if r["kind"] == "meme"
             and r["image_path"]]
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        meme = memes[k % len(memes)]
        with Image.open(settings.data_dir / meme["image_path"]) as img:
            img = img.convert("RGB")
        img.putpixel((int(rng.integers(img.width)), int(rng.integers(img.height))), tuple(int(x) for x in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append({"text": f"{meme['text']} bench{k}", "image_base64": base64.b64encode(buf.getvalue()).decode()})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(params: Path, port: int, log: Path) -> subprocess.Popen:
    import requests

    env = dict(os.environ, MMD_APP_TOKENS=f"bench:{TOKEN}", MMD_APP_SECRET="bench", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mmd")), "app", "--params", str(params), "--port",
                             str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2).ok:
                return proc
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError("the app did not start")


def run(session, url: str, items: list[dict], batch: int, warmup: int) -> dict:
    """Post `items` in requests of `batch`; the first `warmup` requests (model loads) are not counted."""
    chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
    latencies = []
    t0, ticks0 = None, None
    for n, chunk in enumerate(chunks):
        if n == warmup:
            t0, ticks0 = time.perf_counter(), cpu_ticks()
        body = {"items": chunk} if batch > 1 else chunk[0]
        start = time.perf_counter()
        r = session.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600)
        elapsed = time.perf_counter() - start
        r.raise_for_status()
        got = r.json()["results"]
        assert len(got) == len(chunk) and all(x["scores"]["cmc"]["score"] is not None and x["neighbours"] for x in got)
        if n >= warmup:
            latencies.append(elapsed)
    wall = time.perf_counter() - t0
    ticks1 = cpu_ticks()
    counted = len(latencies) * batch
    steal = None
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        steal = round((ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1]), 4)
    lat = np.array(latencies)
    return {"batch": batch, "requests": len(latencies), "items": counted, "wall_s": round(wall, 3),
            "items_per_s": round(counted / wall, 2), "requests_per_s": round(len(latencies) / wall, 3),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1000, 1),
                           "p95": round(float(np.percentile(lat, 95)) * 1000, 1),
                           "mean": round(float(lat.mean()) * 1000, 1)},
            "per_item_ms_p50": round(float(np.percentile(lat, 50)) * 1000 / batch, 1), "cpu_steal_share": steal}


def main() -> None:
    import requests

    from mmd.config import load_settings

    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--project", type=Path, help="a project whose cycle has run, or a folder to make one in and "
                                                  "keep (default: a fresh demo project in a temporary folder)")
    cli.add_argument("--requests", type=int, default=40, help="batch-1 requests counted")
    cli.add_argument("--batches", type=int, default=8, help="batch-32 requests counted")
    cli.add_argument("--warmup", type=int, default=3)
    cli.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "score.json")
    args = cli.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmd-bench-score-") as tmp:
        t = time.perf_counter()
        if args.project and (args.project / "reports" / "review.json").is_file():
            params = args.project / "params.yaml"          # a project whose cycle has run: reused
        else:
            params = build_project(args.project or Path(tmp) / "project")
        built = time.perf_counter() - t
        settings = load_settings(params)
        port = free_port()
        proc = start_app(params, port, Path(tmp) / "app.log")
        try:
            url = f"http://127.0.0.1:{port}/api/score"
            session = requests.Session()
            one = run(session, url, payloads(settings, args.requests + args.warmup), 1, args.warmup)
            print(f"batch 1:  {one}", flush=True)
            many = run(session, url, payloads(settings, 32 * (args.batches + args.warmup)), 32, args.warmup)
            print(f"batch 32: {many}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "what": "POST /api/score through `mmd app` (uvicorn, its own process), one keep-alive connection, one "
                "request at a time; demo memes made unique (no embedding-cache hits); cmc + rgcl champions, "
                f"{settings.params.app.neighbours} nearest labelled items per item",
        "encoder": settings.params.embed.backend, "project_built_s": round(built, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "batch_1": one, "batch_32": many,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
