"""Orthogonal Procrustes alignment: centre, scale, rotate (Schönemann 1966; Umeyama 1991).

Both sides are centred on their anchor mean and divided by the Frobenius norm of the centred
anchors. The rotation R minimises ``||X R - Y||_F`` over (semi-)orthogonal R and is
``R = U V^T`` from the SVD ``X^T Y = U S V^T`` of the cross-covariance (Schönemann 1966). With
``allow_reflection=False`` the sign of the last singular direction is flipped when
``det(U V^T) = -1`` (the correction matrix S of Umeyama 1991). The sign is read from U and V,
never from ``det(X^T Y)``, which is zero when there are fewer anchors than dimensions; flipping
the direction of the smallest singular value then costs nothing, so R is still optimal.

When d_s != d_t, R has shape (d_s, d_t) with orthonormal rows or columns (a semi-orthogonal
map); a determinant is undefined there, so ``allow_reflection=False`` is rejected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Aligner, AlignmentError, NotEnoughAnchors, buffer, check_paired


class ProcrustesMap(Aligner):
    """``z -> ((z - mu_s) / s_s) @ R * s_t + mu_t``.

    Buffers: ``source_mean`` (d_s,), ``source_scale`` (), ``rotation`` (d_s, d_t),
    ``target_scale`` (), ``target_mean`` (d_t,).
    """

    kind = "procrustes"

    def __init__(self, method: str, source_mean, source_scale, rotation, target_scale,
                 target_mean, options: dict[str, Any] | None = None):
        rotation = torch.as_tensor(rotation)
        super().__init__(method, rotation.shape[0], rotation.shape[1], options)
        self.register_buffer("source_mean", torch.as_tensor(source_mean))
        self.register_buffer("source_scale", torch.as_tensor(source_scale))
        self.register_buffer("rotation", rotation)
        self.register_buffer("target_scale", torch.as_tensor(target_scale))
        self.register_buffer("target_mean", torch.as_tensor(target_mean))

    @classmethod
    def empty(cls, metadata, shapes):
        names = ("source_mean", "source_scale", "rotation", "target_scale", "target_mean")
        return cls(metadata["method"], *(torch.zeros(shapes[k]) for k in names),
                   options=metadata.get("options"))

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        u = (z - self.source_mean) / self.source_scale  # (n, d_s)
        return (u @ self.rotation) * self.target_scale + self.target_mean  # (n, d_t)


def procrustes_rotation(cross: np.ndarray, allow_reflection: bool = True) -> np.ndarray:
    """The (semi-)orthogonal R maximising ``trace(R^T C)`` for a cross-covariance C.

    Parameters
    ----------
    cross : array of shape (d_s, d_t), ``X^T Y`` of the centred, scaled anchors
    allow_reflection : if False (square C only), R is a proper rotation, ``det(R) = +1``

    Returns
    -------
    array of shape (d_s, d_t)
    """
    # 1. SVD of the cross-covariance: C = U diag(s) V^T (Schönemann 1966).
    square = cross.shape[0] == cross.shape[1]
    u, _, vt = np.linalg.svd(cross, full_matrices=square)  # (d_s, k), (k,), (k, d_t)

    # 2. Umeyama's S: flip the least significant direction if U V^T would reflect.
    if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        u = u.copy()
        u[:, -1] = -u[:, -1]
    return u @ vt  # (d_s, d_t)


def centre_and_scale(x: np.ndarray, method: str, name: str):
    """Mean (d,), Frobenius norm of the centred rows (scalar) and the normalised rows (n, d)."""
    mean = x.mean(0)  # (d,)
    xc = x - mean  # (n, d)
    scale = float(np.linalg.norm(xc))
    if not scale > 1e-12 * max(1.0, float(np.abs(x).max())):
        raise NotEnoughAnchors(
            f"{method}: all {x.shape[0]} {name} points are identical, so their scale is zero; "
            f"it needs at least 2 distinct points"
        )
    return mean, scale, xc / scale


def procrustes_map(method: str, xs: np.ndarray, xt: np.ndarray, allow_reflection: bool,
                   options: dict[str, Any]) -> ProcrustesMap:
    """Fit centre + scale + rotation on checked float64 arrays of the same row count."""
    if not allow_reflection and xs.shape[1] != xt.shape[1]:
        raise AlignmentError(
            f"{method}: allow_reflection=False needs equal widths (a determinant is defined only "
            f"for square maps), got d_s={xs.shape[1]}, d_t={xt.shape[1]}; keep the default True"
        )

    # 1. Centre and scale each side with its own anchor statistics.
    mu_s, s_s, u = centre_and_scale(xs, method, "source")  # u: (n, d_s)
    mu_t, s_t, v = centre_and_scale(xt, method, "target")  # v: (n, d_t)

    # 2. Rotation from the SVD of the cross-covariance.
    rotation = procrustes_rotation(u.T @ v, allow_reflection)  # (d_s, d_t)
    return ProcrustesMap(
        method, buffer(mu_s), buffer(np.float64(s_s)), buffer(rotation), buffer(np.float64(s_t)),
        buffer(mu_t), {**options, "allow_reflection": bool(allow_reflection)},
    )


def fit_procrustes(source, target, *, allow_reflection: bool = True) -> ProcrustesMap:
    """Orthogonal Procrustes between the latents of the same anchors in two spaces.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s), encoder A's latents of the anchors
    target : array or tensor of shape (n_anchors, d_t), encoder B's latents of the same anchors
    allow_reflection : bool, default True; False forces ``det(R) = +1`` (needs d_s == d_t)

    Returns
    -------
    ProcrustesMap

    Raises
    ------
    AlignmentError
        on mismatched anchor counts, NaN/inf, or allow_reflection=False with unequal widths.
    NotEnoughAnchors
        with fewer than 2 anchors or when all anchors of one side coincide.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 8))
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
    >>> a = fit_procrustes(x, x @ q + 3.0)
    >>> bool(np.allclose(a.transform(x[:5]).numpy(), x[:5] @ q + 3.0, atol=1e-4))
    True
    """
    xs, xt = check_paired("procrustes", source, target, 2)
    return procrustes_map("procrustes", xs, xt, allow_reflection, {"n_anchors": xs.shape[0]})
