"""onnxruntime for an encoder's towers: export once per weights, keep the file in a user cache, run it.

On this project's CPUs onnxruntime computes the offline towers 2-5x faster than eager torch with the same
fp32 vectors (benchmarks/bench_encode.py), and a process that finds the exported file cached needs neither
the torch model nor transformers. The file is keyed by what decides the graph: the weights' digest, the
encoder's preprocessing and export versions and the exporter (torch) version, so new weights or a new
graph are a new file, never a stale one. It lives outside the project (the embedding cache is a DVC
output; 100 MB of graphs have no business there): `$MMD_ONNX_CACHE`, else `$XDG_CACHE_HOME/mmd/onnx`,
else `~/.cache/mmd/onnx`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmd.util import atomic_path, file_lock

CACHE_ENV = "MMD_ONNX_CACHE"


def available() -> bool:
    """Whether onnxruntime is installed (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    """Where exported graphs are kept; a temporary folder where the user cache cannot be written."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        folder = Path(configured)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folder = Path(base) / "mmd" / "onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"mmd-onnx-{os.getuid()}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def digest(files: Sequence[Path], *extra: str) -> str:
    """sha256 over the files' bytes and the extra strings (versions that change the graph)."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        h.update(b"\0")
    for part in extra:
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def cached_export(name: str, key: str, export: Callable[[Path], None]) -> Path:
    """The graph file `<name>-<key>.onnx` in the cache, exported by `export(path)` when absent.

    Processes exporting at once (two stages, two tests) take turns on a lock, and the second finds the
    first's file; a half-written file never gets its final name."""
    folder = cache_dir()
    path = folder / f"{name}-{key[:24]}.onnx"
    if path.is_file():
        return path
    with file_lock(folder / f".{name}.lock"):
        if not path.is_file():
            # once per weights and machine, 5-15 s: said, so a first run's pause is not a mystery
            print(f"exporting the {name} tower for onnxruntime to {path} (once)", file=sys.stderr, flush=True)
            with atomic_path(path) as tmp:
                export(tmp)
    return path


def export_module(module, args: tuple, path: Path, input_names: Sequence[str], dynamic: dict[str, dict[int, str]]) -> None:
    """`module(*args)` -> one self-contained ONNX file at `path` (torch's dynamo exporter), with the
    named axes of each input dynamic."""
    import torch

    dims = {axis_name: torch.export.Dim(axis_name, min=1, max=4096) for axes in dynamic.values() for axis_name in axes.values()}
    shapes = tuple({axis: dims[axis_name] for axis, axis_name in dynamic.get(name, {}).items()} or None for name in input_names)
    # the exporter prints its steps and warns about how it names axes: neither is the caller's business
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=list(input_names),
                                    output_names=["vectors"], dynamic_shapes=shapes, optimize=True, verbose=False)
    program.save(str(path), external_data=False)


class OnnxTower:
    """One exported tower in an onnxruntime session on the CPU: feeds by input name -> its one output."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's pool threads otherwise spin after every run, holding the core that decodes the next
        # image batch, and other processes' cores on a shared machine (a choice, not a measured speed-up)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's concern
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: feeds[name] for name in self.input_names})[0]
