"""Affine maps fitted by least squares (`affine`) and by ridge regression (`ridge`).

`affine` solves ``min_{W, b} ||X W + 1 b^T - Y||_F^2`` exactly. It needs at least d_s + 1
anchors, one per unknown in each output column; just above that count the fit interpolates the
anchors' noise and its error on new samples explodes (the peak of "double descent").

`ridge` adds ``alpha ||W||_F^2`` (the bias is not penalised) and picks alpha by exact
leave-one-out cross-validation on the anchors: for any linear smoother with hat matrix H the
leave-one-out residual is ``e_i / (1 - H_ii)`` (Allen 1974, the PRESS statistic; Golub, Heath &
Wahba 1979). With the centred anchors ``X_c = U diag(s) V^T``,
``H = 1 1^T / n + U diag(s^2 / (s^2 + alpha)) U^T``, so the whole grid of alphas costs one SVD.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import Aligner, AlignmentError, buffer, check_count, check_paired

log = logging.getLogger(__name__)

# Relative alpha grid: multiples of the mean eigenvalue of X_c^T X_c, so it follows the scale.
DEFAULT_RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-6, 3, 28))


class LinearMap(Aligner):
    """``z -> z @ W + b``. Buffers: ``weight`` (d_s, d_t), ``bias`` (d_t,)."""

    kind = "linear"

    def __init__(self, method: str, weight, bias, options: dict[str, Any] | None = None):
        weight = torch.as_tensor(weight)
        super().__init__(method, weight.shape[0], weight.shape[1], options)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.as_tensor(bias))

    @classmethod
    def empty(cls, metadata, shapes):
        d_s, d_t = shapes["weight"]
        return cls(metadata["method"], torch.zeros(d_s, d_t), torch.zeros(d_t),
                   metadata.get("options"))

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, z, self.weight)  # (n, d_t)


def least_squares(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W (d_s, d_t) and b (d_t,) minimising ``||xs W + b - xt||``; minimum norm if singular."""
    design = np.hstack([xs, np.ones((xs.shape[0], 1))])  # (n, d_s + 1)
    coef, *_ = np.linalg.lstsq(design, xt, rcond=None)  # (d_s + 1, d_t)
    return coef[:-1], coef[-1]


def fit_affine(source, target) -> LinearMap:
    """Affine least squares from source to target latents of the same anchors.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s)
    target : array or tensor of shape (n_anchors, d_t)

    Returns
    -------
    LinearMap

    Raises
    ------
    AlignmentError
        on mismatched anchor counts or NaN/inf.
    NotEnoughAnchors
        with fewer than d_s + 1 anchors (use ``ridge`` there).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> a = fit_affine(x, 2 * x - 1)
    >>> a.weight.shape
    torch.Size([3, 3])
    """
    xs, xt = check_paired("affine", source, target, 1)
    d_s = xs.shape[1]
    check_count("affine", xs.shape[0], d_s + 1, f"d_s + 1 = {d_s + 1}, one per weight and bias")
    weight, bias = least_squares(xs, xt)
    return LinearMap("affine", buffer(weight), buffer(bias), {"n_anchors": xs.shape[0]})


def loo_errors(xs: np.ndarray, xt: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Leave-one-out mean squared error of ridge (unpenalised bias) for each alpha, shape (k,)."""
    n = xs.shape[0]

    # 1. SVD of the centred source anchors; the bias is the target mean.
    xc = xs - xs.mean(0)  # (n, d_s)
    yc = xt - xt.mean(0)  # (n, d_t)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)  # (n, r), (r,)
    uty = u.T @ yc  # (r, d_t)

    # 2. For each alpha: fitted values, hat diagonal, PRESS residuals e_i / (1 - H_ii).
    out = np.empty(len(alphas))
    for i, alpha in enumerate(alphas):
        shrink = s**2 / (s**2 + alpha)  # (r,)
        fitted = u @ (shrink[:, None] * uty)  # (n, d_t), centred
        hat = 1.0 / n + (u**2) @ shrink  # (n,)
        resid = (yc - fitted) / np.maximum(1.0 - hat, 1e-12)[:, None]  # (n, d_t)
        out[i] = float(np.mean(resid**2))
    return out


def ridge_solution(xs: np.ndarray, xt: np.ndarray, alpha: float):
    """W (d_s, d_t) and b (d_t,) of ridge with penalty `alpha` on W only."""
    mx, my = xs.mean(0), xt.mean(0)
    xc = xs - mx  # (n, d_s)
    gram = xc.T @ xc + alpha * np.eye(xs.shape[1])  # (d_s, d_s)
    weight, *_ = np.linalg.lstsq(gram, xc.T @ (xt - my), rcond=None)  # (d_s, d_t)
    return weight, my - mx @ weight


def fit_ridge(source, target, *, alphas: Sequence[float] | None = None,
              alpha: float | None = None) -> LinearMap:
    """Ridge regression from source to target latents, alpha chosen by leave-one-out.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s)
    target : array or tensor of shape (n_anchors, d_t)
    alphas : candidate penalties, relative to the mean eigenvalue of the centred anchors'
        ``X^T X`` (so the grid follows the latents' scale); default ``logspace(-6, 3, 28)``.
        Ties go to the largest alpha.
    alpha : a fixed absolute penalty instead of cross-validation

    Returns
    -------
    LinearMap; ``options["alpha"]`` holds the absolute penalty used.

    Raises
    ------
    AlignmentError
        on mismatched anchor counts, NaN/inf, or a negative or empty alpha grid.
    NotEnoughAnchors
        with fewer than 2 anchors (leave-one-out needs two).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(10, 32))
    >>> fit_ridge(x, x + 1).target_dim
    32
    """
    xs, xt = check_paired("ridge", source, target, 2, "leave-one-out needs two")

    # 1. The penalty: fixed, or the leave-one-out best of the relative grid.
    if alpha is not None:
        if not alpha >= 0:
            raise AlignmentError(f"ridge: alpha must be >= 0, got {alpha}")
        chosen, relative = float(alpha), None
    else:
        grid = np.asarray(DEFAULT_RELATIVE_ALPHAS if alphas is None else alphas, dtype=float)
        if grid.size == 0 or not np.all(grid > 0):
            raise AlignmentError(
                f"ridge: alphas must be a non-empty list of positive numbers, got {list(grid)}"
            )
        grid = np.sort(grid)[::-1]  # largest first, so that argmin breaks ties towards it
        unit = max(float(np.sum((xs - xs.mean(0)) ** 2)) / xs.shape[1], 1e-300)
        errors = loo_errors(xs, xt, grid * unit)
        relative = float(grid[int(np.argmin(errors))])
        chosen = relative * unit
        log.debug("ridge: leave-one-out picked alpha %.3g (relative %.3g)", chosen, relative)

    # 2. Solve with that penalty.
    weight, bias = ridge_solution(xs, xt, chosen)
    options = {"n_anchors": xs.shape[0], "alpha": chosen, "relative_alpha": relative}
    return LinearMap("ridge", buffer(weight), buffer(bias), options)
