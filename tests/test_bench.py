"""`stitchlab bench --quick` runs end to end and writes every promised key (no timing checks)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_quick_bench_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "--quick", "--out", out, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "batched K=8" in proc.stdout and "x floor" in proc.stdout
    r = json.loads(out.read_text())
    assert r["peak_gflops"] > 0
    for key in ("seconds_per_epoch", "samples_per_s", "achieved_gflops", "floor_ratio"):
        assert r["single"][key] > 0, key
        for entry in r["batched"]:
            assert entry[key] > 0, (entry["k"], key)
    assert [e["k"] for e in r["batched"]] == [2, 4, 8]
    assert r["conventional"]["seconds_per_epoch"] > 0 and r["conventional"]["speedup"] > 0
    assert r["run"]["wall_seconds"] > 0 and r["run"]["peak_rss_mb"] > 0
    assert set(r["run"]["test_accuracy"]) == {"A", "B"}
    for key in ("cores", "threads", "torch"):
        assert key in r["machine"], key
