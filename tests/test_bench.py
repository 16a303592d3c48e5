"""The benchmark script at a tiny size, so that it cannot rot: every step runs and the references agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_bench_smoke(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    pytest.importorskip("sklearn")
    cmd = [sys.executable, str(REPO / "scripts" / "bench.py"), "--customers", "300", "--repeat", "1",
           "--iterations", "5", "--driver-memory", "2g", "--data-dir", str(tmp_path),
           "--steps", "generate,ingest,features,duckdb,check,kmeans"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "results-300c.json").read_text())
    assert result["agreement"]["agree"], result["agreement"]["problems"]
    assert result["agreement"]["columns_compared"] >= 30
    assert result["agreement"]["rows"] > 250
    steps = result["steps"]
    for step in ("ingest", "features", "duckdb_features"):
        assert steps[step]["peak_rss_gib"] > 0
    assert steps["features"]["median_seconds"] > 0 and result["features_vs_duckdb"] > 0
    assert steps["sklearn"]["rows"] == steps["mllib"]["rows"] == result["agreement"]["rows"]
    assert set(result["mllib_vs_sklearn"]) >= {"kmeans_random_row", "kmeans_random_block", "bisecting_kmeans"}
    assert "| custseg features (median) |" in out.stdout
