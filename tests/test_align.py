"""Tests of stitchlab.align: known maps recovered, reflections, save/load, rejections, real MNIST.

Synthetic tests build a target space from a source space by a map the method should invert
exactly (rotation, permutation, scaling, shift) and check the fitted aligner reproduces it. The
real-data test trains two tiny models (seeds 42 and 123, 20,000 MNIST images, 3 epochs; about
94% each) and checks that the raw splice collapses and 100-anchor Procrustes repairs it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from stitchlab import align
from stitchlab.errors import CheckpointError, StitchlabError
from stitchlab.models import build_model, splice

PAIRED = ["procrustes", "affine", "ridge", "permutation", "stitch_layer"]


# One torch and BLAS thread: on a shared 2-core machine small ops run far faster so.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def orthogonal(d: int, seed: int, det: float | None = None) -> np.ndarray:
    """A random orthogonal (d, d) matrix, with the sign of its determinant forced if asked."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    q = q * np.sign(np.diag(r))
    if det is not None and np.sign(np.linalg.det(q)) != np.sign(det):
        q[:, 0] = -q[:, 0]
    return q


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def out(aligner, z) -> np.ndarray:
    return aligner.transform(torch.as_tensor(z, dtype=torch.float32)).double().numpy()


# --- known maps recovered exactly -----------------------------------------------------------


def test_procrustes_recovers_rotation_scale_and_shift():
    x, q = gaussian(200, 16, 0), orthogonal(16, 1)
    shift = np.arange(16.0)
    a = align.fit("procrustes", x, 2.5 * x @ q + shift)
    np.testing.assert_allclose(a.rotation.double().numpy(), q, atol=1e-5)
    x_new = gaussian(50, 16, 2)
    np.testing.assert_allclose(out(a, x_new), 2.5 * x_new @ q + shift, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(d=st.integers(2, 12), extra=st.integers(1, 30), scale=st.floats(0.05, 20.0),
       seed=st.integers(0, 10_000))
def test_procrustes_recovery_holds_for_any_width_and_scale(d, extra, scale, seed):
    x, q = gaussian(d + extra, d, seed), orthogonal(d, seed + 1)
    a = align.fit("procrustes", x, scale * x @ q - 1.0)
    np.testing.assert_allclose(out(a, x), scale * x @ q - 1.0, atol=2e-4 * max(scale, 1.0))


def test_procrustes_rectangular_is_semi_orthogonal_and_recovers_an_embedding():
    # 8 -> 12: the target is an isometric embedding of the source plus a shift.
    x = gaussian(100, 8, 3)
    embed = orthogonal(12, 4)[:8]  # (8, 12), orthonormal rows
    a = align.fit("procrustes", x, x @ embed + 0.5)
    assert a.rotation.shape == (8, 12)
    np.testing.assert_allclose(out(a, x), x @ embed + 0.5, atol=1e-4)
    # 12 -> 8: orthonormal columns.
    b = align.fit("procrustes", gaussian(100, 12, 5), gaussian(100, 8, 6))
    r = b.rotation.double().numpy()
    np.testing.assert_allclose(r.T @ r, np.eye(8), atol=1e-5)


def test_affine_recovers_a_general_linear_map():
    x = gaussian(100, 10, 7)
    w, bias = gaussian(10, 6, 8), gaussian(1, 6, 9)[0]
    a = align.fit("affine", x, x @ w + bias)
    np.testing.assert_allclose(a.weight.double().numpy(), w, atol=1e-4)
    np.testing.assert_allclose(out(a, gaussian(20, 10, 10)), gaussian(20, 10, 10) @ w + bias,
                               atol=1e-4)


def test_ridge_is_near_exact_without_noise():
    x = gaussian(100, 10, 11)
    w = gaussian(10, 10, 12)
    a = align.fit("ridge", x, x @ w + 3.0)
    assert a.options["alpha"] < 1e-3
    np.testing.assert_allclose(out(a, x), x @ w + 3.0, atol=1e-3)


def test_permutation_recovers_permutation_signs_scales_and_shifts():
    x = gaussian(60, 6, 13)
    perm = np.array([3, 0, 5, 1, 4, 2])
    scale = np.array([2.0, -1.0, 0.5, 3.0, -0.25, 1.0])
    shift = np.array([1.0, 0.0, -2.0, 5.0, 0.5, 0.0])
    a = align.fit("permutation", x, x[:, perm] * scale + shift)
    assert a.index.tolist() == perm.tolist()
    np.testing.assert_allclose(a.scale.double().numpy(), scale, atol=1e-5)
    np.testing.assert_allclose(out(a, x), x[:, perm] * scale + shift, atol=1e-4)


def test_permutation_handles_dead_dims_and_extra_target_dims_without_nan():
    x = np.abs(gaussian(40, 5, 14))
    x[:, 2] = 0.0  # a dead ReLU unit in the source
    y = np.hstack([x[:, [1, 0, 2, 4, 3]], np.full((40, 2), 7.0)])  # 2 constant extra dims
    a = align.fit("permutation", x, y)
    z = out(a, x)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z, y, atol=1e-4)
    assert a.scale[2] == 0 and a.scale[5] == 0 and a.scale[6] == 0


def test_centroids_recover_a_rotation_from_class_means_of_different_samples():
    # Latents sit exactly on their class means, so each side's class means are exact although
    # the two samples share no image.
    d, q = 8, orthogonal(8, 15)
    means = gaussian(10, d, 16)
    ys, yt = np.arange(73) % 10, (np.arange(91) * 7) % 10
    a = align.fit("centroids", means[ys], 3 * means[yt] @ q + 1, source_labels=ys,
                  target_labels=yt)
    np.testing.assert_allclose(out(a, gaussian(5, d, 17)), 3 * gaussian(5, d, 17) @ q + 1,
                               atol=1e-4)


def test_self_centroids_with_given_predictions_equals_centroids():
    means = gaussian(10, 8, 18)
    ys, yt = np.arange(50) % 10, np.arange(60) % 10
    xs = means[ys] + 0.1 * gaussian(50, 8, 19)
    xt = means[yt] @ orthogonal(8, 20) + 0.1 * gaussian(60, 8, 21)
    a = align.fit("centroids", xs, xt, source_labels=ys, target_labels=yt)
    b = align.fit("self_centroids", xs, xt, source_labels=ys, target_labels=yt)
    assert torch.equal(a.rotation, b.rotation) and b.method == "self_centroids"


def test_baselines_pad_and_truncate():
    z = gaussian(4, 3, 22)
    padded = out(align.fit("zero_pad", z, gaussian(1, 5, 0)), z)
    np.testing.assert_allclose(padded, np.hstack([z, np.zeros((4, 2))]), atol=1e-6)
    cut = out(align.fit("truncate", gaussian(1, 5, 0), z), gaussian(4, 5, 23))
    np.testing.assert_allclose(cut, gaussian(4, 5, 23)[:, :3], atol=1e-6)
    with pytest.raises(align.AlignmentError, match="truncate"):
        align.fit("zero_pad", gaussian(1, 5, 0), z)
    with pytest.raises(align.AlignmentError, match="zero_pad"):
        align.fit("truncate", z, gaussian(1, 5, 0))


@pytest.mark.parametrize("center", [False, True])
def test_relative_coordinates_are_invariant_to_rotation_and_scale(center):
    x = gaussian(30, 8, 24)
    y = 4.0 * x @ orthogonal(8, 25) + (2.0 if center else 0.0)  # shift only with centring
    ra = out(align.fit("relative", x[:10], y[:10], center=center), x)
    rb = out(align.fit("relative", y[:10], center=center), y)
    assert ra.shape == (30, 10)
    np.testing.assert_allclose(ra, rb, atol=1e-5)


# --- reflections ------------------------------------------------------------------------------


def test_reflection_allowed_by_default_and_forbidden_on_request():
    x, q = gaussian(100, 6, 26), orthogonal(6, 27, det=-1.0)
    free = align.fit("procrustes", x, x @ q)
    assert np.linalg.det(free.rotation.double().numpy()) == pytest.approx(-1.0, abs=1e-5)
    proper = align.fit("procrustes", x, x @ q, allow_reflection=False)
    r = proper.rotation.double().numpy()
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(r.T @ r, np.eye(6), atol=1e-5)
    assert np.abs(out(proper, x) - x @ q).max() > 0.1  # a rotation cannot undo a reflection


@pytest.mark.parametrize("n_anchors", [2, 5, 9, 15])
def test_forbidding_reflection_stays_orthogonal_and_exact_when_rank_deficient(n_anchors):
    # n_anchors < d: the cross-covariance is singular (det = 0). A proper rotation can still
    # match the anchors exactly, since the null space leaves a direction free to flip.
    d, q = 16, orthogonal(16, 28, det=-1.0)
    x = gaussian(n_anchors, d, 29)
    a = align.fit("procrustes", x, x @ q, allow_reflection=False)
    r = a.rotation.double().numpy()
    np.testing.assert_allclose(r.T @ r, np.eye(d), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(out(a, x), x @ q, atol=1e-4)


def test_forbidding_reflection_needs_equal_widths():
    with pytest.raises(align.AlignmentError, match="allow_reflection=False needs equal widths"):
        align.fit("procrustes", gaussian(20, 4, 0), gaussian(20, 5, 1), allow_reflection=False)


# --- ridge against affine near the interpolation threshold ------------------------------------


def test_ridge_stays_stable_where_affine_explodes():
    # n_anchors = d + 1 noisy anchors: least squares interpolates the noise exactly and its
    # error on new samples blows up; cross-validated ridge stays near the noise level.
    d = 32
    affine_err, ridge_err, many_err = [], [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        w, b = rng.normal(size=(d, d)) / np.sqrt(d), rng.normal(size=d)
        x = rng.normal(size=(2000 + d + 1, d))
        y = x @ w + b
        noisy = y + 0.1 * rng.normal(size=y.shape)
        fit_x, fit_y, test_x, test_y = x[:d + 1], noisy[:d + 1], x[-1000:], y[-1000:]
        affine_err.append(np.mean((out(align.fit("affine", fit_x, fit_y), test_x) - test_y)**2))
        ridge_err.append(np.mean((out(align.fit("ridge", fit_x, fit_y), test_x) - test_y)**2))
        many = align.fit("affine", x[:1000], noisy[:1000])
        many_err.append(np.mean((out(many, test_x) - test_y) ** 2))
    signal = 1.0  # the target's variance per coordinate is about 1
    assert np.median(affine_err) > 0.3 * signal
    assert max(ridge_err) < 0.2 * signal
    assert np.median(affine_err) > 3 * np.median(ridge_err)
    assert max(many_err) < 0.01  # with many anchors least squares is fine


# --- save / load ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_aligners(one_torch_thread) -> dict[str, align.Aligner]:
    """One fitted aligner per method."""
    x = np.abs(gaussian(80, 12, 30))
    y = x @ orthogonal(12, 31) + 0.1 * gaussian(80, 12, 32)
    labels = np.arange(80) % 10
    dec = build_model(5, latent_dim=12).decoder
    return {
        "procrustes": align.fit("procrustes", x, y, allow_reflection=False),
        "affine": align.fit("affine", x, y),
        "ridge": align.fit("ridge", x, y),
        "permutation": align.fit("permutation", x, y),
        "stitch_layer": align.fit("stitch_layer", x, y, labels=labels, decoder=dec, steps=20),
        "centroids": align.fit("centroids", x[:40], y[40:], source_labels=labels[:40],
                               target_labels=labels[40:]),
        "self_centroids": align.fit("self_centroids", x[:40], y[40:],
                                    source_labels=labels[:40], target_labels=labels[40:]),
        "relative": align.fit("relative", x[:20], y[:20], center=True),
        "zero_pad": align.fit("zero_pad", x, np.zeros((1, 16))),
        "truncate": align.fit("truncate", x, np.zeros((1, 8))),
    }


def test_every_method_is_registered_and_tested_for_save_load(fitted_aligners):
    assert set(fitted_aligners) == set(align.METHODS)


@pytest.mark.parametrize("method", sorted(align.METHODS))
def test_save_load_round_trips_bit_for_bit(method, tmp_path, fitted_aligners):
    a = fitted_aligners[method]
    path = tmp_path / f"{method}.safetensors"
    a.save(path)
    b = align.load(path)
    assert type(b) is type(a) and b.metadata == a.metadata and b.method == method
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    z = torch.rand(7, a.source_dim) * 3
    assert torch.equal(a.transform(z), b.transform(z))


def test_load_rejects_missing_foreign_and_damaged_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        align.load(tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not written by Aligner.save"):
        align.load(foreign)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x07\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        align.load(damaged)


def test_metadata_is_json_and_names_method_and_options(fitted_aligners):
    a = fitted_aligners["ridge"]
    meta = json.loads(json.dumps(a.metadata))
    assert meta["method"] == "ridge" and meta["options"]["alpha"] > 0
    assert meta["source_dim"] == 12 and meta["target_dim"] == 12


# --- rejections ------------------------------------------------------------------------------


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of procrustes, affine"):
        align.fit("procrustez", gaussian(5, 2, 0), gaussian(5, 2, 1))


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(align.AlignmentError, match="accepts allow_reflection"):
        align.fit("procrustes", gaussian(5, 2, 0), gaussian(5, 2, 1), allow_reflexion=False)


@pytest.mark.parametrize("method", PAIRED)
def test_mismatched_anchor_counts_are_rejected(method):
    extra = {"labels": np.zeros(40, dtype=int), "decoder": build_model(0, 4).decoder}
    options = extra if method == "stitch_layer" else {}
    with pytest.raises(align.AlignmentError, match=rf"{method}: source has 40 anchors but "
                                                     r"target has 39"):
        align.fit(method, gaussian(40, 4, 0), gaussian(39, 4, 1), **options)


@pytest.mark.parametrize(("method", "n", "needs"), [
    ("procrustes", 1, 2), ("ridge", 1, 2), ("permutation", 1, 2), ("affine", 32, 33),
])
def test_too_few_anchors_says_how_many_are_needed(method, n, needs):
    with pytest.raises(align.NotEnoughAnchors, match=rf"{method} needs at least {needs} "
                                                       rf"anchors.*got {n}"):
        align.fit(method, gaussian(n, 32, 0), gaussian(n, 32, 1))


def test_centroids_need_two_shared_classes():
    with pytest.raises(align.NotEnoughAnchors, match="centroids needs at least 2 classes"):
        align.fit("centroids", gaussian(5, 3, 0), gaussian(5, 3, 1),
                  source_labels=np.zeros(5, dtype=int), target_labels=np.ones(5, dtype=int))


def test_identical_anchors_are_too_few_for_procrustes():
    with pytest.raises(align.NotEnoughAnchors, match="identical"):
        align.fit("procrustes", np.ones((10, 3)), gaussian(10, 3, 0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", PAIRED + ["relative", "centroids"])
def test_nan_and_inf_are_rejected_naming_the_method(method, bad):
    x = gaussian(40, 4, 0)
    x[3, 1] = bad
    options = {
        "stitch_layer": {"labels": np.zeros(40, dtype=int), "decoder": build_model(0, 4).decoder},
        "centroids": {"source_labels": np.arange(40) % 10, "target_labels": np.arange(40) % 10},
    }.get(method, {})
    with pytest.raises(align.AlignmentError, match=rf"{method}: source contains NaN or inf"):
        align.fit(method, x, gaussian(40, 4, 1), **options)


def test_errors_are_stitchlab_value_errors():
    assert issubclass(align.NotEnoughAnchors, align.AlignmentError)
    assert issubclass(align.AlignmentError, StitchlabError)
    assert issubclass(align.AlignmentError, ValueError)


def test_self_centroids_needs_one_label_source_per_side():
    with pytest.raises(align.AlignmentError, match="exactly one of source_decoder= or "
                                                   "source_labels="):
        align.fit("self_centroids", gaussian(5, 3, 0), gaussian(5, 3, 1))


def test_transform_checks_width_and_returns_float32():
    a = align.fit("procrustes", gaussian(20, 4, 0), gaussian(20, 4, 1))
    assert a.transform(torch.zeros(3, 4, dtype=torch.float64)).dtype == torch.float32
    assert a.transform(np.zeros((3, 4))).shape == (3, 4)
    with pytest.raises(align.AlignmentError, match=r"expects latents of shape \(n, 4\)"):
        a.transform(torch.zeros(3, 5))


def test_stitch_layer_leaves_the_decoder_untouched_and_is_seeded():
    dec = build_model(1, latent_dim=4).decoder.train()
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    x, labels = gaussian(64, 4, 0), np.arange(64) % 10
    a = align.fit("stitch_layer", x, labels=labels, decoder=dec, steps=30, batch_size=16)
    b = align.fit("stitch_layer", x, labels=labels, decoder=dec, steps=30, batch_size=16)
    assert torch.equal(a.weight, b.weight)
    assert dec.training and all(p.grad is None for p in dec.parameters())
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())
    assert a.options["init"] == "identity" and a.options["steps"] == 30


# --- real MNIST -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(one_torch_thread):
    """Two tiny MNIST models (seeds 42, 123; 20k images, 3 epochs) and their latents."""
    from stitchlab import data
    from stitchlab.training import TrainSettings, train_models

    ds = data.load("mnist")
    x, y = ds.inputs("train")[:20000], ds.labels("train")[:20000]
    xt, yt = ds.inputs("test"), ds.labels("test")
    a, b = train_models([42, 123], ["a", "b"], x, y, xt, yt, settings=TrainSettings(epochs=3))
    with torch.no_grad():
        z = {m.name: m.model.encoder(x) for m in (a, b)}
    return {"a": a.model, "b": b.model, "z": z, "y": y, "xt": xt, "yt": yt,
            "own": {"a": a.test_accuracy, "b": b.test_accuracy}}


def spliced_accuracy(encoder, decoder, aligner, x, y) -> float:
    with torch.no_grad():
        return float((splice(encoder, decoder, aligner).eval()(x).argmax(1) == y).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize(("src", "tgt"), [("a", "b"), ("b", "a")])
def test_real_splice_collapses_and_procrustes_repairs_it(tiny_pair, src, tgt):
    p = tiny_pair
    enc, dec = p[src].encoder, p[tgt].decoder
    assert min(p["own"].values()) > 0.92
    raw = spliced_accuracy(enc, dec, None, p["xt"], p["yt"])
    assert raw < 0.2

    idx = np.random.default_rng(0).choice(20000, size=100, replace=False)
    zs, zt = p["z"][src][idx], p["z"][tgt][idx]
    repaired = spliced_accuracy(enc, dec, align.fit("procrustes", zs, zt), p["xt"], p["yt"])
    assert repaired > 0.90


@pytest.mark.slow
def test_real_splice_other_methods_repair_too(tiny_pair):
    p = tiny_pair
    enc, dec = p["a"].encoder, p["b"].decoder
    idx = np.random.default_rng(1).choice(20000, size=200, replace=False)
    i, j = idx[:100], idx[100:]
    za, zb, y = p["z"]["a"], p["z"]["b"], p["y"]
    aligners = {
        "affine": align.fit("affine", za[i], zb[i]),
        "ridge": align.fit("ridge", za[i], zb[i]),
        "stitch_layer": align.fit("stitch_layer", za[i], zb[i], labels=y[i], decoder=dec),
        "centroids": align.fit("centroids", za[i], zb[j], source_labels=y[i],
                               target_labels=y[j]),
        "self_centroids": align.fit("self_centroids", za[i], zb[j],
                                    source_decoder=p["a"].decoder, target_decoder=dec),
        "permutation": align.fit("permutation", za[i], zb[i]),
    }
    acc = {m: spliced_accuracy(enc, dec, a, p["xt"], p["yt"]) for m, a in aligners.items()}
    for m in ("affine", "ridge", "stitch_layer", "centroids", "self_centroids"):
        assert acc[m] > 0.88, (m, acc)
    assert acc["permutation"] > 0.5, acc


# --- documentation ------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["base", "procrustes", "linear", "permutation", "stitch_layer",
                                    "centroids", "relative", "baselines", "registry",
                                    "experiments"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"stitchlab.align.{module}"))
    assert result.failed == 0
