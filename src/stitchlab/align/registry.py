"""The table of alignment methods, and `fit` / `load`, the entry points over all of them."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

from .base import Aligner, AlignmentError, load_aligner
from .baselines import fit_truncate, fit_zero_pad
from .centroids import fit_centroids, fit_self_centroids
from .linear import fit_affine, fit_ridge
from .permutation import fit_permutation
from .procrustes import fit_procrustes
from .relative import fit_relative
from .stitch_layer import fit_stitch_layer

# What a method's `source` and `target` are (the anchor sweep builds its inputs from this):
PAIRED = "paired"  # latents of the same anchor inputs, row for row
CLASS_MEANS = "class_means"  # two different labelled samples
PREDICTED_CLASS_MEANS = "predicted_class_means"  # two different unlabelled samples
SHAPES = "shapes"  # only the widths are used
RELATIVE = "relative"  # the map projects one space; decoders must be trained for it


@dataclass(frozen=True)
class Method:
    """One alignment method: its fitting function and what it consumes."""

    name: str
    fit: Callable[..., Aligner]  # fit(source, target, **options) -> Aligner
    inputs: str  # PAIRED, CLASS_MEANS, PREDICTED_CLASS_MEANS, SHAPES or RELATIVE
    closed_form: bool  # False when fitting runs an optimiser (stitch_layer)
    summary: str  # one line for tables and --help

    def __call__(self, source, target=None, **options) -> Aligner:
        return self.fit(source, target, **options)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("procrustes", fit_procrustes, PAIRED, True,
               "centre, scale and rotate (orthogonal Procrustes)"),
        Method("affine", fit_affine, PAIRED, True, "least-squares affine map"),
        Method("ridge", fit_ridge, PAIRED, True,
               "affine map with an L2 penalty chosen by leave-one-out"),
        Method("permutation", fit_permutation, PAIRED, True,
               "match dimensions by correlation, then scale and shift each"),
        Method("stitch_layer", fit_stitch_layer, PAIRED, False,
               "linear layer trained through the frozen decoder on the anchors' labels"),
        Method("centroids", fit_centroids, CLASS_MEANS, True,
               "Procrustes between class means of two labelled samples"),
        Method("self_centroids", fit_self_centroids, PREDICTED_CLASS_MEANS, True,
               "Procrustes between predicted-class means of two unlabelled samples"),
        Method("relative", fit_relative, RELATIVE, True,
               "cosine similarities to anchors; needs relative decoders (opt-in, slow)"),
        Method("zero_pad", fit_zero_pad, SHAPES, True, "pad with zeros to the target width"),
        Method("truncate", fit_truncate, SHAPES, True, "keep the first d_t dimensions"),
    )
}


def get_method(method: str) -> Method:
    """The `Method` named `method`; AlignmentError listing the choices when unknown."""
    if method not in METHODS:
        raise AlignmentError(
            f"unknown alignment method {method!r}; choose one of {', '.join(METHODS)}"
        )
    return METHODS[method]


def fit(method: str, source, target=None, **options) -> Aligner:
    """Fit alignment `method` mapping the source space into the target space.

    Parameters
    ----------
    method : a key of `METHODS`: procrustes, affine, ridge, permutation, stitch_layer,
        centroids, self_centroids, relative, zero_pad, truncate
    source : array or tensor of shape (n, d_s), encoder A's latents. For paired methods these
        are the anchors; for ``centroids``/``self_centroids`` A's own sample of images.
    target : array or tensor of shape (n, d_t) (paired) or (m, d_t) (centroid methods),
        encoder B's latents; optional for ``stitch_layer`` and ``relative``
    **options : the method's keyword options, as documented by its ``fit_<method>`` function,
        e.g. ``allow_reflection=False`` (procrustes), ``labels=, decoder=`` (stitch_layer),
        ``source_labels=, target_labels=`` (centroids), ``source_decoder=, target_decoder=``
        (self_centroids)

    Returns
    -------
    Aligner; ``aligner.transform(z)`` maps (n, d_s) to (n, d_t)

    Raises
    ------
    AlignmentError
        (a ValueError) for an unknown method or option, mismatched anchor counts, NaN/inf;
        its subclass NotEnoughAnchors when there are too few anchors, saying how many.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(100, 32))
    >>> fit("procrustes", z, -z).transform(z[:2]).shape
    torch.Size([2, 32])
    """
    spec = get_method(method)
    accepted = [
        p.name for p in inspect.signature(spec.fit).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise AlignmentError(
            f"{method} got unknown option(s) {', '.join(unknown)}; it accepts "
            f"{', '.join(accepted) if accepted else 'no options'}"
        )
    return spec.fit(source, target, **options)


def load(path: str | os.PathLike) -> Aligner:
    """Read an aligner written by `Aligner.save` (see `stitchlab.align.base.load_aligner`).

    Parameters
    ----------
    path : safetensors file

    Returns
    -------
    Aligner with the saved method, options and tensors, bit for bit

    Raises
    ------
    CheckpointError
        if the file is missing, damaged or not an aligner file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> z = np.random.default_rng(0).normal(size=(50, 4))
    >>> path = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> fit("ridge", z, z + 1).save(path)
    >>> load(path).method
    'ridge'
    """
    return load_aligner(path)
