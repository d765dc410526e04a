"""Permutation alignment: match dimensions one to one by correlation, then scale and shift each.

The d_s x d_t matrix of Pearson correlations between source and target dimensions over the
anchors is turned into an assignment by the Hungarian algorithm
(`scipy.optimize.linear_sum_assignment` on ``-|corr|``, or on ``-corr`` with
``absolute=False``). Each matched target dimension j is then fitted as ``a_j z_i + c_j`` by
least squares on its matched source dimension i. A dimension that is constant over the anchors
(a dead ReLU unit) has correlation 0 with everything and gets ``a_j = 0``, ``c_j`` = the target
mean; target dimensions left unmatched (d_t > d_s) are set to their anchor mean. No NaN arises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .base import Aligner, buffer, check_paired

_EPS = 1e-12  # variances below this (relative to the squared magnitude) count as constant


class PermutationMap(Aligner):
    """``z -> z[:, index] * scale + shift``.

    Buffers: ``index`` (d_t,) int64 source column feeding each target column, ``scale``
    (d_t,), ``shift`` (d_t,). Unmatched target columns have scale 0.
    """

    kind = "permutation"

    def __init__(self, method: str, index, scale, shift, source_dim: int,
                 options: dict[str, Any] | None = None):
        index = torch.as_tensor(index)
        super().__init__(method, source_dim, index.shape[0], options)
        self.register_buffer("index", index)
        self.register_buffer("scale", torch.as_tensor(scale))
        self.register_buffer("shift", torch.as_tensor(shift))

    @classmethod
    def empty(cls, metadata, shapes):
        (d_t,) = shapes["index"]
        return cls(metadata["method"], torch.zeros(d_t, dtype=torch.int64), torch.zeros(d_t),
                   torch.zeros(d_t), metadata["source_dim"], metadata.get("options"))

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, self.index] * self.scale + self.shift  # (n, d_t)


def correlation(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlations (d_s, d_t) with 0 for constant columns, and both sides' stds."""
    xc, yc = xs - xs.mean(0), xt - xt.mean(0)  # (n, d_s), (n, d_t)
    sx, sy = np.sqrt((xc**2).mean(0)), np.sqrt((yc**2).mean(0))  # (d_s,), (d_t,)
    live_x = sx > np.sqrt(_EPS) * np.maximum(1.0, np.abs(xs).max(0))
    live_y = sy > np.sqrt(_EPS) * np.maximum(1.0, np.abs(xt).max(0))
    cov = xc.T @ yc / xs.shape[0]  # (d_s, d_t)
    denom = np.outer(np.where(live_x, sx, 1.0), np.where(live_y, sy, 1.0))
    corr = np.where(np.outer(live_x, live_y), cov / denom, 0.0)
    return corr, np.where(live_x, sx, 0.0), cov


def fit_permutation(source, target, *, absolute: bool = True) -> PermutationMap:
    """One-to-one matching of dimensions by correlation, then per-dimension scale and shift.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s)
    target : array or tensor of shape (n_anchors, d_t)
    absolute : bool, default True; match on ``|corr|`` (a negatively correlated pair gets a
        negative scale); False matches on ``corr`` itself

    Returns
    -------
    PermutationMap; ``options["mean_matched_corr"]`` is the mean correlation of matched pairs.

    Raises
    ------
    AlignmentError
        on mismatched anchor counts or NaN/inf.
    NotEnoughAnchors
        with fewer than 2 anchors (a correlation needs two).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> fit_permutation(x, 3 * x[:, [2, 0, 3, 1]]).index.tolist()
    [2, 0, 3, 1]
    """
    xs, xt = check_paired("permutation", source, target, 2, "a correlation needs two")
    d_s, d_t = xs.shape[1], xt.shape[1]

    # 1. Hungarian assignment on the correlation matrix.
    corr, sx, cov = correlation(xs, xt)  # (d_s, d_t)
    rows, cols = linear_sum_assignment(-np.abs(corr) if absolute else -corr)

    # 2. Per matched pair, least squares t_j = a_j z_i + c_j (a_j = cov / var, 0 if constant).
    index = np.zeros(d_t, dtype=np.int64)
    scale = np.zeros(d_t)
    index[cols] = rows
    var = sx**2
    scale[cols] = np.where(var[rows] > 0, cov[rows, cols] / np.where(var[rows] > 0, var[rows], 1),
                           0.0)
    shift = xt.mean(0) - scale * xs.mean(0)[index]  # (d_t,)

    options = {
        "n_anchors": xs.shape[0],
        "absolute": bool(absolute),
        "mean_matched_corr": float(np.mean(corr[rows, cols])) if rows.size else 0.0,
    }
    return PermutationMap("permutation", buffer(index, torch.int64), buffer(scale),
                          buffer(shift), d_s, options)
