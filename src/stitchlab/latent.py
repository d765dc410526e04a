"""Statistics of one latent space: per-dimension moments, dead units, class geometry.

`describe` gathers them all for one model's test latents as JSON-ready values. On 10,000 x 32
latents it takes 0.4 s of CPU time, most of it one exact k-nearest-neighbour search
(``PYTHONPATH=src python benchmarks/bench_similarity.py`` times it, median of 3 repeats).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

SILHOUETTE_SAMPLES = 2000  # most points the silhouette score is computed on (it is O(n^2))


def _as_array(z) -> np.ndarray:
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"latents must have shape (n_samples, n_dims), got {z.shape}")
    return z


def class_centroids(z, labels, num_classes: int = 10) -> np.ndarray:
    """Mean latent vector per class, array of shape (num_classes, d); NaN rows for empty classes."""
    z, labels = _as_array(z), np.asarray(labels)
    out = np.full((num_classes, z.shape[1]), np.nan)
    for c in range(num_classes):
        if np.any(labels == c):
            out[c] = z[labels == c].mean(0)
    return out


def basic_stats(z, labels, num_classes: int = 10) -> dict:
    """Per-dimension mean/std/min/max, dead units and mean inter-centroid distance.

    Parameters
    ----------
    z : array of shape (n_samples, n_dims), the latents of one model on one data split
    labels : array of shape (n_samples,), class indices

    Returns
    -------
    dict of JSON-ready values; ``dead_units`` counts dimensions that are exactly zero for every
    sample (ReLU units that never fire), ``dead_unit_indices`` lists them.
    """
    z = _as_array(z)
    dead = np.flatnonzero(np.all(z == 0, axis=0))
    cent = class_centroids(z, labels, num_classes)
    cent = cent[~np.isnan(cent).any(1)]
    diff = cent[:, None, :] - cent[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    iu = np.triu_indices(len(cent), 1)
    return {
        "n_samples": int(z.shape[0]),
        "n_dims": int(z.shape[1]),
        "mean": z.mean(0).tolist(),
        "std": z.std(0).tolist(),
        "min": z.min(0).tolist(),
        "max": z.max(0).tolist(),
        "dead_units": int(dead.size),
        "dead_unit_indices": dead.tolist(),
        "centroid_distance_mean": float(dist[iu].mean()) if iu[0].size else float("nan"),
    }


def mean_vector_comparison(za, zb) -> dict:
    """Cosine similarity and L2 distance between the mean latent vectors of two models.

    Only defined for equal widths; for different widths both values are None.
    """
    ma, mb = _as_array(za).mean(0), _as_array(zb).mean(0)
    if ma.shape != mb.shape:
        return {"mean_cosine": None, "mean_l2": None}
    denom = np.linalg.norm(ma) * np.linalg.norm(mb)
    cosine = float(ma @ mb / denom) if denom > 0 else None
    return {"mean_cosine": cosine, "mean_l2": float(np.linalg.norm(ma - mb))}


def _json_ready(value):
    """`value` with numpy scalars made Python numbers and NaN or inf made None, recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _neighbours(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances and indices of the k nearest neighbours of every row, itself excluded.

    Returns two arrays of shape (n, k), nearest first. Brute force in scikit-learn's chunks, so
    no n x n matrix is held. The points are centred first, which leaves distances unchanged but
    keeps the search's ||a||^2 + ||b||^2 - 2 a.b shortcut from cancelling to zero far from the
    origin.
    """
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(z - z.mean(axis=0))
    return nn.kneighbors()


def twonn_dimension(z) -> dict:
    """Intrinsic dimension by TwoNN (Facco, d'Errico, Rodriguez & Laio 2017, Sci. Rep. 7, 12140).

    For each point, mu = r2 / r1, the ratio of its second to first nearest-neighbour distance,
    follows the Pareto law F(mu) = 1 - mu^(-d) on a d-dimensional manifold. This fits d by
    maximum likelihood, ``d = N / sum_i log mu_i``, over all points, rather than by the paper's
    linear fit of -log(1 - F) against log mu with the largest 10% of mu discarded. Exact
    duplicate points (r1 = 0; common in ReLU latents) are collapsed to one before the search.

    Parameters
    ----------
    z : array of shape (n_samples, n_dims)

    Returns
    -------
    dict
        ``dimension`` (float, or None with fewer than 3 distinct points or when every mu is 1),
        ``n_used`` (distinct points used) and ``method`` ("mle").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> plane = rng.uniform(size=(2000, 2)) @ rng.normal(size=(2, 10))
    >>> round(twonn_dimension(plane)["dimension"])
    2
    """
    z = np.unique(_as_array(z), axis=0)  # (m, d) distinct points
    out = {"dimension": None, "n_used": int(z.shape[0]), "method": "mle"}
    if z.shape[0] >= 3:
        out["dimension"] = _twonn_mle(z, _neighbours(z, 2)[1])
    return out


def _twonn_mle(z: np.ndarray, idx: np.ndarray) -> float | None:
    """TwoNN maximum-likelihood dimension from the two nearest neighbours `idx` of every row.

    The distances are recomputed directly from the coordinates: the search's shortcut can round
    the small r1 of a close pair to zero.
    """
    r = np.linalg.norm(z[idx[:, :2]] - z[:, None, :], axis=-1)  # (m, 2)
    r1, r2 = r.min(axis=1), r.max(axis=1)  # (m,), (m,)
    total = float(np.sum(np.log(r2 / r1)))
    return z.shape[0] / total if total > 0 else None


def describe(z, labels, num_classes: int = 10, knn_k: int = 10, seed: int = 0) -> dict:
    """Variance spectrum, class clusters and local geometry of one latent space.

    Parameters
    ----------
    z : array or tensor of shape (n_samples, n_dims)
        The latents of one model on one data split.
    labels : array of shape (n_samples,)
        Class indices in [0, num_classes).
    num_classes : int, default 10
    knn_k : int, default 10
        Neighbours of the k-NN classifier, 1 <= knn_k <= n_samples - 1.
    seed : int, default 0
        Seed of the silhouette subsample.

    Returns
    -------
    dict
        JSON-ready (lists, floats, ints, None where undefined; never NaN). Every key of
        `basic_stats`, and:

        - ``variance``: per-dimension variance (ddof 0); ``variance_ranking``: dimension
          indices by descending variance (ties by index).
        - ``pca_explained_variance_ratio``: covariance eigenvalues over their sum, descending;
          ``participation_ratio``: (sum lambda)^2 / sum lambda^2, between 1 (one direction) and
          n_dims (isotropic); ``zero_fraction``: share of entries exactly 0. Both are None when
          z is constant.
        - ``class_counts``; ``class_centroids`` (num_classes rows, None for an empty class);
          ``class_spread``: mean distance of a class's points to its centroid;
          ``centroid_distance_matrix``: num_classes x num_classes Euclidean distances.
        - ``silhouette``: sklearn's silhouette score on a seeded subsample of at most 2000
          points (``silhouette_samples`` says how many); ``davies_bouldin``: sklearn's index
          on all points (lower is better separated); ``inter_intra_ratio``: mean distance
          between centroids over the mean distance of a point to its own centroid.
        - ``intrinsic_dimension_twonn``, ``twonn_points_used``: see `twonn_dimension`.
        - ``knn_accuracy``: leave-one-out k-NN classification accuracy in latent space: each
          point is classified by the majority label of its `knn_k` nearest other points
          (Euclidean; a tie goes to the smallest label); ``knn_k``.

    Raises
    ------
    ValueError
        When z is not finite, labels do not match it or fall outside [0, num_classes), or
        `knn_k` is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(500) % 10
    >>> z = np.maximum(rng.normal(size=(10, 8))[labels] + 0.1 * rng.normal(size=(500, 8)), 0)
    >>> d = describe(z, labels)
    >>> d["knn_accuracy"] > 0.9
    True
    """
    # 1. Check input.
    z = _as_array(z)  # (n, d)
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    n = z.shape[0]
    if not np.isfinite(z).all():
        raise ValueError(f"describe: z contains {int((~np.isfinite(z)).sum())} NaN/inf values")
    if labels.shape != (n,):
        raise ValueError(f"describe: labels must have shape ({n},) to match z; got {labels.shape}")
    if isinstance(knn_k, bool) or not isinstance(knn_k, (int, np.integer)) or not 1 <= knn_k < n:
        raise ValueError(
            f"describe: knn_k must be an int in [1, n_samples - 1 = {n - 1}]; got {knn_k!r}"
        )
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))
    )
    if not integral:
        raise ValueError(f"describe: labels must be integer class indices; got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"describe: labels must lie in [0, num_classes={num_classes}); got values from "
            f"{labels.min()} to {labels.max()}. Pass the right num_classes."
        )
    out = basic_stats(z, labels, num_classes)

    # 2. Variance distribution: per dimension, and the covariance spectrum.
    zc = z - z.mean(0)  # (n, d)
    var = np.mean(zc**2, axis=0)  # (d,)
    lam = np.clip(np.linalg.eigvalsh(zc.T @ zc / n)[::-1], 0.0, None)  # (d,) descending
    total = float(lam.sum())
    out["variance"] = var.tolist()
    out["variance_ranking"] = np.argsort(-var, kind="stable").tolist()
    out["pca_explained_variance_ratio"] = (lam / total).tolist() if total > 0 else None
    out["participation_ratio"] = total**2 / float(np.sum(lam**2)) if total > 0 else None
    out["zero_fraction"] = float(np.mean(z == 0))

    # 3. Clusters: centroids, spreads, and three separation scores.
    cent = class_centroids(z, labels, num_classes)  # (C, d), NaN rows for empty classes
    counts = np.bincount(labels, minlength=num_classes)  # (C,)
    own = np.linalg.norm(z - cent[labels], axis=1)  # (n,) distance to own centroid
    spread = np.bincount(labels, weights=own, minlength=num_classes) / np.maximum(counts, 1)
    dist = np.linalg.norm(cent[:, None, :] - cent[None, :, :], axis=-1)  # (C, C), NaN if empty
    present = counts > 0
    out["class_counts"] = counts.tolist()
    out["class_centroids"] = [
        row.tolist() if ok else None for row, ok in zip(cent, present, strict=True)
    ]
    out["class_spread"] = np.where(present, spread, np.nan).tolist()
    out["centroid_distance_matrix"] = dist.tolist()
    out.update(_separation(z, labels, dist[np.ix_(present, present)], own, seed))

    # 4. Geometry: one neighbour search serves the k-NN classifier and (without duplicates) TwoNN.
    _, ni = _neighbours(z, max(knn_k, 2))  # (n, k) indices, nearest first
    votes = labels[ni[:, :knn_k]]  # (n, knn_k)
    tally = np.bincount(
        (np.arange(n)[:, None] * num_classes + votes).ravel(), minlength=n * num_classes
    ).reshape(n, num_classes)
    out["knn_accuracy"] = float(np.mean(tally.argmax(1) == labels))
    out["knn_k"] = int(knn_k)
    if np.unique(z, axis=0).shape[0] == n:  # no duplicate points: reuse the search
        twonn = {"dimension": _twonn_mle(z, ni), "n_used": n}
    else:
        twonn = twonn_dimension(z)
    out["intrinsic_dimension_twonn"] = twonn["dimension"]
    out["twonn_points_used"] = twonn["n_used"]
    return _json_ready(out)


def _separation(z, labels, cdist: np.ndarray, own: np.ndarray, seed: int) -> dict:
    """Silhouette (subsampled), Davies-Bouldin and inter/intra ratio; None where undefined."""
    n = z.shape[0]
    out = {
        "silhouette": None,
        "silhouette_samples": 0,
        "davies_bouldin": None,
        "inter_intra_ratio": None,
    }
    n_classes = cdist.shape[0]
    if n_classes < 2 or n_classes >= n:
        return out

    # Silhouette on a seeded subsample: its cost is quadratic in the points used.
    idx = np.arange(n)
    if n > SILHOUETTE_SAMPLES:
        idx = np.sort(np.random.default_rng(seed).choice(n, SILHOUETTE_SAMPLES, replace=False))
    sub = np.unique(labels[idx]).size
    if 2 <= sub < idx.size:
        out["silhouette"] = float(silhouette_score(z[idx], labels[idx]))
        out["silhouette_samples"] = int(idx.size)
    out["davies_bouldin"] = float(davies_bouldin_score(z, labels))
    inter = float(cdist[np.triu_indices(n_classes, 1)].mean())
    intra = float(own.mean())
    out["inter_intra_ratio"] = inter / intra if intra > 0 else None
    return out
