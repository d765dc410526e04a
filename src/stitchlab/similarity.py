"""Similarity and distance measures between two latent spaces of the same inputs.

Every measure takes two arrays of shape (n_samples, d1) and (n_samples, d2), row i of each being
the latent of the same input under two models (widths may differ), and returns a Python float
computed in float64. Torch tensors are accepted and copied to numpy. Bad input (mismatched sample
counts, NaN or inf, too few samples, constant input a measure cannot use) raises ValueError whose
message starts with the function's name; no measure returns NaN.

No measure builds an n x n matrix: the linear-kernel CKA variants work in feature space, RBF CKA
builds its kernels in row blocks of ``_BLOCK_ROWS`` x n, RSA subsamples points, and mutual k-NN
uses scikit-learn's chunked brute-force search.

Timing: ``PYTHONPATH=src python benchmarks/bench_similarity.py --blas-threads 1`` runs all eleven
measures on one pair of 10,000 x 32 ReLU-like latents in 1.7 s of CPU time (median of 3 repeats,
2-core shared machine); RBF CKA and mutual k-NN take 0.7 s each, the other nine 0.3 s together.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import rankdata
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)

_BLOCK_ROWS = 512  # rows of an RBF kernel held at once: a block is _BLOCK_ROWS x n float64
_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------------
# Input checks and shared pieces
# ---------------------------------------------------------------------------------------------


def _to_float64(a: Any, func: str, name: str) -> np.ndarray:
    """Return `a` as a finite float64 array of shape (n, d), or raise naming `func` and `name`."""
    if hasattr(a, "detach"):  # a torch tensor; .double() also handles bfloat16 and half
        a = a.detach().cpu().double().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{func}: {name} must be a numeric array or tensor of shape (n_samples, n_features); "
            f"got {type(a).__name__}"
        ) from exc
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(
            f"{func}: {name} must have shape (n_samples, n_features) with n_features >= 1; "
            f"got shape {arr.shape}. Reshape a single feature to (n, 1)."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{func}: {name} contains {int(bad.sum())} NaN or infinite values (first at row "
            f"{row}, column {col}); only finite values are allowed. Check the encoder's output."
        )
    return arr


def _check_pair(x: Any, y: Any, func: str, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Convert and check both arguments: same number of rows, at least `min_samples` of them."""
    x, y = _to_float64(x, func, "x"), _to_float64(y, func, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{func}: x and y must hold the same inputs row by row; got {x.shape[0]} rows in x "
            f"and {y.shape[0]} in y. Encode the same inputs, in the same order, with both models."
        )
    if x.shape[0] < min_samples:
        raise ValueError(
            f"{func}: needs at least {min_samples} samples; got {x.shape[0]}. Pass more inputs."
        )
    return x, y


def _centre(x: np.ndarray) -> np.ndarray:
    """Subtract column means and set constant columns to exactly zero, shape (n, d).

    A constant column can centre to +-1 ulp rather than 0; zeroing it keeps such noise from
    being read as signal by a scale-invariant measure.
    """
    xc = x - x.mean(axis=0)  # (n, d)
    xc[:, np.ptp(x, axis=0) == 0] = 0.0
    return xc


def _require_variance(xc: np.ndarray, func: str, name: str) -> float:
    """Frobenius norm of centred `xc`; raise when it is zero (every column constant)."""
    norm = float(np.linalg.norm(xc))
    if norm == 0.0:
        raise ValueError(
            f"{func}: every column of {name} is constant (all-zero or dead units only), so the "
            f"measure is undefined; drop this model or check that its encoder is not collapsed."
        )
    return norm


def _spearman(a: np.ndarray, b: np.ndarray, func: str, what: str) -> float:
    """Spearman correlation of two 1-D arrays: Pearson correlation of their average ranks."""
    ra, rb = rankdata(a), rankdata(b)  # (m,), (m,), ties get their average rank
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if den == 0.0:
        raise ValueError(
            f"{func}: the {what} of x or of y are all equal, so their rank correlation is "
            f"undefined; the input has too few distinct points."
        )
    return float(np.clip(ra @ rb / den, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# CKA family
# ---------------------------------------------------------------------------------------------


def linear_cka(x, y) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019, ICML), a similarity in [0, 1].

    With column-centred X and Y (Kornblith et al. 2019, Sec. 3, the linear-kernel form of their
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)))::

        CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

    computed in feature space, O(n (d1 + d2)^2), with no n x n matrix and no subsampling. This is
    the biased (plug-in) HSIC estimator; see `debiased_cka` for the unbiased one.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)

    Returns
    -------
    float
        1 for representations equal up to rotation and isotropic scaling. Constant (dead)
        columns contribute nothing after centring and need no special treatment.

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 2 samples, or an input whose columns are all
        constant.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 5))
    >>> round(linear_cka(x, 3 * x), 6)
    1.0
    """
    # 1. Centre, and scale each side to unit Frobenius norm so no product overflows.
    x, y = _check_pair(x, y, "linear_cka")
    xc, yc = _centre(x), _centre(y)
    xc /= _require_variance(xc, "linear_cka", "x")  # (n, d1)
    yc /= _require_variance(yc, "linear_cka", "y")  # (n, d2)

    # 2. The three Frobenius norms of the cross- and self-covariances.
    num = float(np.sum((yc.T @ xc) ** 2))
    den = float(np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    return float(min(1.0, num / den))


def _unbiased_hsic(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """Unbiased HSIC of linear kernels K = X X^T, L = Y Y^T in feature space.

    Song et al. 2012 (JMLR 13), the estimator used by Nguyen et al. 2021 (ICLR), eq. 3::

        HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1]
                       / (n (n-3))

    with K~, L~ the Gram matrices with zeroed diagonal. Each term is rewritten with d x d and
    length-n quantities so that no n x n matrix is formed. Works on a stack of batches: inputs of
    shape (..., n, d1) and (..., n, d2) give an array of shape (...).
    """
    n = xc.shape[-2]
    kd = np.einsum("...ij,...ij->...i", xc, xc)  # (..., n)  diagonal of K
    ld = np.einsum("...ij,...ij->...i", yc, yc)  # (..., n)  diagonal of L

    # tr(K~ L~) = sum_ij K_ij L_ij - sum_i K_ii L_ii, and sum_ij K_ij L_ij = ||X^T Y||_F^2.
    cross = np.swapaxes(xc, -1, -2) @ yc  # (..., d1, d2)
    trace = np.sum(cross**2, axis=(-2, -1)) - np.sum(kd * ld, axis=-1)

    # K~ 1 = X (X^T 1) - diag(K); likewise for L.
    k1 = np.einsum("...ij,...j->...i", xc, xc.sum(axis=-2)) - kd  # (..., n)
    l1 = np.einsum("...ij,...j->...i", yc, yc.sum(axis=-2)) - ld  # (..., n)
    middle = k1.sum(axis=-1) * l1.sum(axis=-1) / ((n - 1) * (n - 2))
    last = 2.0 / (n - 2) * np.sum(k1 * l1, axis=-1)
    return (trace + middle - last) / (n * (n - 3))


def _cka_from_hsic(kl: float, kk: float, ll: float, func: str) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), checking the denominator."""
    if not (kk > 0.0 and ll > 0.0):
        raise ValueError(
            f"{func}: the unbiased self-similarity HSIC(x, x) = {kk:.3g} or HSIC(y, y) = "
            f"{ll:.3g} is not positive, so CKA is undefined; the input has (almost) no variance "
            f"over these samples. Use more samples or linear_cka."
        )
    # The unbiased HSIC is an inner product of U-centred Gram matrices, so |CKA| <= 1; clip the
    # rounding only.
    return float(np.clip(kl / math.sqrt(kk * ll), -1.0, 1.0))


def debiased_cka(x, y) -> float:
    """Linear CKA from the unbiased HSIC estimator, a similarity in [-1, 1], near 0 when unrelated.

    CKA = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)) with linear kernels and the unbiased
    HSIC_1 of Song et al. 2012 (JMLR 13), as used by Nguyen, Raghu & Kornblith 2021 (ICLR, eq. 3).
    Unlike `linear_cka`, its value for independent representations does not grow as the number
    of samples falls. Computed exactly in feature space on all samples (no n x n matrix, no
    subsampling); constant (dead) columns contribute nothing.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)

    Returns
    -------
    float
        1 for representations equal up to rotation and isotropic scaling; may be slightly
        negative for unrelated ones.

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 4 samples (the estimator divides by n - 3), or
        an input without variance.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> abs(debiased_cka(rng.normal(size=(500, 4)), rng.normal(size=(500, 4)))) < 0.05
    True
    """
    # 1. Centre (the estimator is shift-invariant; centring only reduces rounding) and scale.
    x, y = _check_pair(x, y, "debiased_cka", min_samples=4)
    xc, yc = _centre(x), _centre(y)
    xc /= _require_variance(xc, "debiased_cka", "x")  # (n, d1)
    yc /= _require_variance(yc, "debiased_cka", "y")  # (n, d2)

    # 2. Three unbiased HSICs, then their normalised ratio.
    kl = float(_unbiased_hsic(xc, yc))
    kk = float(_unbiased_hsic(xc, xc))
    ll = float(_unbiased_hsic(yc, yc))
    return _cka_from_hsic(kl, kk, ll, "debiased_cka")


def minibatch_cka(x, y, batch_size: int = 256, *, seed: int | None = 0) -> float:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021, ICLR, eq. 2).

    The samples are split into batches of `batch_size` (after a seeded shuffle), and::

        CKA = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i))

    with the unbiased HSIC_1 of eq. 3 (Song et al. 2012) on each batch. Because HSIC_1 is
    unbiased, the value does not depend on the batch size in expectation. A last partial batch is
    kept when it has at least 4 samples, else dropped. A similarity in [-1, 1]; constant (dead)
    columns contribute nothing.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    batch_size : int, default 256
        Samples per batch, at least 4. With fewer samples than this, one batch holds them all.
    seed : int or None, default 0
        Seed of the shuffle that forms the batches; None keeps the given order.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 4 samples, `batch_size` below 4, or an input
        without variance within the batches.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(1000, 8))
    >>> round(minibatch_cka(x, x, batch_size=100), 6)
    1.0
    """
    # 1. Check, centre and scale as in debiased_cka.
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"minibatch_cka: batch_size must be an int; got {batch_size!r}")
    if batch_size < 4:
        raise ValueError(
            f"minibatch_cka: batch_size must be at least 4 (HSIC_1 divides by n - 3); "
            f"got {batch_size}"
        )
    x, y = _check_pair(x, y, "minibatch_cka", min_samples=4)
    xc, yc = _centre(x), _centre(y)
    xc /= _require_variance(xc, "minibatch_cka", "x")  # (n, d1)
    yc /= _require_variance(yc, "minibatch_cka", "y")  # (n, d2)

    # 2. Form the batches: full ones stacked, plus the remainder when it is usable.
    n = xc.shape[0]
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    size = min(batch_size, n)
    n_full = n // size
    full = order[: n_full * size].reshape(n_full, size)  # (k, b)
    rest = order[n_full * size :]
    batches = [(xc[full], yc[full])]  # (k, b, d1), (k, b, d2)
    if rest.size >= 4:
        batches.append((xc[rest][None], yc[rest][None]))
    elif rest.size:
        logger.debug("minibatch_cka: dropped a last batch of %d samples (< 4)", rest.size)

    # 3. Sum HSIC_1 over all batches; the 1/k of eq. 2 cancels in the ratio.
    kl = kk = ll = 0.0
    for xb, yb in batches:
        kl += float(_unbiased_hsic(xb, yb).sum())
        kk += float(_unbiased_hsic(xb, xb).sum())
        ll += float(_unbiased_hsic(yb, yb).sum())
    return _cka_from_hsic(kl, kk, ll, "minibatch_cka")


def _median_distance(x: np.ndarray, max_samples: int, rng: np.random.Generator) -> float:
    """Median Euclidean distance over distinct pairs of (at most `max_samples`) rows of x."""
    if x.shape[0] > max_samples:
        x = x[np.sort(rng.choice(x.shape[0], max_samples, replace=False))]
    return float(np.median(pdist(x)))


def rbf_cka(
    x,
    y,
    sigma: float | tuple[float, float] | None = None,
    *,
    median_fraction: float = 0.8,
    median_samples: int = 2000,
    seed: int = 0,
) -> float:
    """CKA with Gaussian (RBF) kernels (Kornblith et al. 2019, ICML), a similarity in [0, 1].

    K_ij = exp(-||x_i - x_j||^2 / (2 sigma_x^2)), likewise L for y, and the biased
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with HSIC(K, L) = tr(K H L H) / (n - 1)^2
    (Kornblith et al. 2019, Sec. 3). When `sigma` is None each side takes its own bandwidth,
    ``sigma = median_fraction * median pairwise distance`` as in Kornblith et al. 2019, who
    report fractions 0.2, 0.4 and 0.8; this uses 0.8 by default and takes the median over the
    distinct pairs of at most `median_samples` seeded rows. As sigma grows, RBF CKA tends to
    linear CKA.

    The kernel sums are exact over all samples: K and L are built in row blocks of at most
    512 x n on and above the diagonal (no n x n matrix, no subsampling); the cost is
    O(n^2 (d1 + d2)). Constant (dead) columns do not change distances and need no treatment.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    sigma : float, pair of floats, or None, default None
        Bandwidth for both sides, (sigma_x, sigma_y), or None for the median heuristic.
    median_fraction : float, default 0.8
        Multiplier of the median distance when `sigma` is None.
    median_samples : int, default 2000
        Most rows used to estimate each median distance.
    seed : int, default 0
        Seed of the row subsample for the median.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 2 samples, a non-positive sigma, a zero median
        distance (more than half the pairs coincide; pass `sigma`), or a constant input.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 5))
    >>> round(rbf_cka(x, x), 6)
    1.0
    """
    # 1. Check input and settle the two bandwidths.
    x, y = _check_pair(x, y, "rbf_cka")
    if sigma is None:
        if not median_fraction > 0:
            raise ValueError(f"rbf_cka: median_fraction must be > 0; got {median_fraction}")
        rng = np.random.default_rng(seed)
        sigmas = []
        for name, a in (("x", x), ("y", y)):
            med = _median_distance(a, median_samples, rng)
            if med == 0.0:
                raise ValueError(
                    f"rbf_cka: the median pairwise distance of {name} is 0 (most of its points "
                    f"coincide, or it is constant), so the median heuristic gives no bandwidth; "
                    f"pass sigma explicitly."
                )
            sigmas.append(median_fraction * med)
        sigma_x, sigma_y = sigmas
    else:
        if np.isscalar(sigma):
            sigma_x = sigma_y = sigma
        elif len(sigma) == 2:
            sigma_x, sigma_y = sigma
        else:
            raise ValueError(f"rbf_cka: sigma must be a float or a pair of floats; got {sigma!r}")
        if not (np.isfinite(sigma_x) and np.isfinite(sigma_y) and sigma_x > 0 and sigma_y > 0):
            raise ValueError(f"rbf_cka: sigma must be finite and > 0; got {sigma!r}")
    logger.debug("rbf_cka: sigma_x=%.4g sigma_y=%.4g", sigma_x, sigma_y)

    # 2. Accumulate sum(K o L), sum(K o K), sum(L o L) and the row sums of K and L over the
    #    blocks on and above the diagonal (both kernels are symmetric).
    n = x.shape[0]
    fx, gx = _rbf_factors(x, sigma_x)  # (n, d1 + 2) each
    fy, gy = _rbf_factors(y, sigma_y)  # (n, d2 + 2) each
    s_kl = s_kk = s_ll = 0.0
    rk, rl = np.zeros(n), np.zeros(n)  # row sums of K - 1 and L - 1
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        b = stop - start
        kb = _rbf_block(fx[start:stop], gx[start:])  # (b, n - start): rows of K - 1
        lb = _rbf_block(fy[start:stop], gy[start:])  # (b, n - start): rows of L - 1
        # Entries right of the diagonal block stand for their mirror images too.
        kd, ld = kb[:, :b].copy(), lb[:, :b].copy()  # (b, b) diagonal blocks
        s_kl += 2.0 * float(np.vdot(kb, lb)) - float(np.vdot(kd, ld))
        s_kk += 2.0 * float(np.vdot(kb, kb)) - float(np.vdot(kd, kd))
        s_ll += 2.0 * float(np.vdot(lb, lb)) - float(np.vdot(ld, ld))
        rk[start:stop] += kb.sum(1)
        rl[start:stop] += lb.sum(1)
        rk[stop:] += kb[:, b:].sum(0)
        rl[stop:] += lb[:, b:].sum(0)

    # 3. tr(K H L H) = sum(K o L) - 2/n (K 1).(L 1) + (1^T K 1)(1^T L 1) / n^2.
    def centred_dot(s: float, ra: np.ndarray, rb: np.ndarray) -> float:
        return s - 2.0 / n * float(ra @ rb) + float(ra.sum()) * float(rb.sum()) / n**2

    kl, kk, ll = centred_dot(s_kl, rk, rl), centred_dot(s_kk, rk, rk), centred_dot(s_ll, rl, rl)
    scale = max(abs(s_kk), abs(s_ll), 1e-300)
    if kk <= scale * 1e-12 or ll <= scale * 1e-12:
        raise ValueError(
            "rbf_cka: the centred kernel of x or of y is (numerically) zero: the input is "
            "constant, or sigma is so large that every kernel entry rounds to the same value. "
            f"Got sigma_x={sigma_x:.3g}, sigma_y={sigma_y:.3g}; try the median heuristic."
        )
    return float(np.clip(kl / math.sqrt(kk * ll), 0.0, 1.0))


def _rbf_factors(x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Factors F, G of shape (n, d + 2) with F_i . G_j = -||x_i - x_j||^2 / (2 sigma^2).

    ||x_i - x_j||^2 = ||x_i||^2 + ||x_j||^2 - 2 x_i . x_j, so F = [x, ||x||^2, 1] and
    G = gamma [-2 x, 1, ||x||^2] with gamma = -1 / (2 sigma^2): one matrix product then gives a
    whole block of exponents. Features are centred first, which distances do not see and which
    keeps the squared norms small.
    """
    xc = x - x.mean(axis=0)  # (n, d)
    sq = np.einsum("ij,ij->i", xc, xc)[:, None]  # (n, 1)
    one = np.ones_like(sq)
    gamma = -0.5 / sigma**2
    return np.hstack([xc, sq, one]), gamma * np.hstack([-2.0 * xc, one, sq])


def _rbf_block(f_rows: np.ndarray, g_cols: np.ndarray) -> np.ndarray:
    """A block of K - 1 = expm1(F G^T), shape (rows, cols); exponents clipped at 0 (distance
    >= 0) against rounding. Evaluating K - 1 instead of K, which centring does not see, keeps
    precision when sigma is large and every K_ij is near 1."""
    e = f_rows @ g_cols.T  # (b, m)
    np.minimum(e, 0.0, out=e)
    return np.expm1(e, out=e)


# ---------------------------------------------------------------------------------------------
# CCA family
# ---------------------------------------------------------------------------------------------


def _svd_basis(x: np.ndarray, func: str, name: str):
    """Centre x, drop constant columns, and return the thin SVD truncated to numerical rank.

    Returns (u, s, vt) with u of shape (n, r) orthonormal, s of shape (r,) and vt of shape
    (r, d_kept), where d_kept counts the non-constant columns and r <= d_kept the rank.
    """
    keep = np.ptp(x, axis=0) > 0  # (d,)
    if not keep.any():
        raise ValueError(
            f"{func}: every column of {name} is constant (all-zero or dead units only), so "
            f"canonical correlations are undefined; drop this model or check its encoder."
        )
    if not keep.all():
        logger.debug("%s: dropped %d constant columns of %s", func, int((~keep).sum()), name)
    xc = x[:, keep] - x[:, keep].mean(axis=0)  # (n, d_kept)
    n, d = xc.shape
    if n <= d:
        raise ValueError(
            f"{func}: CCA needs more samples than non-constant columns; {name} has "
            f"n_samples={n} and {d} non-constant columns (of {x.shape[1]}). Pass more samples, "
            f"or use a CKA measure, which has no such limit."
        )
    u, s, vt = np.linalg.svd(xc, full_matrices=False)  # (n, d), (d,), (d, d)
    rank = int(np.sum(s > s[0] * max(n, d) * _EPS))
    return u[:, :rank], s[:rank], vt[:rank]


def _canonical(ux: np.ndarray, uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations of two orthonormal bases and the x-side canonical directions.

    The canonical correlations are the singular values of Ux^T Uy (Bjorck & Golub 1973), shape
    (min(rx, ry),); the directions a_i (columns of shape (rx, min(rx, ry))) give the canonical
    variates h_i = Ux a_i.
    """
    a, rho, _ = np.linalg.svd(ux.T @ uy, full_matrices=False)  # (rx, m), (m,)
    return np.clip(rho, 0.0, 1.0), a


def mean_cca(x, y) -> float:
    """Mean canonical correlation between x and y (Hotelling 1936), a similarity in [0, 1].

    The canonical correlations rho_1 >= ... >= rho_m, m = min(rank x, rank y), are the cosines
    of the principal angles between the column spaces of the centred inputs, computed from the
    singular values of Ux^T Uy where U are orthonormal bases from thin SVDs. Invariant to any
    invertible linear map of either side. Constant (dead) columns are dropped, and directions
    below numerical rank are ignored. Uses all samples; no subsampling.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)

    Returns
    -------
    float
        mean_i rho_i.

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, an all-constant input, or n_samples <= the number of
        non-constant columns of either side (CCA then finds perfect correlation in any input).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> round(mean_cca(x, x @ np.diag([1.0, 2.0, 3.0, 4.0])), 6)
    1.0
    """
    x, y = _check_pair(x, y, "mean_cca")
    ux = _svd_basis(x, "mean_cca", "x")[0]
    uy = _svd_basis(y, "mean_cca", "y")[0]
    rho, _ = _canonical(ux, uy)
    return float(rho.mean())


def svcca(x, y, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017, NeurIPS), a similarity in [0, 1].

    Step 1 (SVD): keep the fewest top singular directions of each centred input that explain at
    least `keep` of its variance. Step 2 (CCA): the mean canonical correlation between the two
    reduced representations. Invariant to rotation and isotropic scaling of either side (not to
    every invertible map, since step 1 depends on the spectrum). Constant (dead) columns are
    dropped before the SVD; no subsampling.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    keep : float, default 0.99
        Fraction of variance kept in step 1, in (0, 1].

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As `mean_cca`, and when `keep` is outside (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> round(svcca(x, 5 * x), 6)
    1.0
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"svcca: keep must be a variance fraction in (0, 1]; got {keep}")
    x, y = _check_pair(x, y, "svcca")

    # 1. SVD step: the smallest k whose top-k variance share reaches `keep`.
    bases = []
    for name, a in (("x", x), ("y", y)):
        u, s, _ = _svd_basis(a, "svcca", name)
        share = np.cumsum(s**2) / np.sum(s**2)  # (r,)
        k = min(int(np.searchsorted(share, keep * (1 - 1e-12))) + 1, s.size)
        bases.append(u[:, :k])  # (n, k)

    # 2. CCA step on the reduced representations.
    rho, _ = _canonical(*bases)
    return float(rho.mean())


def pwcca(x, y) -> float:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018, NeurIPS), a similarity in [0, 1].

    The paper's weighted mean rho_PW = sum_i alpha_i rho_i / sum_i alpha_i with
    alpha_i = sum_j |<h_i, x_j>|, where rho_i are the canonical correlations, h_i the unit
    canonical variates on the x side and x_j the centred columns (units) of x. The weights come
    from `x`, so the measure is asymmetric; ``pwcca(y, x)`` weights by y. Invariant to
    invertible linear maps of y and to isotropic scaling of x, but not to rotations of x, whose
    units it weighs. Constant (dead) columns are dropped (they would carry zero weight anyway);
    no subsampling.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
        The representation whose units define the weights.
    y : array or tensor of shape (n_samples, d2)

    Returns
    -------
    float

    Raises
    ------
    ValueError
        As `mean_cca`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> round(pwcca(x, x), 6)
    1.0
    """
    x, y = _check_pair(x, y, "pwcca")
    ux, sx, vtx = _svd_basis(x, "pwcca", "x")
    uy = _svd_basis(y, "pwcca", "y")[0]
    rho, a = _canonical(ux, uy)  # (m,), (rx, m)

    # <h_i, x_j> for all i, j: H^T Xc = A^T Ux^T (Ux S Vt) = A^T S Vt, shape (m, d_kept).
    alpha = np.abs(a.T @ (sx[:, None] * vtx)).sum(axis=1)  # (m,)
    return float(np.clip(alpha @ rho / alpha.sum(), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Shape metric, RSA, neighbourhoods
# ---------------------------------------------------------------------------------------------


def procrustes_distance(x, y) -> float:
    """Angular Procrustes shape distance (Williams et al. 2021, NeurIPS), a metric in [0, pi/2].

    After centring and scaling each side to unit Frobenius norm,
    ``theta = arccos ||X^T Y||_*``, the orthogonally invariant angular shape metric of
    "Generalized Shape Metrics on Neural Representations", 0 when y is a rotated, rescaled copy
    of x. The narrower input is zero-padded to the wider width, which leaves ||X^T Y||_*
    unchanged, so widths may differ.
    The angle is computed as 2 arcsin(||X - Y Q||_F / 2) with Q the optimal rotation, which is
    the same number but accurate near 0, where arccos is not. Constant (dead) columns are
    zero after centring and need no treatment; no subsampling.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)

    Returns
    -------
    float
        A distance: symmetric, satisfies the triangle inequality, 0 for identical shapes.

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 2 samples, or a constant input.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 3))
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    >>> procrustes_distance(x, 2 * x @ q) < 1e-6
    True
    """
    # 1. Centre, scale to unit norm, zero-pad to a common width.
    x, y = _check_pair(x, y, "procrustes_distance")
    xc, yc = _centre(x), _centre(y)
    xc /= _require_variance(xc, "procrustes_distance", "x")
    yc /= _require_variance(yc, "procrustes_distance", "y")
    d = max(xc.shape[1], yc.shape[1])
    xc = np.pad(xc, ((0, 0), (0, d - xc.shape[1])))  # (n, d)
    yc = np.pad(yc, ((0, 0), (0, d - yc.shape[1])))  # (n, d)

    # 2. Optimal rotation Q = U V^T from Y^T X = U S V^T, then the chord between X and Y Q.
    u, _, vt = np.linalg.svd(yc.T @ xc)  # (d, d) each
    chord = float(np.linalg.norm(xc - yc @ (u @ vt)))
    return float(2.0 * math.asin(min(1.0, chord / 2.0)))


def rsa(x, y, *, max_samples: int = 1000, seed: int = 0) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008), similarity in [-1, 1].

    Spearman correlation between the upper triangles of the two representational dissimilarity
    matrices (Euclidean distances between all pairs of samples). With more than `max_samples`
    samples, the same seeded subset of `max_samples` rows is used on both sides, so the cost is
    bounded (1000 rows: ~500,000 pairs, ~0.2 s). Constant (dead) columns do not change distances.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    max_samples : int, default 1000
        Most rows used; beyond it a seeded subsample is taken.
    seed : int, default 0
        Seed of that subsample.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, fewer than 3 samples, or an input whose sampled points all
        coincide (its distances are then all equal).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> round(rsa(x, 2 * x + 1), 6)
    1.0
    """
    if max_samples < 3:
        raise ValueError(f"rsa: max_samples must be at least 3; got {max_samples}")
    x, y = _check_pair(x, y, "rsa", min_samples=3)

    # 1. Subsample the same rows on both sides.
    if x.shape[0] > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False))
        x, y = x[idx], y[idx]
        logger.debug("rsa: subsampled %d of the rows (seed %d)", max_samples, seed)

    # 2. Condensed dissimilarity matrices, then their rank correlation.
    return _spearman(pdist(x), pdist(y), "rsa", "pairwise distances")


def _knn_sets(z: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest neighbours of every row, itself excluded, shape (n, k)."""
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(z)
    return nn.kneighbors(return_distance=False)


def mutual_knn(x, y, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, ICML), a similarity in [0, 1].

    "The Platonic Representation Hypothesis": after L2-normalising every row, take the
    k nearest neighbours of each sample (itself excluded) in x and in y; the score is the mean
    over samples of |N_x(i) & N_y(i)| / k. Exact over all samples (scikit-learn brute-force
    search, in chunks; no n x n matrix). All-zero (dead) columns do not change neighbours, but
    a constant non-zero column does, since rows are normalised without centring, as in the
    paper. All-zero rows cannot be normalised and stay at the origin (a RuntimeWarning says how
    many). Ties between equidistant neighbours are broken arbitrarily.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    k : int, default 10
        Neighbours per sample, 1 <= k <= n_samples - 1.

    Returns
    -------
    float
        1 when every sample has the same neighbours in both spaces; about k / n by chance.

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, `k` out of range, or an input whose rows all point the
        same way (constant or collapsed).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> mutual_knn(x, 2 * x, k=5)
    1.0
    """
    x, y = _check_pair(x, y, "mutual_knn", min_samples=2)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"mutual_knn: k must be an int in [1, n_samples - 1 = {n - 1}]; got {k!r}")

    # 1. Unit rows (zero rows kept at the origin).
    units = []
    for name, a in (("x", x), ("y", y)):
        norm = np.linalg.norm(a, axis=1, keepdims=True)  # (n, 1)
        zero = norm[:, 0] == 0
        unit = a / np.where(zero[:, None], 1.0, norm)  # (n, d)
        if np.ptp(unit, axis=0).max() == 0:
            raise ValueError(
                f"mutual_knn: after L2-normalisation every row of {name} is the same point, so "
                f"its neighbours are arbitrary; the input is constant or collapsed."
            )
        if zero.any():
            warnings.warn(
                f"mutual_knn: {int(zero.sum())} rows of {name} are all zero and cannot be "
                f"L2-normalised; they stay at the origin.",
                RuntimeWarning,
                stacklevel=2,
            )
        units.append(unit)

    # 2. Neighbour sets, then the shared count per row: in a row of the two sorted, concatenated
    #    index sets, every shared index appears twice, side by side.
    both = np.sort(np.hstack([_knn_sets(units[0], k), _knn_sets(units[1], k)]), axis=1)  # (n, 2k)
    shared = np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1)  # (n,)
    return float(shared.mean() / k)


def centroid_rsa(x, y, labels) -> float:
    """RSA on class centroids, a similarity in [-1, 1].

    The class-level variant of `rsa` (Kriegeskorte et al. 2008): the Spearman correlation
    between the upper triangles of the two C x C matrices of Euclidean distances between class
    centroids, for the C classes present in `labels`. Uses all samples. Constant (dead) columns
    do not change distances.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    labels : array of shape (n_samples,)
        Class of each sample; at least 3 distinct classes.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On mismatched rows, NaN/inf, labels of the wrong shape, fewer than 3 classes, or
        centroids that all lie at the same distance from each other in x or y.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(300) % 10
    >>> x = rng.normal(size=(10, 4))[labels] + 0.1 * rng.normal(size=(300, 4))
    >>> round(centroid_rsa(x, 3 * x, labels), 6)
    1.0
    """
    x, y = _check_pair(x, y, "centroid_rsa", min_samples=3)
    if labels is None:
        raise ValueError("centroid_rsa: labels are required (one class per sample); got None")
    labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"centroid_rsa: labels must have shape (n_samples,) = ({x.shape[0]},); "
            f"got {labels.shape}"
        )

    # 1. Centroids of the classes present, in the same class order on both sides.
    classes, inverse = np.unique(labels, return_inverse=True)
    if classes.size < 3:
        raise ValueError(
            f"centroid_rsa: needs at least 3 distinct classes for a rank correlation of their "
            f"distances; got {classes.size}"
        )
    counts = np.bincount(inverse).astype(np.float64)[:, None]  # (C, 1)
    cx = np.zeros((classes.size, x.shape[1]))
    cy = np.zeros((classes.size, y.shape[1]))
    np.add.at(cx, inverse, x)
    np.add.at(cy, inverse, y)

    # 2. Rank correlation of the condensed centroid distance matrices.
    return _spearman(pdist(cx / counts), pdist(cy / counts), "centroid_rsa", "centroid distances")


# ---------------------------------------------------------------------------------------------
# All measures at once
# ---------------------------------------------------------------------------------------------


def _without_labels(func: Callable[..., float]) -> Callable[[Any, Any, Any], float]:
    """Adapt a measure of (x, y) to the uniform signature (x, y, labels)."""

    def measure(x, y, labels=None) -> float:
        return func(x, y)

    measure.__name__ = func.__name__
    measure.__doc__ = func.__doc__
    return measure


MEASURES: dict[str, Callable[[Any, Any, Any], float]] = {
    "linear_cka": _without_labels(linear_cka),
    "debiased_cka": _without_labels(debiased_cka),
    "minibatch_cka": _without_labels(minibatch_cka),
    "rbf_cka": _without_labels(rbf_cka),
    "svcca": _without_labels(svcca),
    "pwcca": _without_labels(pwcca),
    "mean_cca": _without_labels(mean_cca),
    "procrustes_distance": _without_labels(procrustes_distance),
    "rsa": _without_labels(rsa),
    "mutual_knn": _without_labels(mutual_knn),
    "centroid_rsa": centroid_rsa,
}
"""Every measure by name, in report order, each called as ``f(x, y, labels)``."""

DISTANCES = frozenset({"procrustes_distance"})
"""Measures where larger means less alike; all others are similarities."""

ASYMMETRIC = frozenset({"pwcca"})
"""Measures where f(x, y) != f(y, x) in general."""

NEEDS_LABELS = frozenset({"centroid_rsa"})
"""Measures that use the class labels."""


def _resolve(measures: Sequence[str] | None, func: str, labels) -> list[str]:
    """The measure names to run, checked against MEASURES.

    None means all of them, less those in NEEDS_LABELS when there are no labels.
    """
    if measures is None:
        return [m for m in MEASURES if labels is not None or m not in NEEDS_LABELS]
    if isinstance(measures, str):
        measures = [measures]
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"{func}: unknown measures {unknown}; choose from {list(MEASURES)}")
    return list(measures)


def compare(x, y, labels=None, measures: Sequence[str] | None = None) -> dict[str, float]:
    """Run several measures on one pair of latent spaces.

    Parameters
    ----------
    x : array or tensor of shape (n_samples, d1)
    y : array or tensor of shape (n_samples, d2)
    labels : array of shape (n_samples,), optional
        Needed only by ``centroid_rsa``.
    measures : sequence of str, optional
        Names from `MEASURES`; when None, all of them (without ``centroid_rsa`` if `labels`
        is None).

    Returns
    -------
    dict of str to float
        In the order asked for.

    Raises
    ------
    ValueError
        For an unknown measure name, or whatever a measure raises for this input.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> compare(x, x, measures=["linear_cka", "procrustes_distance"])["linear_cka"]
    1.0
    """
    names = _resolve(measures, "compare", labels)
    x, y = _check_pair(x, y, "compare")
    return {name: MEASURES[name](x, y, labels) for name in names}


def similarity_matrix(
    latents: Mapping[str, Any], labels=None, measures: Sequence[str] | None = None
) -> dict:
    """Every measure for every ordered pair of models, as JSON-ready N x N lists.

    Entry [i][j] is ``measure(latents[model i], latents[model j])``. Symmetric measures are
    computed once per unordered pair (and on the diagonal); those in `ASYMMETRIC` are computed
    in both orders.

    Parameters
    ----------
    latents : mapping of model name to array of shape (n_samples, d_model)
        The latents of every model on the same inputs, in the same order.
    labels : array of shape (n_samples,), optional
        Needed only by ``centroid_rsa``.
    measures : sequence of str, optional
        Names from `MEASURES`; when None, all of them (without ``centroid_rsa`` if `labels`
        is None).

    Returns
    -------
    dict
        ``{"measures": [names], "models": [names], "values": {measure: N x N list of float}}``,
        the shape of the ``similarity`` section of results.json.

    Raises
    ------
    ValueError
        When `latents` is empty, the models' sample counts differ, or a measure fails.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = {"a": rng.normal(size=(50, 3)), "b": rng.normal(size=(50, 4))}
    >>> similarity_matrix(z, measures=["linear_cka"])["values"]["linear_cka"][0][0]
    1.0
    """
    # 1. Check the models once.
    names = _resolve(measures, "similarity_matrix", labels)
    models = list(latents)
    if not models:
        raise ValueError("similarity_matrix: latents is empty; pass at least one model")
    arrays = [_to_float64(latents[m], "similarity_matrix", f"latents[{m!r}]") for m in models]
    counts = {m: a.shape[0] for m, a in zip(models, arrays, strict=True)}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"similarity_matrix: every model must be encoded on the same inputs; got sample "
            f"counts {counts}"
        )

    # 2. Upper triangle for every measure, lower triangle mirrored or computed.
    size = len(models)
    values = {name: [[0.0] * size for _ in range(size)] for name in names}
    asym = [name for name in names if name in ASYMMETRIC]
    for i in range(size):
        for j in range(i, size):
            pair = compare(arrays[i], arrays[j], labels, names)
            back = compare(arrays[j], arrays[i], labels, asym) if asym and i != j else {}
            for name in names:
                values[name][i][j] = pair[name]
                values[name][j][i] = back.get(name, pair[name])
            logger.debug("similarity_matrix: %s vs %s done", models[i], models[j])
    return {"measures": names, "models": models, "values": values}


def rank_correlation_with_splice(values: Mapping[str, Any], splice_accuracy) -> dict:
    """Spearman correlation of each measure with splice accuracy over off-diagonal pairs.

    A measure that explains splice failure correlates positively (similarities) or negatively
    (those in `DISTANCES`) with the accuracy of encoder i spliced onto decoder j.

    Parameters
    ----------
    values : mapping of measure name to N x N array-like
        As in ``similarity_matrix(...)["values"]``; None or NaN entries are skipped.
    splice_accuracy : N x N array-like
        Row = encoder, column = decoder; None or NaN entries are skipped.

    Returns
    -------
    dict of str to dict
        ``{measure: {"spearman": float or None, "n_pairs": int}}``; None when fewer than 3
        usable pairs remain or either side is constant over them.

    Raises
    ------
    ValueError
        When `splice_accuracy` is not square or a measure's matrix has another shape.

    Examples
    --------
    >>> acc = [[0.99, 0.5, 0.2], [0.6, 0.98, 0.3], [0.1, 0.4, 0.99]]
    >>> sim = [[1.0, 0.8, 0.2], [0.9, 1.0, 0.5], [0.1, 0.6, 1.0]]
    >>> rank_correlation_with_splice({"linear_cka": sim}, acc)["linear_cka"]["n_pairs"]
    6
    """
    acc = np.array(splice_accuracy, dtype=np.float64)  # (N, N); None becomes NaN
    if acc.ndim != 2 or acc.shape[0] != acc.shape[1]:
        raise ValueError(
            f"rank_correlation_with_splice: splice_accuracy must be a square N x N matrix; got "
            f"shape {acc.shape}"
        )
    off = ~np.eye(acc.shape[0], dtype=bool)
    out = {}
    for name, matrix in values.items():
        v = np.array(matrix, dtype=np.float64)  # (N, N)
        if v.shape != acc.shape:
            raise ValueError(
                f"rank_correlation_with_splice: values[{name!r}] has shape {v.shape}, but "
                f"splice_accuracy has {acc.shape}; both must cover the same models"
            )
        use = off & np.isfinite(v) & np.isfinite(acc)
        a, b = v[use], acc[use]
        rho = None
        if a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            rho = _spearman(a, b, "rank_correlation_with_splice", "values")
        out[name] = {"spearman": rho, "n_pairs": int(a.size)}
    return out
