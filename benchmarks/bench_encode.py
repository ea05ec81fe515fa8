"""Encoding throughput: each runtime's bare forward passes, and the whole embed pipeline on the default.

Bare: the offline encoder's text and image forwards at the pipeline's batch size on inputs made
beforehand (token ids; decoded, resized uint8 pixels), under each runtime:
- `torch fp32`: the torch path as `embed.runtime: torch` runs it (inference_mode, BN folded, channels-last,
  4 images a forward);
- `torch no_grad`: the same under no_grad instead of inference_mode;
- `torch channels-first`: the image tower in the default NCHW layout (images only);
- `torch bf16 autocast`: torch fp32 under CPU autocast to bfloat16 (where the CPU has it);
- `torch.compile` (only with --compile: compiling takes about a minute per tower here);
- `onnxruntime`: the towers exported once (mmd.encoders.onnx) and run by onnxruntime's CPU provider, as
  `embed.runtime: onnx` runs them (4 images a run); `onnxruntime batch 32`: one run per batch of 32 images
  (images only).
Every variant's vectors are compared with torch fp32's (min cosine, max |diff| after L2 normalisation);
only a variant within cosine >= 0.9999 and |diff| <= 1e-4 counts as correct and may be the best.

Pipeline: `embed_items` on N HarMeme items from image files on disk with a cold cache (hashing,
tokenising, decoding + resizing images, the forwards, writing the cache), with the encoder `embed.runtime`
gives by default, for texts only (the items without their images), images only (every text empty: one
text encoded) and both together. The figure is pipeline / best correct bare (items per second; target >=
0.85); a second pipeline run on unchanged items must encode nothing.

    python benchmarks/bench_encode.py [--n 256] [--batch-size 32] [--workers 1] [--threads N] [--compile]

On CPU, embed_items caps the DataLoader workers at the cores the encoder's threads leave free
(see mmd.encoders.base.loader_workers); where that cap bites, the requested count is also run forced
onto the shared cores ("<n> sharing cores") to show what it would cost.

All timed runs alternate within each repeat (the variants' order rotates between repeats); rates are
medians over the repeats and each ratio is the median of the repeats' ratios, so another process briefly
using the cores skews neither side. The 1-minute load average before and after is recorded, and on Linux
the share of CPU time the hypervisor gave to other guests (steal). Writes benchmarks/results/encode.json
(or --out). Skips (exit 0, with a message) when the HarMeme copy at ../shared/datasets/harmeme is absent.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmd.config import EmbedConfig  # noqa: E402
from mmd.encoders import EmbeddingCache, build_encoder, embed_items  # noqa: E402
from mmd.encoders.base import loader_workers, one_torch_thread  # noqa: E402
from mmd.encoders.offline_models import PIXEL_MEAN, PIXEL_STD  # noqa: E402
from mmd.util import cpu_ticks, write_json  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("MMD_SHARED_DATASETS", REPO.parent / "shared" / "datasets")) / "harmeme"
COSINE_MIN, MAX_ABS_DIFF = 0.9999, 1e-4
MICRO_BATCH = 4


def load_rows(data_dir: Path, n: int) -> list[dict]:
    """The first n HarMeme train items as item rows (image hashed as ingest would have)."""
    rows = []
    with (data_dir / "train.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            rel = f"images/{rec['image']}"
            sha = hashlib.sha256((data_dir / rel).read_bytes()).hexdigest()
            rows.append({"id": rec["id"], "text": rec["text"], "image_path": rel, "image_sha256": sha})
            if len(rows) == n:
                break
    return rows


def _unit(x) -> np.ndarray:
    x = np.asarray(torch.as_tensor(x).float().numpy(), np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def accuracy(got: np.ndarray, reference: np.ndarray) -> dict:
    got, reference = _unit(got), _unit(reference)
    cos = float((got * reference).sum(1).min())
    diff = float(np.abs(got - reference).max())
    return {"min_cosine": round(cos, 7), "max_abs_diff": float(f"{diff:.3g}"),
            "correct": cos >= COSINE_MIN and diff <= MAX_ABS_DIFF}


def micro(fn: Callable[[torch.Tensor], np.ndarray], step: int = MICRO_BATCH) -> Callable[[torch.Tensor], np.ndarray]:
    return lambda batch: np.concatenate([fn(batch[k : k + step]) for k in range(0, len(batch), step)])


def towers(text_model, image_model, mode) -> tuple[Callable, Callable]:
    """The two towers called directly under a grad mode (torch.no_grad, torch.inference_mode)."""
    def text(batch):
        with mode():
            return text_model(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy()

    def image(batch):
        with mode():
            return image_model(batch).numpy()

    return text, micro(image)


def data_args(ap, out_name: str) -> None:
    """--data (the HarMeme copy) and --out (benchmarks/results/OUT_NAME), shared by the encoder benchmarks."""
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / out_name)


def data_missing(args) -> bool:
    """Says so, and True, when the HarMeme copy is absent (the benchmark then skips)."""
    if (args.data / "train.jsonl").is_file():
        return False
    print(f"skipped: HarMeme not found at {args.data} (set MMD_SHARED_DATASETS)")
    return True


def variants(torch_enc, onnx_enc, compile_: bool) -> dict[str, tuple[Callable | None, Callable | None]]:
    """name -> (text batch -> vectors, uint8 image batch -> vectors); None where a variant is of one tower."""
    out = {"torch fp32": (torch_enc.encode_tokens, torch_enc.encode_image_tensors)}
    text_model, image_model = torch_enc.text_model, torch_enc.image_model

    out["torch no_grad"] = towers(text_model, image_model, torch.no_grad)
    net_nchw = copy.deepcopy(image_model.net).to(memory_format=torch.contiguous_format)

    def channels_first(batch):
        with torch.inference_mode():
            x = (batch.float() - PIXEL_MEAN) / PIXEL_STD
            return torch.nn.functional.normalize(net_nchw.extract_features(x).mean(dim=(2, 3)), dim=-1).numpy()

    out["torch channels-first"] = (None, micro(channels_first))
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        def autocast(fn):
            def run(batch):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return fn(batch)
            return run

        out["torch bf16 autocast"] = (autocast(torch_enc.encode_tokens), autocast(torch_enc.encode_image_tensors))
    if compile_:
        out["torch.compile"] = towers(torch.compile(text_model, dynamic=True), torch.compile(image_model, dynamic=False),
                                      torch.inference_mode)
    out["onnxruntime"] = (onnx_enc.encode_tokens, onnx_enc.encode_image_tensors)
    out["onnxruntime batch 32"] = (None, lambda batch: onnx_enc._image_onnx({"pixels": batch.numpy()}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=EmbedConfig().batch_size)
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[EmbedConfig().num_workers],
        help="requested DataLoader workers (embed.num_workers); several values are compared, the "
        "first is the headline figure",
    )
    ap.add_argument("--threads", type=int, default=None, help="compute threads (default: the cores given)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each, interleaved")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (about a minute per tower)")
    data_args(ap, "encode.json")
    args = ap.parse_args(argv)
    if data_missing(args):
        return 0

    rows = load_rows(args.data, args.n)
    default = build_encoder(EmbedConfig(backend="offline", threads=args.threads, device="cpu"), REPO)
    torch_enc = build_encoder(EmbedConfig(backend="offline", threads=args.threads, device="cpu", runtime="torch"), REPO)
    onnx_enc = build_encoder(EmbedConfig(backend="offline", threads=args.threads, device="cpu", runtime="onnx"), REPO)
    bs = args.batch_size

    # Bare inputs, batched exactly as the pipeline batches them: distinct texts longest
    # first, distinct images in item order, decoded and resized to uint8.
    texts = sorted(dict.fromkeys(r["text"] for r in rows), key=len, reverse=True)
    text_batches = [default.tokenize(texts[k : k + bs]) for k in range(0, len(texts), bs)]
    first_path = {r["image_sha256"]: r["image_path"] for r in reversed(rows)}
    paths = [args.data / first_path[sha] for sha in dict.fromkeys(r["image_sha256"] for r in rows)]
    start = time.perf_counter()
    with one_torch_thread():  # as embed_items decodes
        pixels = [default.image_transform(default.load_image(p)) for p in paths]
    preprocess_ms = (time.perf_counter() - start) / len(paths) * 1000  # decode + resize + crop, one thread
    image_batches = [torch.stack(pixels[k : k + bs]) for k in range(0, len(pixels), bs)]

    started = time.perf_counter()
    runs = variants(torch_enc, onnx_enc, args.compile)
    # first calls export or load graphs, compile, allocate: one-off costs of a process, kept out of the timings;
    # their outputs are what the accuracy is judged on
    outputs = {name: {mode: np.concatenate([fn(b) for b in batches])
                      for mode, fn, batches in (("texts", t, text_batches), ("images", i, image_batches)) if fn}
               for name, (t, i) in runs.items()}
    setup_s = round(time.perf_counter() - started, 1)
    reference = outputs["torch fp32"]
    checks = {name: {mode: accuracy(v, reference[mode]) for mode, v in out.items()} for name, out in outputs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        embed_items(rows[:4], default, EmbeddingCache.for_encoder(Path(tmp), default), args.data, batch_size=bs)

    modes = {
        "together": rows,
        "texts": [dict(r, image_path=None, image_sha256=None) for r in rows],
        "images": [dict(r, text="") for r in rows],
    }

    def pipeline(items: list[dict], workers: int, share_cores: bool) -> tuple[float, int, dict]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache.for_encoder(Path(tmp), default)
            start = time.perf_counter()
            first = embed_items(items, default, cache, args.data, batch_size=bs, num_workers=workers,
                                share_cores=share_cores)
            seconds = time.perf_counter() - start
            assert not first.missing_images, first.summary()
            start = time.perf_counter()
            again = embed_items(items, default, EmbeddingCache.for_encoder(Path(tmp), default), args.data,
                                batch_size=bs, num_workers=workers)
            rerun = {"seconds": round(time.perf_counter() - start, 3), "encoded_texts": again.encoded_texts,
                     "encoded_images": again.encoded_images}
        return seconds, first.loader_workers, rerun

    # the pipeline runs: each mode with the first requested worker count; for "together" every requested
    # count as embed_items runs it and, where the cap bites, forced onto shared cores to show why
    pipes = [(mode, args.workers[0], False) for mode in modes]
    pipes += [("together", w, False) for w in args.workers[1:]]
    pipes += [("together", w, True) for w in args.workers if w > loader_workers(default, w)]
    names = list(runs)
    load_before = os.getloadavg()[0]  # a shared machine's other work shows up here
    ticks_before = cpu_ticks()
    bare_s: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    pipe_s: dict[tuple, list[float]] = {p: [] for p in pipes}
    used: dict[tuple, int] = {}
    reruns: dict[tuple, dict] = {}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            for mode, fn, batches in zip(("texts", "images"), runs[name], (text_batches, image_batches)):
                if fn is None:
                    continue
                t = time.perf_counter()
                for batch in batches:
                    fn(batch)
                bare_s[name].setdefault(mode, []).append(time.perf_counter() - t)
        for p in (pipes if r % 2 == 0 else pipes[::-1]):
            seconds, used[p], reruns[p] = pipeline(modes[p[0]], p[1], p[2])
            pipe_s[p].append(seconds)
    load_after = os.getloadavg()[0]
    ticks_after = cpu_ticks()
    steal = None
    if ticks_before and ticks_after and ticks_after[1] > ticks_before[1]:
        steal = round((ticks_after[0] - ticks_before[0]) / (ticks_after[1] - ticks_before[1]), 4)

    n = len(rows)
    for name in names:  # both towers together: the texts' and the images' time of the same repeat
        if len(bare_s[name]) == 2:
            bare_s[name]["together"] = [a + b for a, b in zip(bare_s[name]["texts"], bare_s[name]["images"])]
    count = {"texts": len(texts), "images": len(paths), "together": n}
    bare = {
        name: {
            **{f"{'items' if mode == 'together' else mode}_per_s": round(count[mode] / statistics.median(times), 2)
               for mode, times in bare_s[name].items()},
            "accuracy": checks[name],
            "correct": all(c["correct"] for c in checks[name].values()),
            "seconds": {k: [round(s, 3) for s in v] for k, v in bare_s[name].items()},
        }
        for name in names
    }

    def fastest(mode: str, among: list[str]) -> str:
        return min((name for name in among if mode in bare_s[name]), key=lambda name: statistics.median(bare_s[name][mode]))

    correct = [name for name in names if bare[name]["correct"]]
    best = {mode: fastest(mode, correct) for mode in modes}
    fastest_any = {mode: fastest(mode, names) for mode in modes}

    def row(p: tuple) -> dict:
        mode = p[0]
        return {
            "workers_requested": p[1],
            "workers_used": used[p],
            "pipeline_items_per_s": round(n / statistics.median(pipe_s[p]), 2),
            "best_bare": best[mode],
            "ratio_pipeline_over_best_bare": round(statistics.median(
                b / s for b, s in zip(bare_s[best[mode]][mode], pipe_s[p])), 3),
            "ratio_pipeline_over_torch_fp32_bare": round(statistics.median(
                b / s for b, s in zip(bare_s["torch fp32"][mode], pipe_s[p])), 3),
            "pipeline_seconds": [round(s, 3) for s in pipe_s[p]],
            "second_run": reruns[p],
        }

    pipeline_rows = {mode: row((mode, args.workers[0], False)) for mode in modes}
    by_workers = {f"{w}{' sharing cores' if shared else ''}": row((mode, w, shared))
                  for mode, w, shared in pipes if mode == "together"}
    head = pipeline_rows["together"]
    result = {
        "benchmark": "encode",
        "encoder": default.identity,
        "default_runtime": default.runtimes,
        "device": "cpu",
        "items": n,
        "distinct_texts": len(texts),
        "distinct_images": len(paths),
        "batch_size": bs,
        "workers": args.workers[0],
        "compute_threads": default.threads,
        "cpu_cores": os.cpu_count(),
        "tolerance": {"min_cosine": COSINE_MIN, "max_abs_diff": MAX_ABS_DIFF, "reference": "torch fp32"},
        "bare": bare,
        "best_correct_bare": best,
        "fastest_bare_any_accuracy": fastest_any,
        "pipeline": pipeline_rows,
        "pipeline_items_per_s": head["pipeline_items_per_s"],
        "bare_forward_items_per_s": bare[best["together"]]["items_per_s"],
        "ratio_pipeline_over_bare": head["ratio_pipeline_over_best_bare"],
        "target_ratio": 0.85,
        "speedup_best_bare_over_torch_fp32": {
            mode: round(statistics.median(t / b for t, b in zip(bare_s["torch fp32"][mode], bare_s[best[mode]][mode])), 2)
            for mode in modes
        },
        "second_run_encoded": head["second_run"]["encoded_texts"] + head["second_run"]["encoded_images"],
        "second_run_seconds": head["second_run"]["seconds"],
        "by_workers": by_workers,
        "preprocess_ms_per_image": round(preprocess_ms, 2),
        "setup_seconds_export_or_load_and_first_calls": setup_s,
        "repeats": args.repeats,
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "cpu_steal_share": steal,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "bare"}, indent=2))
    print(json.dumps({name: {k: v for k, v in b.items() if k != "seconds"} for name, b in bare.items()}, indent=2))
    return 0


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
