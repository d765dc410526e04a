"""Tests of stitchlab.similarity: invariances, independent routes, and degenerate input."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import cdist, pdist
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from stitchlab import similarity as sim

ALL = list(sim.MEASURES)
SIMILARITIES_AT_ONE = [m for m in ALL if m not in sim.DISTANCES]


def _pair(n=300, d1=6, d2=5, seed=0, noise=0.5):
    """Two related representations of the same n inputs, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    base = rng.normal(size=(10, d1))[labels] + rng.normal(size=(n, d1))  # (n, d1)
    y = np.tanh(base @ rng.normal(size=(d1, d2))) + noise * rng.normal(size=(n, d2))  # (n, d2)
    return base, y, labels


def _rotation(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def _centre(a):
    return a - a.mean(0)


# ---------------------------------------------------------------------------------------------
# Identity and invariances
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIMILARITIES_AT_ONE)
def test_every_similarity_of_x_with_itself_is_one(name):
    x, _, labels = _pair()
    assert sim.MEASURES[name](x, x, labels) == pytest.approx(1.0, abs=1e-6)


def test_procrustes_distance_of_x_with_itself_is_zero():
    x, _, _ = _pair()
    assert sim.procrustes_distance(x, x) == pytest.approx(0.0, abs=1e-7)


# pwcca weighs the units of its first argument, so only the second is transformed for it.
INVARIANT = [m for m in ALL if m != "pwcca"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e4])
def test_measures_unchanged_by_rotation_and_scaling_of_y(name, scale):
    x, y, labels = _pair()
    y2 = scale * (y @ _rotation(y.shape[1]))
    f = sim.MEASURES[name]
    assert f(x, y2, labels) == pytest.approx(f(x, y, labels), abs=1e-6)


@pytest.mark.parametrize("name", INVARIANT)
def test_symmetric_measures_unchanged_by_rotation_and_scaling_of_x(name):
    x, y, labels = _pair()
    x2 = 7.5 * (x @ _rotation(x.shape[1], seed=3))
    f = sim.MEASURES[name]
    assert f(x2, y, labels) == pytest.approx(f(x, y, labels), abs=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_scaling_float32_input_by_1e4_changes_nothing(name):
    x, y, labels = _pair()
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    f = sim.MEASURES[name]
    assert f(x32, y32 * np.float32(1e4), labels) == pytest.approx(f(x32, y32, labels), abs=1e-6)


def test_pwcca_weights_the_units_of_x_so_rotating_x_changes_it():
    x, y, _ = _pair()
    rotated = sim.pwcca(x @ _rotation(x.shape[1], seed=3), y)
    assert abs(rotated - sim.pwcca(x, y)) > 1e-4
    assert sim.pwcca(x, y) != pytest.approx(sim.pwcca(y, x), abs=1e-4)


def test_torch_input_gives_the_numpy_value():
    torch = pytest.importorskip("torch")
    x, y, labels = _pair()
    for name in ALL:
        f = sim.MEASURES[name]
        got = f(torch.from_numpy(x).float(), torch.from_numpy(y).float(), torch.from_numpy(labels))
        assert got == pytest.approx(f(x.astype(np.float32), y.astype(np.float32), labels), abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_dead_columns_change_nothing(name):
    x, y, labels = _pair()
    dead = np.hstack([np.zeros((x.shape[0], 3)), x, np.full((x.shape[0], 1), 2.5)])
    if name == "mutual_knn":  # normalises rows uncentred: only all-zero columns are neutral
        dead = dead[:, :-1]
    f = sim.MEASURES[name]
    assert f(dead, y, labels) == pytest.approx(f(x, y, labels), abs=1e-9)


def test_cca_counts_only_live_columns_against_the_sample_count():
    x, y, _ = _pair(n=8, d1=3, d2=3)
    padded = np.hstack([x, np.zeros((8, 10))])  # 13 columns, 3 of them live, 8 samples
    assert sim.mean_cca(padded, y) == pytest.approx(sim.mean_cca(x, y), abs=1e-12)


def test_different_widths_are_allowed():
    x, y, labels = _pair(d1=7, d2=2)
    values = sim.compare(x, y, labels)
    assert all(math.isfinite(v) for v in values.values())


# ---------------------------------------------------------------------------------------------
# Estimator behaviour
# ---------------------------------------------------------------------------------------------


def test_debiased_cka_stays_near_zero_for_small_n_while_linear_cka_grows():
    rng = np.random.default_rng(0)
    means = {}
    for n in (256, 32):
        pairs = [(rng.normal(size=(n, 8)), rng.normal(size=(n, 8))) for _ in range(40)]
        means[n] = (
            np.mean([sim.linear_cka(a, b) for a, b in pairs]),
            np.mean([sim.debiased_cka(a, b) for a, b in pairs]),
        )
    (lin256, deb256), (lin32, deb32) = means[256], means[32]
    assert lin32 > 0.1 and lin32 > 4 * lin256  # the biased estimate grows as n shrinks
    assert abs(deb256) < 0.01 and abs(deb32) < 0.03  # the unbiased one does not
    assert abs(deb32) < lin32 / 4


def test_minibatch_cka_matches_full_debiased_cka_on_average():
    x, y, _ = _pair(n=4000, noise=1.0)
    full = sim.debiased_cka(x, y)
    assert sim.minibatch_cka(x, y, batch_size=200) == pytest.approx(full, abs=0.02)
    assert sim.minibatch_cka(x, y, batch_size=4000) == pytest.approx(full, abs=1e-12)


def test_rbf_cka_depends_on_sigma_and_tends_to_linear_cka():
    x, y, _ = _pair(n=200)
    med = np.median(pdist(x))
    small, unit = sim.rbf_cka(x, y, sigma=0.3 * med), sim.rbf_cka(x, y, sigma=med)
    assert abs(small - unit) > 0.05
    linear = sim.linear_cka(x, y)
    gaps = [abs(sim.rbf_cka(x, y, sigma=f * med) - linear) for f in (3, 30, 300, 1e5)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-8


def test_rbf_cka_default_is_the_median_heuristic():
    x, y, _ = _pair(n=150)
    sigmas = (0.8 * np.median(pdist(x)), 0.8 * np.median(pdist(y)))
    assert sim.rbf_cka(x, y) == pytest.approx(sim.rbf_cka(x, y, sigma=sigmas), abs=1e-12)
    frac = (0.4 * np.median(pdist(x)), 0.4 * np.median(pdist(y)))
    assert sim.rbf_cka(x, y, median_fraction=0.4) == pytest.approx(
        sim.rbf_cka(x, y, sigma=frac), abs=1e-12
    )


def test_rbf_cka_blocks_cover_the_whole_kernel(monkeypatch):
    x, y, _ = _pair(n=301)
    whole = sim.rbf_cka(x, y)
    monkeypatch.setattr(sim, "_BLOCK_ROWS", 37)  # 301 = 8 * 37 + 5: uneven last block
    assert sim.rbf_cka(x, y) == pytest.approx(whole, abs=1e-12)


def test_procrustes_is_a_metric():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 4))
    q = _rotation(4, seed=9)
    assert sim.procrustes_distance(x, 3 * x @ q) == pytest.approx(0.0, abs=1e-7)
    widths = [4, 4, 6, 2, 4, 3]
    reps = [rng.normal(size=(60, w)) + 0.5 * np.pad(x, ((0, 0), (0, 6)))[:, :w] for w in widths]
    for i in range(len(reps)):
        for j in range(len(reps)):
            dij = sim.procrustes_distance(reps[i], reps[j])
            assert 0.0 <= dij <= math.pi / 2
            assert dij == pytest.approx(sim.procrustes_distance(reps[j], reps[i]), abs=1e-12)
            for k in range(len(reps)):
                djk = sim.procrustes_distance(reps[j], reps[k])
                dik = sim.procrustes_distance(reps[i], reps[k])
                assert dik <= dij + djk + 1e-12


def test_procrustes_is_accurate_near_zero():
    x, _, _ = _pair()
    eps = 1e-9
    bent = x + eps * np.random.default_rng(2).normal(size=x.shape)
    d = sim.procrustes_distance(x, bent)
    assert 0 < d < 1e-8  # arccos of a nuclear norm would return ~1e-8 of rounding noise or 0


def test_rsa_subsamples_with_a_seed():
    x, y, _ = _pair(n=400)
    a = sim.rsa(x, y, max_samples=100, seed=1)
    assert a == sim.rsa(x, y, max_samples=100, seed=1)
    assert a != sim.rsa(x, y, max_samples=100, seed=2)
    assert sim.rsa(x, y, max_samples=400) == sim.rsa(x, y, max_samples=10_000)


def test_mutual_knn_is_chance_for_unrelated_spaces():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    assert sim.mutual_knn(x, y, k=10) < 0.03  # chance is k / n = 0.01


def test_mutual_knn_warns_about_zero_rows():
    x, y, _ = _pair()
    x[3] = 0.0
    with pytest.warns(RuntimeWarning, match="1 rows of x are all zero"):
        sim.mutual_knn(x, y)


# ---------------------------------------------------------------------------------------------
# Independent routes to the same numbers
# ---------------------------------------------------------------------------------------------


def _hsic_biased(kx, ky):
    n = kx.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(kx @ h @ ky @ h) / (n - 1) ** 2


def _cka_gram(kx, ky, hsic):
    return hsic(kx, ky) / math.sqrt(hsic(kx, kx) * hsic(ky, ky))


def _hsic_unbiased(kx, ky):
    n = kx.shape[0]
    kx, ky = kx.copy(), ky.copy()
    np.fill_diagonal(kx, 0.0)
    np.fill_diagonal(ky, 0.0)
    one = np.ones(n)
    return (
        np.trace(kx @ ky)
        + (one @ kx @ one) * (one @ ky @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kx @ ky @ one)
    ) / (n * (n - 3))


def _cca_eigen(x, y):
    """Canonical correlations from the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx."""
    xc, yc = _centre(x), _centre(y)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    lam, w = np.linalg.eig(m)
    order = np.argsort(-lam.real)[: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(lam.real[order], 0, 1)), w.real[:, order]


def test_linear_cka_matches_the_gram_matrix_formula():
    x, y, _ = _pair(n=120)
    expected = _cka_gram(x @ x.T, y @ y.T, _hsic_biased)
    assert sim.linear_cka(x, y) == pytest.approx(expected, abs=1e-10)


def test_debiased_cka_matches_the_gram_matrix_formula():
    x, y, _ = _pair(n=120)
    expected = _cka_gram(x @ x.T, y @ y.T, _hsic_unbiased)
    assert sim.debiased_cka(x, y) == pytest.approx(expected, abs=1e-10)


def test_minibatch_cka_matches_per_batch_gram_matrices():
    x, y, _ = _pair(n=130)
    kl = kk = ll = 0.0
    for rows in (slice(0, 40), slice(40, 80), slice(80, 120), slice(120, 130)):
        kx, ky = x[rows] @ x[rows].T, y[rows] @ y[rows].T
        kl += _hsic_unbiased(kx, ky)
        kk += _hsic_unbiased(kx, kx)
        ll += _hsic_unbiased(ky, ky)
    got = sim.minibatch_cka(x, y, batch_size=40, seed=None)
    assert got == pytest.approx(kl / math.sqrt(kk * ll), abs=1e-10)


def test_rbf_cka_matches_the_gram_matrix_formula():
    x, y, _ = _pair(n=120)
    sx, sy = 1.3, 0.7
    kx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * sx**2))
    ky = np.exp(-cdist(y, y, "sqeuclidean") / (2 * sy**2))
    expected = _cka_gram(kx, ky, _hsic_biased)
    assert sim.rbf_cka(x, y, sigma=(sx, sy)) == pytest.approx(expected, abs=1e-10)


def test_mean_cca_matches_the_eigen_route():
    x, y, _ = _pair(n=200, d1=5, d2=3)
    rho, _ = _cca_eigen(x, y)
    assert sim.mean_cca(x, y) == pytest.approx(rho.mean(), abs=1e-8)


def test_mean_cca_of_one_column_is_the_multiple_correlation():
    x, y, _ = _pair(n=200, d1=4, d2=3)
    target = x[:, :1]
    design = np.hstack([y, np.ones((200, 1))])
    fit = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    r2 = 1 - np.sum((target - fit) ** 2) / np.sum(_centre(target) ** 2)
    assert sim.mean_cca(target, y) == pytest.approx(math.sqrt(r2), abs=1e-10)


def test_svcca_matches_pca_then_cca():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)) * np.array([5.0, 3.0, 2.0, 0.2, 0.1, 0.05])
    y = x @ rng.normal(size=(6, 5)) + rng.normal(size=(300, 5))
    px = PCA(n_components=0.99, svd_solver="full").fit_transform(x)
    py = PCA(n_components=0.99, svd_solver="full").fit_transform(y)
    assert px.shape[1] < 6  # the SVD step really drops directions here
    rho, _ = _cca_eigen(px, py)
    assert sim.svcca(x, y) == pytest.approx(rho.mean(), abs=1e-8)
    assert sim.svcca(x, y, keep=1.0) == pytest.approx(sim.mean_cca(x, y), abs=1e-10)


def test_pwcca_matches_the_paper_weights():
    x, y, _ = _pair(n=250, d1=3, d2=5)
    rho, w = _cca_eigen(x, y)  # x-side canonical weights, one column per correlation
    h = _centre(x) @ w
    h /= np.linalg.norm(h, axis=0)  # unit canonical variates h_i
    alpha = np.abs(h.T @ _centre(x)).sum(axis=1)  # sum_j |<h_i, x_j>|
    assert sim.pwcca(x, y) == pytest.approx(alpha @ rho / alpha.sum(), abs=1e-8)


def test_procrustes_distance_matches_scipy():
    x, y, _ = _pair(n=100, d1=5, d2=3)
    xc, yc = _centre(x), _centre(y)
    xc, yc = xc / np.linalg.norm(xc), np.pad(yc / np.linalg.norm(yc), ((0, 0), (0, 2)))
    _, nuclear = orthogonal_procrustes(yc, xc)
    assert sim.procrustes_distance(x, y) == pytest.approx(math.acos(nuclear), abs=1e-10)


def test_rsa_matches_scipy_spearman_of_pdist():
    x, y, _ = _pair(n=150)
    expected = spearmanr(pdist(x), pdist(y)).statistic
    assert sim.rsa(x, y) == pytest.approx(expected, abs=1e-10)


def test_rsa_handles_tied_distances_like_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(60, 2)).astype(float)  # many repeated points and distances
    y = x + rng.integers(0, 2, size=(60, 2))
    assert sim.rsa(x, y) == pytest.approx(spearmanr(pdist(x), pdist(y)).statistic, abs=1e-10)


def test_mutual_knn_matches_brute_force_sets():
    x, y, _ = _pair(n=120)
    k = 7

    def sets(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        d = cdist(a, a)
        np.fill_diagonal(d, np.inf)
        return [set(np.argsort(row)[:k]) for row in d]

    expected = np.mean([len(p & q) / k for p, q in zip(sets(x), sets(y), strict=True)])
    assert sim.mutual_knn(x, y, k=k) == pytest.approx(expected, abs=1e-12)


def test_centroid_rsa_matches_explicit_centroids():
    x, y, labels = _pair(n=200)
    labels = (labels * 7) % 10  # classes not in row order
    cx = np.array([x[labels == c].mean(0) for c in range(10)])
    cy = np.array([y[labels == c].mean(0) for c in range(10)])
    expected = spearmanr(pdist(cx), pdist(cy)).statistic
    assert sim.centroid_rsa(x, y, labels) == pytest.approx(expected, abs=1e-10)


# ---------------------------------------------------------------------------------------------
# Degenerate input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_mismatched_sample_counts_raise(name):
    x, y, labels = _pair()
    with pytest.raises(ValueError, match=r"same inputs row by row; got 300 rows in x and 299"):
        sim.MEASURES[name](x, y[:-1], labels)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(name, bad):
    x, y, labels = _pair()
    y[5, 2] = bad
    with pytest.raises(ValueError, match=r"y contains 1 NaN or infinite values \(first at row 5"):
        sim.MEASURES[name](x, y, labels)


@pytest.mark.parametrize("name", ["debiased_cka", "minibatch_cka"])
def test_unbiased_estimators_need_four_samples(name):
    x, y, labels = _pair(n=3)
    with pytest.raises(ValueError, match=rf"^{name}: needs at least 4 samples; got 3"):
        sim.MEASURES[name](x, y, labels)


@pytest.mark.parametrize("name", ["svcca", "pwcca", "mean_cca"])
@pytest.mark.parametrize("side", ["x", "y"])
def test_cca_family_needs_more_samples_than_columns(name, side):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    if side == "x":
        x = rng.normal(size=(6, 6))
    else:
        y = rng.normal(size=(6, 6))
    with pytest.raises(ValueError, match=rf"^{name}: CCA needs more samples.*{side} has"):
        sim.MEASURES[name](x, y, None)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("fill", [0.0, 0.1, 3.7])
def test_constant_input_raises(name, fill):
    x, y, labels = _pair()
    y = np.full_like(y, fill)
    with pytest.raises(ValueError, match=rf"^{name}: "):
        sim.MEASURES[name](x, y, labels)


@pytest.mark.parametrize("name", ALL)
def test_wrong_rank_raises(name):
    x, y, labels = _pair()
    with pytest.raises(ValueError, match=r"must have shape \(n_samples, n_features\)"):
        sim.MEASURES[name](x[:, 0], y, labels)


def test_bad_options_raise():
    x, y, labels = _pair()
    with pytest.raises(
        ValueError, match=r"batch_size must be at least 4 \(HSIC_1 divides by n - 3\); got 3"
    ):
        sim.minibatch_cka(x, y, batch_size=3)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        sim.rbf_cka(x, y, sigma=0.0)
    with pytest.raises(ValueError, match=r"keep must be a variance fraction in \(0, 1\]; got 1.5"):
        sim.svcca(x, y, keep=1.5)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, n_samples - 1 = 299\]"):
        sim.mutual_knn(x, y, k=300)
    with pytest.raises(ValueError, match="labels are required"):
        sim.centroid_rsa(x, y, None)
    with pytest.raises(ValueError, match="at least 3 distinct classes"):
        sim.centroid_rsa(x, y, labels % 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(n_samples,\)"):
        sim.centroid_rsa(x, y, labels[:-1])


def test_rbf_median_of_zero_asks_for_sigma():
    x, y, _ = _pair()
    x[:250] = 1.0  # 69% of the pairs coincide
    with pytest.raises(ValueError, match="median pairwise distance of x is 0.*pass sigma"):
        sim.rbf_cka(x, y)
    assert 0.0 <= sim.rbf_cka(x, y, sigma=1.0) <= 1.0


# ---------------------------------------------------------------------------------------------
# Measures over a model zoo
# ---------------------------------------------------------------------------------------------


def test_compare_runs_the_measures_asked_for_in_order():
    x, y, labels = _pair()
    got = sim.compare(x, y, labels)
    assert list(got) == ALL and all(isinstance(v, float) for v in got.values())
    assert list(sim.compare(x, y, measures=["rsa", "linear_cka"])) == ["rsa", "linear_cka"]
    with pytest.raises(ValueError, match=r"unknown measures \['cka'\]; choose from"):
        sim.compare(x, y, labels, measures=["cka"])


def test_similarity_matrix_layout_and_asymmetric_pwcca():
    rng = np.random.default_rng(0)
    x, _, labels = _pair()
    latents = {f"m{i}": np.tanh(x @ rng.normal(size=(6, 4 + i))) for i in range(3)}
    out = sim.similarity_matrix(latents, labels, measures=["linear_cka", "pwcca", "rsa"])
    json.dumps(out, allow_nan=False)
    assert out["models"] == ["m0", "m1", "m2"] and out["measures"] == ["linear_cka", "pwcca", "rsa"]
    lin, pw = np.array(out["values"]["linear_cka"]), np.array(out["values"]["pwcca"])
    assert np.allclose(np.diag(lin), 1.0) and np.allclose(lin, lin.T)
    assert pw[0, 2] == sim.pwcca(latents["m0"], latents["m2"])
    assert pw[2, 0] == sim.pwcca(latents["m2"], latents["m0"])
    assert pw[0, 2] != pw[2, 0]
    with pytest.raises(ValueError, match=r"same inputs; got sample counts \{'a': 300, 'b': 299\}"):
        sim.similarity_matrix({"a": x, "b": x[:-1]})


def test_rank_correlation_with_splice():
    acc = np.array([[1.0, 0.9, 0.2], [0.7, 1.0, 0.4], [0.1, 0.5, 1.0]])
    values = {
        "same": acc.tolist(),
        "opposite": (-acc).tolist(),
        "flat": np.ones((3, 3)).tolist(),
        "holes": [[1.0, None, 0.3], [0.6, 1.0, float("nan")], [0.2, 0.4, 1.0]],
    }
    got = sim.rank_correlation_with_splice(values, acc)
    assert got["same"] == {"spearman": pytest.approx(1.0), "n_pairs": 6}
    assert got["opposite"]["spearman"] == pytest.approx(-1.0)
    assert got["flat"] == {"spearman": None, "n_pairs": 6}
    assert got["holes"]["n_pairs"] == 4
    two = sim.rank_correlation_with_splice({"m": [[1, 0.5], [0.4, 1]]}, [[1, 0.2], [0.3, 1]])
    assert two["m"] == {"spearman": None, "n_pairs": 2}
    with pytest.raises(ValueError, match=r"values\['m'\] has shape \(2, 2\)"):
        sim.rank_correlation_with_splice({"m": [[1, 0.5], [0.4, 1]]}, acc)


def test_no_measure_warns_on_ordinary_input():
    x, y, labels = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.compare(np.maximum(x, 0) + 0.01, y, labels)


def test_without_labels_the_default_skips_only_centroid_rsa():
    x, y, _ = _pair()
    assert list(sim.compare(x, y)) == [m for m in ALL if m != "centroid_rsa"]
    with pytest.raises(ValueError, match="centroid_rsa: labels are required"):
        sim.compare(x, y, measures=["centroid_rsa"])
