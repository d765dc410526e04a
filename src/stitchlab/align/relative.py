"""Relative representations: each latent described by its cosine similarity to fixed anchors.

Moschella et al. 2023 ("Relative representations enable zero-shot latent space
communication", ICLR) replace a latent e_x by ``r_x = (cos(e_x, e_a))_{a in A}``, its cosine
similarity to the latents of a fixed set A of anchor inputs. If two encoders differ by an
angle-preserving map (rotation, reflection, permutation, uniform scale), their relative
representations agree, so a decoder trained on one encoder's relative coordinates can be fed
another's with no fitted map at all.

This module only computes the coordinates. The decoders that read them must be trained
(`stitchlab.align.experiments.train_relative_decoder`), which makes the method opt-in and
slower than the others; it is not part of the default anchor sweep.

Because the encoders end in a ReLU, their latents are non-negative and all cosines are >= 0;
``center=True`` subtracts the anchors' mean latent first, which spreads the cosines over
[-1, 1]. A latent equal to the centre (or zero) has all similarities 0.

Measured with ``experiments.relative_matrix(..., anchors=100, epochs=3)`` on the 20,000
training latents of the tiny test pair (seeds 42 and 123, 3 epochs): relative decoders score
94.3% and 94.0% on their own encoders and 92.1% and 93.0% with the encoders swapped; with
``center=True`` 94.8%/94.5% and 92.6%/93.4%.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Aligner, AlignmentError, as_latents, buffer, check_count


class RelativeMap(Aligner):
    """``z -> cos(z - c, A - c)``: cosine similarities (n, k) to k anchor latents A (k, d_s).

    Buffers: ``anchors`` (k, d_s), ``center`` (d_s,) (zeros unless fitted with center=True).
    The output width `target_dim` is k, the input width of a relative decoder.
    """

    kind = "relative"

    def __init__(self, method: str, anchors, center, options: dict[str, Any] | None = None):
        anchors = torch.as_tensor(anchors)
        super().__init__(method, anchors.shape[1], anchors.shape[0], options)
        self.register_buffer("anchors", anchors)
        self.register_buffer("center", torch.as_tensor(center))

    @classmethod
    def empty(cls, metadata, shapes):
        k, d = shapes["anchors"]
        return cls(metadata["method"], torch.zeros(k, d), torch.zeros(d), metadata.get("options"))

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        a = F.normalize(self.anchors - self.center, dim=1)  # (k, d_s)
        return F.normalize(z - self.center, dim=1) @ a.T  # (n, k)


def fit_relative(source, target=None, *, center: bool = False) -> RelativeMap:
    """The relative projection of one space, defined by its latents of the anchor inputs.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s), this encoder's latents of the anchors
    target : optional array of shape (n_anchors, d_t), the other encoder's latents of the same
        anchors; not used by the map (each space is projected on its own), only checked to
        hold as many rows, so that ``fit("relative", a, b)`` matches the other methods
    center : subtract the anchors' mean latent before taking cosines

    Returns
    -------
    RelativeMap from (n, d_s) to (n, n_anchors); feed it to a decoder trained by
    `stitchlab.align.experiments.train_relative_decoder`, not to an ordinary decoder.

    Raises
    ------
    AlignmentError
        on NaN/inf or a target with a different number of anchors.
    NotEnoughAnchors
        with no anchors.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.abs(np.random.default_rng(0).normal(size=(20, 8)))
    >>> fit_relative(z[:5]).transform(z).shape
    torch.Size([20, 5])
    """
    method = "relative"
    xs = as_latents(source, method, "source")
    check_count(method, xs.shape[0], 1)
    if target is not None:
        xt = as_latents(target, method, "target")
        if xt.shape[0] != xs.shape[0]:
            raise AlignmentError(
                f"{method}: source has {xs.shape[0]} anchors but target has {xt.shape[0]}; "
                f"both must be latents of the same anchor inputs"
            )
    mean = xs.mean(0) if center else 0.0 * xs[0]
    return RelativeMap(method, buffer(xs), buffer(mean),
                       {"n_anchors": xs.shape[0], "center": bool(center)})
