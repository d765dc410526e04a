"""Tests of stitchlab.align.experiments on two tiny MNIST models.

The models (seeds 42 and 123, 20,000 training images, 3 epochs, about 94% each) are trained
once per module. Sweeps run on a 5,000-image anchor pool and 2,000 test images to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stitchlab import align
from stitchlab.align import experiments as ex
from stitchlab.models import build_model, splice

POOL, N_TEST = 5000, 2000


# One torch and BLAS thread: on a shared 2-core machine small ops run far faster so.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def zoo(one_torch_thread):
    from stitchlab import data
    from stitchlab.training import TrainSettings, train_models

    ds = data.load("mnist")
    x, y = ds.inputs("train")[:20000], ds.labels("train")[:20000]
    xt, yt = ds.inputs("test")[:N_TEST], ds.labels("test")[:N_TEST]
    trained = train_models([42, 123], ["a", "b"], x, y, ds.inputs("test"), ds.labels("test"),
                           settings=TrainSettings(epochs=3))
    models = {m.name: m.model for m in trained}
    return {
        "models": models,
        "x": x, "y": y, "xt": xt, "yt": yt,
        "z": {n: ex.latents(m.encoder, x) for n, m in models.items()},
        "zt": {n: ex.latents(m.encoder, xt) for n, m in models.items()},
    }


def sweep(zoo, methods, counts, repeats=3, seed=0, **kw):
    a, b = zoo["models"]["a"], zoo["models"]["b"]
    return ex.anchor_sweep(zoo["z"]["a"][:POOL], zoo["z"]["b"][:POOL], zoo["y"][:POOL],
                           b.decoder, zoo["zt"]["a"], zoo["yt"], methods, counts, repeats, seed,
                           source_decoder=a.decoder, **kw)


def by_key(rows):
    return {(r["method"], r["anchors"]): r for r in rows}


# --- anchor sweep ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_rows_skips_and_all(zoo):
    methods = [*ex.CLOSED_FORM_METHODS, "zero_pad"]
    counts = [1, 5, 32, 50, 100, "all"]
    rows = sweep(zoo, methods, counts, encoder="a", decoder_name="b")
    assert [(r["method"], r["anchors"]) for r in rows] == [(m, k) for m in methods for k in counts]
    got = by_key(rows)
    assert all(r["encoder"] == "a" and r["decoder"] == "b" for r in rows)

    # Skipped rows say why and carry no numbers.
    for key, needs in [(("procrustes", 1), "at least 2 anchors"),
                       (("affine", 32), "at least 33 anchors"),
                       (("centroids", 1), "at least 2 classes")]:
        r = got[key]
        assert needs in r["skipped"] and r["repeats"] == 0 and r["accuracy_mean"] is None

    # Fitted rows: one accuracy per draw; "all" is one deterministic draw of the whole pool.
    r = got[("ridge", 5)]
    assert r["skipped"] is None and r["repeats"] == 3 and len(r["accuracies"]) == 3
    assert r["accuracy_std"] == pytest.approx(np.std(r["accuracies"], ddof=1))
    assert got[("procrustes", "all")]["repeats"] == 1
    assert got[("procrustes", "all")]["n_anchors"] == POOL
    assert got[("centroids", "all")]["n_anchors"] == POOL // 2

    # zero_pad with equal widths is the raw splice: its accuracy is decoder B on raw latents.
    raw = ex.accuracy(zoo["models"]["b"].decoder, zoo["zt"]["a"], zoo["yt"])
    assert got[("zero_pad", 5)]["accuracy_mean"] == raw < 0.2
    assert got[("zero_pad", 5)]["repeats"] == 1

    # More anchors repair more; at 100 every closed-form method but permutation is near 94%.
    assert got[("procrustes", 100)]["accuracy_mean"] > got[("procrustes", 5)]["accuracy_mean"] + 0.2
    for m in ("procrustes", "affine", "ridge", "centroids", "self_centroids"):
        assert got[(m, 100)]["accuracy_mean"] > 0.9, got[(m, 100)]


@pytest.mark.slow
def test_sweep_is_seeded_and_each_repeat_is_a_new_draw(zoo):
    first = sweep(zoo, ["procrustes"], [5], repeats=4, seed=1)
    again = sweep(zoo, ["procrustes"], [5], repeats=4, seed=1)
    other = sweep(zoo, ["procrustes"], [5], repeats=4, seed=2)
    assert first == again
    assert first[0]["accuracies"] != other[0]["accuracies"]
    assert len(set(first[0]["accuracies"])) > 1


@pytest.mark.slow
def test_sweep_accuracy_is_decoder_b_on_mapped_test_latents(zoo):
    # Rebuild the first draw at 50 anchors by hand and measure through models.splice.
    row = sweep(zoo, ["procrustes"], [50], repeats=1)[0]
    idx = ex._draw_order(POOL, 0, 50, 0)[:50]
    a, b = zoo["models"]["a"], zoo["models"]["b"]
    aligner = align.fit("procrustes", zoo["z"]["a"][idx], zoo["z"]["b"][idx])
    with torch.no_grad():
        pred = splice(a.encoder, b.decoder, aligner).eval()(zoo["xt"]).argmax(1)
    by_hand = float((pred == zoo["yt"]).float().mean())
    assert abs(row["accuracies"][0] - by_hand) <= 1 / N_TEST


def test_sweep_rejects_what_it_cannot_measure(zoo):
    with pytest.raises(align.AlignmentError, match="relative_matrix"):
        sweep(zoo, ["relative"], [10])
    with pytest.raises(ValueError, match="choose one of"):
        sweep(zoo, ["procrustez"], [10])
    with pytest.raises(align.AlignmentError, match="anchor count"):
        sweep(zoo, ["procrustes"], [0])
    b = zoo["models"]["b"]
    with pytest.raises(align.AlignmentError, match="source_decoder"):
        ex.anchor_sweep(zoo["z"]["a"][:POOL], zoo["z"]["b"][:POOL], zoo["y"][:POOL], b.decoder,
                        zoo["zt"]["a"], zoo["yt"], ["self_centroids"], [10])
    rows = sweep(zoo, ["procrustes", "centroids"], [3000, POOL + 1])
    assert "pool has 5000" in by_key(rows)[("centroids", 3000)]["skipped"]
    assert "pool has 5000" in by_key(rows)[("procrustes", POOL + 1)]["skipped"]
    assert by_key(rows)[("procrustes", 3000)]["skipped"] is None


def test_sweep_restores_module_modes(zoo):
    a, b = zoo["models"]["a"], zoo["models"]["b"]
    b.decoder.train()
    a.decoder.train()
    try:
        first = sweep(zoo, ["procrustes", "self_centroids"], [20], repeats=1)
        assert b.decoder.training and a.decoder.training
        assert first == sweep(zoo, ["procrustes", "self_centroids"], [20], repeats=1)
    finally:
        a.eval()
        b.eval()


# --- repaired matrix ---------------------------------------------------------------------------


@pytest.mark.slow
def test_repaired_matrix_diagonal_is_own_accuracy_and_repairs_off_diagonal(zoo):
    models = zoo["models"]
    m = ex.repaired_matrix({n: z[:POOL] for n, z in zoo["z"].items()}, zoo["y"][:POOL],
                           zoo["zt"], zoo["yt"], {n: mm.decoder for n, mm in models.items()},
                           "procrustes", anchors=100)
    assert len(m) == 2 and all(len(r) == 2 for r in m)
    for i, name in enumerate(["a", "b"]):
        with torch.no_grad():
            own = float((models[name](zoo["xt"]).argmax(1) == zoo["yt"]).float().mean())
        assert abs(m[i][i] - own) <= 1 / N_TEST
    assert m[0][1] > 0.9 and m[1][0] > 0.9


def test_repaired_matrix_marks_pairs_a_method_cannot_fit(zoo):
    narrow = build_model(7, latent_dim=16).eval()
    z = {"a": zoo["z"]["a"][:500], "narrow": ex.latents(narrow.encoder, zoo["x"][:500])}
    zt = {"a": zoo["zt"]["a"], "narrow": ex.latents(narrow.encoder, zoo["xt"])}
    decoders = {"a": zoo["models"]["a"].decoder, "narrow": narrow.decoder}
    m = ex.repaired_matrix(z, zoo["y"][:500], zt, zoo["yt"], decoders, "zero_pad")
    assert m[0][1] is None  # 32 -> 16 cannot be zero-padded
    assert isinstance(m[1][0], float)  # 16 -> 32 can
    with pytest.raises(align.AlignmentError, match="missing from latents_test or decoders"):
        ex.repaired_matrix(z, zoo["y"][:500], {"a": zt["a"]}, zoo["yt"], decoders, "procrustes")
    with pytest.raises(align.AlignmentError, match="use relative_matrix"):
        ex.repaired_matrix(z, zoo["y"][:500], zt, zoo["yt"], decoders, "relative")


# --- controls ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_controls_real_repairs_noise_does_not(zoo):
    a, b = zoo["models"]["a"], zoo["models"]["b"]
    methods = ["procrustes", "ridge", "centroids", "self_centroids", "stitch_layer"]
    out = ex.controls(a, b, zoo["x"], zoo["y"], zoo["xt"], zoo["yt"], methods, anchors=100)
    assert set(out) >= {"real", "untrained_encoder", "noise_inputs", "chance", "anchors"}
    assert out["real"]["procrustes"] > 0.9
    for m in methods:
        assert out["real"][m] > 0.85, (m, out)
        assert out["noise_inputs"][m] < 0.25, (m, out)
        # Random ReLU features carry some signal (about 35-40% at 100 anchors), far below real.
        # An untrained decoder predicts a single class, so self_centroids cannot fit (None).
        untrained = out["untrained_encoder"][m]
        assert untrained is None or untrained < 0.7, (m, out)
    assert out["untrained_encoder"]["self_centroids"] is None


# --- relative representations ----------------------------------------------------------------


@pytest.mark.slow
def test_relative_decoders_swap_encoders_without_a_fitted_map(zoo):
    n = 10000
    z, y = {k: v[:n] for k, v in zoo["z"].items()}, zoo["y"][:n]
    m = ex.relative_matrix(z, y, zoo["zt"], zoo["yt"], anchors=100, epochs=2)
    assert len(m) == 2 and min(m[0][0], m[1][1]) > 0.88
    assert min(m[0][1], m[1][0]) > 0.8, m

    # The same swap through models.splice: B's encoder, its own projection, A's decoder.
    idx = np.arange(100)
    proj_a, dec_a = ex.train_relative_decoder(z["a"], y, z["a"][idx], epochs=2)
    proj_b = align.fit("relative", z["b"][idx])
    b = zoo["models"]["b"]
    with torch.no_grad():
        pred = splice(b.encoder, dec_a, proj_b).eval()(zoo["xt"]).argmax(1)
    assert float((pred == zoo["yt"]).float().mean()) > 0.8
    assert proj_a.target_dim == 100 and not dec_a.training
