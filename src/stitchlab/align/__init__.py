"""Repair a splice: maps that carry encoder A's latents into the space decoder B expects.

``fit(method, source, target, **options)`` fits one of `METHODS` on anchor latents and returns
an `Aligner`, an ``nn.Module`` whose ``transform(z)`` maps (n, d_s) to (n, d_t) and which drops
into ``stitchlab.models.splice(encoder_a, decoder_b, aligner)``. ``aligner.save(path)`` and
``load(path)`` round-trip it bit for bit through safetensors.

Methods (each documented by its ``fit_<name>`` function):

- ``procrustes``: centre, scale and rotate (orthogonal, reflections optional);
- ``affine``, ``ridge``: least squares with bias, without and with a cross-validated penalty;
- ``permutation``: one-to-one matching of dimensions by correlation, then scale and shift;
- ``stitch_layer``: a linear layer trained through frozen decoder B on the anchors' labels;
- ``centroids``: Procrustes between class means, labels but no shared inputs;
- ``self_centroids``: the same with each model's own predicted classes, no labels at all;
- ``relative``: relative representations (opt-in, slow: needs decoders trained for them);
- ``zero_pad``, ``truncate``: shape-only baselines for different widths.

`stitchlab.align.experiments` holds the measurements the pipeline runs (anchor sweep, repaired
matrix, controls, relative decoders).

Headline (``PYTHONPATH=src python benchmarks/bench_align.py --full``, 2-core CPU): two MNIST
models, seeds 42 and 123, 60,000 images x 10 epochs, 97.9% and 98.0% test accuracy. Spliced raw
they score 1.1% and 8.8%; Procrustes on 100 anchors repairs them to 97.7% and 97.9% (mean of 5
draws, std 0.1). Tiny models as in tests/test_align.py (20,000 images x 3 epochs, 94.7% and
94.2%): raw 0.9% and 9.8%, Procrustes on 100 anchors 94.4% and 93.5%.
"""

from .base import Aligner, AlignmentError, NotEnoughAnchors
from .baselines import ShapeMap, fit_truncate, fit_zero_pad
from .centroids import fit_centroids, fit_self_centroids
from .linear import LinearMap, fit_affine, fit_ridge
from .permutation import PermutationMap, fit_permutation
from .procrustes import ProcrustesMap, fit_procrustes
from .registry import METHODS, Method, fit, get_method, load
from .relative import RelativeMap, fit_relative
from .stitch_layer import fit_stitch_layer

__all__ = [
    "METHODS",
    "AlignmentError",
    "Aligner",
    "LinearMap",
    "Method",
    "NotEnoughAnchors",
    "PermutationMap",
    "ProcrustesMap",
    "RelativeMap",
    "ShapeMap",
    "fit",
    "fit_affine",
    "fit_centroids",
    "fit_procrustes",
    "fit_relative",
    "fit_ridge",
    "fit_self_centroids",
    "fit_stitch_layer",
    "fit_permutation",
    "fit_truncate",
    "fit_zero_pad",
    "get_method",
    "load",
]
