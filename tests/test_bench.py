"""The benchmark script at a tiny size, so that it cannot rot: every step runs and the references agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_JVM

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_bench_smoke(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    pytest.importorskip("sklearn")
    cmd = [sys.executable, str(REPO / "scripts" / "bench.py"), "--customers", "300", "--repeat", "1",
           "--iterations", "5", "--driver-memory", "2g", "--data-dir", str(tmp_path),
           "--steps", "generate,ingest,duckdb_ingest,features,duckdb,check,kmeans",
           # its Spark processes run as the test session's JVM does (tests/conftest.py): C1 only, serial collector
           "--set", f"spark.conf.spark.driver.extraJavaOptions={SMALL_JVM}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results-300c.json").read_text())
    assert result["sets"] == [f"spark.conf.spark.driver.extraJavaOptions={SMALL_JVM}"]
    assert result["agreement"]["agree"], result["agreement"]["problems"]
    assert result["agreement"]["columns_compared"] >= 30
    assert result["agreement"]["rows"] > 250
    ingest = result["ingest_agreement"]
    assert ingest["agree"], ingest["problems"]
    steps = result["steps"]
    assert ingest["clean_rows"] + ingest["quarantined"] + ingest["duplicates"] == result["lines"]
    assert ingest["clean_rows"] > 10_000 and "clean rows (multiset)" in ingest["compared"]
    assert result["ingest_vs_duckdb"] > 0 and result["ingest_vs_features"] > 0
    for step in ("ingest", "duckdb_ingest", "features", "duckdb_features"):
        assert steps[step]["peak_rss_gib"] > 0
    # custseg's processes ran at the log level a user has (WARN), and the JVM printed no warning
    warned = {step: steps[step]["jvm_warnings"] for step in ("ingest", "features")}
    assert warned == {"ingest": [], "features": []}, warned
    assert steps["features"]["median_seconds"] > 0 and result["features_vs_duckdb"] > 0
    assert steps["sklearn"]["rows"] == steps["mllib"]["rows"] == result["agreement"]["rows"]
    assert set(result["mllib_vs_sklearn"]) >= {"kmeans_random_row", "kmeans_random_block", "bisecting_kmeans"}
    assert "| custseg features (median) |" in out.stdout


def test_tree_memory_counts_a_forked_child_once() -> None:
    """A child that forked and has not exec'd maps its parent's pages: counting them again doubled the peak."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    code = ("import os, time\nx = bytearray(300 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
            "pid = os.fork()\nif pid: print('ready', flush=True)\ntime.sleep(30)\n"
            "if pid: os.kill(pid, 9)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        private, total = bench.tree_rss(proc.pid)
        assert len(bench._children().get(proc.pid, [])) == 1  # the forked child is in the tree
        assert 300 * 2**20 <= private < 450 * 2**20, private / 2**20  # once, not twice (600+ MB)
        assert total >= private
    finally:
        proc.kill()
        proc.wait()
