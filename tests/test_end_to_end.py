"""The main job on real MNIST (a subset, 2 epochs), through the library and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from stitchlab.checkpoints import load_checkpoint
from stitchlab.results import SCHEMA, read_results


@pytest.mark.slow
def test_tiny_run_trains_two_good_models_whose_splices_collapse(tiny_run):
    r = tiny_run.results
    acc = r["splice"]["accuracy"]
    assert [m["name"] for m in r["models"]] == ["A", "B"]
    assert acc[0][0] > 0.90 and acc[1][1] > 0.90, acc
    assert acc[0][1] < 0.30 and acc[1][0] < 0.30, acc
    # The diagonal of the table is each model's own accuracy from training.
    for i, m in enumerate(r["models"]):
        assert acc[i][i] == pytest.approx(m["test_accuracy"], abs=1e-6)
        assert len(m["history"]) == 3 and 0 < m["test_loss"] < 1


@pytest.mark.slow
def test_run_directory_holds_everything_promised(tiny_run):
    d = tiny_run.run_dir
    for name in ("config.toml", "results.json", "log.txt", "models/A.safetensors",
                 "models/B.safetensors"):
        assert (d / name).is_file(), name
    r = read_results(d / "results.json")
    assert r["schema"] == SCHEMA
    for key in ("config", "environment", "models", "splice", "latent", "timings"):
        assert key in r, key
    lat = r["latent"]["models"]["A"]
    assert len(lat["mean"]) == 32 and lat["dead_units"] >= 0
    assert lat["centroid_distance_mean"] > 0
    pair = r["latent"]["pairs"][0]
    assert -1 <= pair["mean_cosine"] <= 1 and pair["mean_l2"] > 0
    _, meta = load_checkpoint(d / "models/B.safetensors")
    assert meta["seed"] == 123 and meta["dataset"] == "mnist"
    assert meta["test_accuracy"] == pytest.approx(r["models"][1]["test_accuracy"])


@pytest.mark.slow
def test_cli_splice_rebuilds_the_table_from_checkpoints(tiny_run):
    before = json.loads((tiny_run.run_dir / "results.json").read_text())["splice"]
    proc = run_cli("splice", str(tiny_run.run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "A -> B" in proc.stdout
    after = json.loads((tiny_run.run_dir / "results.json").read_text())["splice"]
    assert after["accuracy"] == before["accuracy"]  # checkpoints alone give the same numbers


@pytest.mark.slow
def test_cli_run_prints_summary(tmp_path):
    out = tmp_path / "run"
    small = Path(__file__).parent / "small_align.toml"
    proc = run_cli("run", "--config", small, "--epochs", "1", "--train-samples", "3000",
                   "--test-samples", "1000",
                   "--seeds", "1", "2", "3", "--out", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "C -> A" in proc.stdout and f"run directory: {out}" in proc.stdout
    assert proc.stdout.strip().endswith(f"report: {out / 'report.html'}")
    assert "epoch   1/1" in proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert len(r["splice"]["accuracy"]) == 3


@pytest.mark.parametrize("args, message", [
    (["run", "--epochs", "0"], "'epochs' must be positive"),
    (["run", "--seeds", "1", "1"], "'seeds' repeats 1"),
    (["run", "--dataset", "cifar"], "invalid choice"),
    (["run", "--config", "absent.toml"], "config file not found"),
    (["splice", "no-such-run"], "no such run directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    proc = run_cli("run", "--out", str(target), "--epochs", "1")
    assert proc.returncode == 2 and "is a file" in proc.stderr
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_run_measures_similarity_and_cli_analyze_recomputes_it(tiny_run):
    sim = tiny_run.results["similarity"]
    assert sim["models"] == ["A", "B"]
    for name in ("linear_cka", "debiased_cka", "procrustes_distance", "mutual_knn", "svcca"):
        m = sim["values"][name]
        assert m[0][1] == pytest.approx(m[1][0]), name  # symmetric measures
    assert sim["values"]["linear_cka"][0][0] == pytest.approx(1.0)
    # The splice collapses, yet the two spaces are far from unrelated.
    assert sim["values"]["linear_cka"][0][1] > 0.5
    assert "linear_cka" in sim["splice_correlation"]
    assert tiny_run.results["latent"]["models"]["A"]["participation_ratio"] > 1
    proc = run_cli("analyze", tiny_run.run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "A vs B" in proc.stdout and "linear CKA" in proc.stdout


@pytest.mark.slow
def test_run_repairs_the_splice_and_records_curves_and_controls(tiny_run):
    al = tiny_run.results["alignment"]
    own_b = tiny_run.results["splice"]["accuracy"][1][1]
    raw = tiny_run.results["splice"]["accuracy"][0][1]
    procrustes = al["repaired"]["methods"]["procrustes"]
    assert raw < 0.3 and procrustes[0][1] > 0.9 and procrustes[0][1] > own_b - 0.03
    assert procrustes[0][0] == pytest.approx(tiny_run.results["splice"]["accuracy"][0][0])
    keys = {"method", "encoder", "decoder", "anchors", "accuracy_mean", "accuracy_std", "repeats"}
    assert all(keys <= set(row) for row in al["curves"])
    at_200 = [r for r in al["curves"] if r["method"] == "procrustes" and r["anchors"] == 200]
    assert {(r["encoder"], r["decoder"]) for r in at_200} == {("A", "B"), ("B", "A")}
    assert all(r["repeats"] == 2 for r in at_200)
    ctrl = al["controls"]
    assert ctrl["noise_inputs"]["procrustes"] < 0.3  # noise carries nothing to repair
    assert ctrl["flagged"] == []
