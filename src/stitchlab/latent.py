"""Statistics of one latent space: per-dimension moments, dead units, class geometry."""

from __future__ import annotations

import numpy as np


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
