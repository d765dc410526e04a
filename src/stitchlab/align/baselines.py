"""Shape-only baselines for spaces of different widths: `zero_pad` and `truncate`.

Neither looks at the values of the latents. `zero_pad` feeds the d_s source dimensions into the
first d_s target dimensions and zeros into the rest (d_s <= d_t); `truncate` keeps the first d_t
source dimensions (d_s >= d_t). With equal widths both are the identity, i.e. the raw splice,
which is the point: they show what width-matching alone achieves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Aligner, AlignmentError, as_latents


class ShapeMap(Aligner):
    """Copy ``min(d_s, d_t)`` leading dimensions; pad the rest of the target with zeros.

    No buffers: the widths live in the metadata.
    """

    kind = "shape"

    def __init__(self, method: str, source_dim: int, target_dim: int,
                 options: dict[str, Any] | None = None):
        super().__init__(method, source_dim, target_dim, options)

    @classmethod
    def empty(cls, metadata, shapes):
        return cls(metadata["method"], metadata["source_dim"], metadata["target_dim"],
                   metadata.get("options"))

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        z = z[:, : self.target_dim]  # (n, min(d_s, d_t))
        return F.pad(z, (0, self.target_dim - z.shape[1]))  # (n, d_t)


def _widths(method: str, source, target) -> tuple[int, int]:
    d_s = as_latents(source, method, "source").shape[1]
    d_t = as_latents(target, method, "target").shape[1]
    return d_s, d_t


def fit_zero_pad(source, target) -> ShapeMap:
    """Append zeros to source latents up to the target width.

    Parameters
    ----------
    source : array or tensor of shape (n_s, d_s); only its width is used
    target : array or tensor of shape (n_t, d_t) with d_t >= d_s; only its width is used

    Returns
    -------
    ShapeMap with method ``"zero_pad"``

    Raises
    ------
    AlignmentError
        if d_s > d_t (use ``truncate``), or on NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> fit_zero_pad(np.ones((1, 2)), np.ones((1, 4))).transform(np.ones((1, 2))).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    d_s, d_t = _widths("zero_pad", source, target)
    if d_s > d_t:
        raise AlignmentError(
            f"zero_pad needs d_s <= d_t, got d_s={d_s}, d_t={d_t}; use truncate for a narrower "
            f"target"
        )
    return ShapeMap("zero_pad", d_s, d_t)


def fit_truncate(source, target) -> ShapeMap:
    """Keep the first d_t dimensions of source latents.

    Parameters
    ----------
    source : array or tensor of shape (n_s, d_s) with d_s >= d_t; only its width is used
    target : array or tensor of shape (n_t, d_t); only its width is used

    Returns
    -------
    ShapeMap with method ``"truncate"``

    Raises
    ------
    AlignmentError
        if d_s < d_t (use ``zero_pad``), or on NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> fit_truncate(np.ones((1, 4)), np.ones((1, 2))).transform(np.ones((1, 4))).shape
    torch.Size([1, 2])
    """
    d_s, d_t = _widths("truncate", source, target)
    if d_s < d_t:
        raise AlignmentError(
            f"truncate needs d_s >= d_t, got d_s={d_s}, d_t={d_t}; use zero_pad for a wider "
            f"target"
        )
    return ShapeMap("truncate", d_s, d_t)
