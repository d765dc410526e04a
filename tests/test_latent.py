"""Tests of stitchlab.latent: the statistics of one latent space on data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from stitchlab import latent


def _clusters(n=2000, d=8, separation=10.0, seed=0):
    """Ten well separated Gaussian clusters, labels in row order 0..9 repeating."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    z = separation * rng.normal(size=(10, d))[labels] + rng.normal(size=(n, d))  # (n, d)
    return z, labels


def test_describe_is_json_ready_and_a_superset_of_basic_stats():
    z, labels = _clusters()
    out = latent.describe(z, labels)
    json.dumps(out, allow_nan=False)
    basic = latent.basic_stats(z, labels)
    assert set(basic) <= set(out)
    for key in basic:
        assert out[key] == pytest.approx(basic[key])


def test_participation_ratio_of_isotropic_gaussian_is_the_width():
    z = np.random.default_rng(0).normal(size=(10_000, 16))
    pr = latent.describe(z, np.zeros(10_000, dtype=int))["participation_ratio"]
    assert pr == pytest.approx(16, rel=0.03)


def test_participation_ratio_of_rank_one_data_is_one():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 1)) @ rng.normal(size=(1, 12)) + 3.0  # (500, 12), rank 1 + shift
    out = latent.describe(z, np.arange(500) % 10)
    assert out["participation_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert out["pca_explained_variance_ratio"][0] == pytest.approx(1.0, abs=1e-9)


def test_variance_spectrum_and_ranking():
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 3.0, 1.0, 2.0])
    z = rng.normal(size=(5000, 4)) * scales
    out = latent.describe(z, np.arange(5000) % 10)
    assert out["variance_ranking"] == [1, 3, 2, 0]
    assert out["variance"] == pytest.approx(list(scales**2), rel=0.06)
    ratios = np.array(out["pca_explained_variance_ratio"])
    assert ratios.sum() == pytest.approx(1.0) and np.all(np.diff(ratios) <= 0)
    assert ratios == pytest.approx(np.sort(scales**2)[::-1] / np.sum(scales**2), abs=0.02)


def test_twonn_finds_a_plane_in_ten_dimensions():
    rng = np.random.default_rng(0)
    plane = rng.uniform(size=(3000, 2)) @ rng.normal(size=(2, 10))  # (3000, 10), a 2-D plane
    out = latent.describe(plane, np.arange(3000) % 10)
    assert out["intrinsic_dimension_twonn"] == pytest.approx(2.0, abs=0.15)
    assert out["twonn_points_used"] == 3000


def test_twonn_finds_five_dimensions():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 20))
    assert latent.twonn_dimension(z)["dimension"] == pytest.approx(5.0, abs=0.5)


def test_twonn_collapses_duplicate_points():
    rng = np.random.default_rng(0)
    plane = rng.uniform(size=(2000, 2)) @ rng.normal(size=(2, 10))
    z = np.vstack([plane, plane[:500], np.zeros((300, 10))])  # copies give r1 = 0
    out = latent.describe(z, np.arange(z.shape[0]) % 10)
    assert out["twonn_points_used"] == 2001  # 2000 distinct points plus the origin
    assert out["intrinsic_dimension_twonn"] == pytest.approx(2.0, abs=0.15)


def test_separated_clusters_score_high():
    z, labels = _clusters()
    out = latent.describe(z, labels)
    assert out["silhouette"] > 0.7
    assert out["knn_accuracy"] > 0.99
    assert out["davies_bouldin"] < 0.5
    assert out["inter_intra_ratio"] > 5
    assert out["silhouette_samples"] == 2000


def test_random_labels_score_at_chance():
    z, _ = _clusters()
    labels = np.random.default_rng(9).integers(0, 10, size=z.shape[0])
    out = latent.describe(z, labels)
    assert abs(out["silhouette"]) < 0.1
    assert out["knn_accuracy"] < 0.2  # chance is 0.1
    assert out["inter_intra_ratio"] < 0.5


def test_knn_accuracy_is_leave_one_out():
    # Two points per class, far apart from other classes: each point's one nearest other point
    # is its twin. Counting a point as its own neighbour would also give 1, so make twins
    # disagree and expect 0.
    z = np.repeat(np.arange(10.0)[:, None] * 100, 2, axis=0)  # (20, 1): twin pairs
    z[1::2] += 1.0
    labels = np.arange(20) % 10
    assert latent.describe(z, labels, knn_k=1)["knn_accuracy"] == 0.0
    assert latent.describe(z, np.repeat(np.arange(10), 2), knn_k=1)["knn_accuracy"] == 1.0


def test_silhouette_subsample_is_seeded():
    z, _ = _clusters(n=4000, separation=1.0)
    labels = np.random.default_rng(2).integers(0, 10, size=4000)
    a = latent.describe(z, labels, seed=0)["silhouette"]
    assert a == latent.describe(z, labels, seed=0)["silhouette"]
    assert a != latent.describe(z, labels, seed=1)["silhouette"]


def test_dead_units_and_zero_fraction():
    z, labels = _clusters(n=1000)
    z = np.maximum(z, 0)
    z[:, [1, 4]] = 0.0
    out = latent.describe(z, labels)
    assert out["dead_units"] == 2 and out["dead_unit_indices"] == [1, 4]
    assert out["zero_fraction"] == pytest.approx(np.mean(z == 0))
    assert out["variance"][1] == 0.0


def test_class_geometry_and_empty_classes():
    z, labels = _clusters(n=900)
    labels = labels % 9  # class 9 is empty
    out = latent.describe(z, labels)
    json.dumps(out, allow_nan=False)
    assert out["class_counts"][9] == 0 and out["class_centroids"][9] is None
    assert out["class_spread"][9] is None
    assert out["centroid_distance_matrix"][9] == [None] * 10
    c0 = z[labels == 0].mean(0)
    assert out["class_centroids"][0] == pytest.approx(list(c0))
    assert out["class_spread"][0] == pytest.approx(
        np.linalg.norm(z[labels == 0] - c0, axis=1).mean()
    )
    c1 = z[labels == 1].mean(0)
    assert out["centroid_distance_matrix"][0][1] == pytest.approx(np.linalg.norm(c0 - c1))


def test_undefined_values_are_none_not_nan():
    z = np.zeros((50, 4))  # every unit dead, one class
    out = latent.describe(z, np.zeros(50, dtype=int))
    json.dumps(out, allow_nan=False)
    assert out["participation_ratio"] is None and out["pca_explained_variance_ratio"] is None
    assert out["silhouette"] is None and out["davies_bouldin"] is None
    assert out["centroid_distance_mean"] is None
    assert out["intrinsic_dimension_twonn"] is None and out["twonn_points_used"] == 1


def test_torch_input():
    torch = pytest.importorskip("torch")
    z, labels = _clusters(n=500)
    got = latent.describe(torch.from_numpy(z).float(), torch.from_numpy(labels))
    assert got["knn_accuracy"] == latent.describe(z.astype(np.float32), labels)["knn_accuracy"]


def test_describe_rejects_bad_input():
    z, labels = _clusters(n=100)
    with pytest.raises(ValueError, match=r"labels must have shape \(100,\)"):
        latent.describe(z, labels[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=10\); got values"):
        latent.describe(z, labels + 1)
    with pytest.raises(ValueError, match=r"knn_k must be an int in \[1, n_samples - 1 = 99\]"):
        latent.describe(z, labels, knn_k=100)
    z[3, 3] = np.nan
    with pytest.raises(ValueError, match="z contains 1 NaN/inf values"):
        latent.describe(z, labels)


def test_twonn_is_not_fooled_by_points_far_from_the_origin():
    rng = np.random.default_rng(3)
    plane = rng.uniform(size=(2000, 2)) @ rng.normal(size=(2, 10)) + 1e6
    assert latent.twonn_dimension(plane)["dimension"] == pytest.approx(2.0, abs=0.15)


def test_twonn_matches_exact_pairwise_distances_with_near_duplicates():
    # Spread 1e4 with pairs 1e-5 apart: the squared-norm shortcut of a neighbour search cannot
    # resolve such gaps, an exact difference (scipy's cdist) can.
    rng = np.random.default_rng(4)
    base = 1e4 * rng.normal(size=(1500, 3))
    z = np.vstack([base, base[:300] + 1e-5 * rng.normal(size=(300, 3))])  # (1800, 3)
    dist = cdist(z, z)
    np.fill_diagonal(dist, np.inf)
    r = np.sort(dist, axis=1)[:, :2]
    expected = z.shape[0] / np.sum(np.log(r[:, 1] / r[:, 0]))
    assert latent.twonn_dimension(z)["dimension"] == pytest.approx(expected, rel=1e-9)
