"""Smoke test of benchmarks/bench_mining.py at toy sizes: both modes (whole and sampled) run and agree, and the
default path is timed against the bare search whole and sampled."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_mining", REPO / "benchmarks" / "bench_mining.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_mining_smoke(tmp_path: Path) -> None:
    bench = _load()
    out = tmp_path / "mining.json"
    # 200 <= sample: whole; 500 > sample with a zero budget: sampled and extrapolated
    assert bench.main(["--sizes", "200,500", "--sample", "200", "--dim", "16", "--epochs", "2",
                       "--whole-budget", "0", "--diag-queries", "50", "--exact-whole-max", "300", "--exact-sample", "100",
                       "--work", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    small, large = report["results"]
    assert small["searches"] == "whole"
    assert large["searches"] == "measured on 200 of 500 queries, extrapolated"
    assert large["sampled_reference_equals_mine_exact"] is True
    for row in (small, large):
        assert len(row["epochs"]) == 2
        for epoch in row["epochs"]:
            assert epoch["agreement"]["both_equal"] == 1.0
            assert epoch["store_epoch_s"] > 0 and epoch["exact_epoch_s"] > 0
            assert epoch["ratio_store_over_exact"] > 0
        assert row["epochs"][0]["positive_queries"] == (row["n"] if row is small else 200)
    assert set(report["summary"]) == set(report["default_vs_bare"]) == {"200", "500"}
    assert small["default_vs_bare"]["rows"] == "whole"
    assert large["default_vs_bare"]["rows"] == "measured on 100 of 500 query rows, extrapolated"
    for row in (small, large):
        found = row["default_vs_bare"]
        assert len(found["epochs"]) == 2 and found["ratio"] > 0 and found["target_ratio"] == 1.2
        for epoch in found["epochs"]:
            assert epoch["default_epoch_s"] > 0 and epoch["bare_epoch_s"] > 0
        if row is large:  # extrapolated from the measured rows: more than was measured
            assert all(e["bare_epoch_s"] > e["bare_measured_s"] and "default_setup_s" in e for e in found["epochs"])
    assert not list(tmp_path.glob("mining-*")), "scratch stores are removed"
