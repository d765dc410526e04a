"""Alignment without shared inputs: Procrustes between the class means of the two spaces.

`centroids` needs labels but no paired inputs: each space's class means are computed on its
own sample of images, and the (C, d_s) and (C, d_t) matrices of means are matched row for row
(class c to class c) by the same centre-scale-rotate Procrustes as `procrustes`.

`self_centroids` needs neither labels nor shared inputs: each full model labels its own sample
of unlabelled images with its own decoder's argmax, and the predicted-class means are matched
the same way. It relies only on both models agreeing on what the classes are, which training on
the same labels guarantees. On the default pair (seeds 42 and 123, 60,000 images x 10 epochs,
97.9% and 98.0% on their own) two disjoint sets of 5,000 unlabelled training images repair the
splice to 97.7% (42 into 123) and 97.9% (123 into 42), mean of 5 draws
(``benchmarks/bench_align.py --full``).

With C = 10 classes the centred means span at most 9 directions, so the rest of the rotation is
fixed only by the SVD's completion; the classes' directions carry what the decoder needs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import AlignmentError, NotEnoughAnchors, as_labels, as_latents
from .procrustes import ProcrustesMap, procrustes_map


def class_means(z: np.ndarray, labels: np.ndarray,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Means (num_classes, d) of `z` per class, and a (num_classes,) mask of classes present."""
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]  # (C,)
    sums = np.zeros((num_classes, z.shape[1]))
    np.add.at(sums, labels, z)
    present = counts > 0
    means = np.where(present[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)  # (C, d)
    return means, present


def _check_labels(method: str, y: np.ndarray, name: str, num_classes: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise AlignmentError(
            f"{method}: {name} must lie in 0..{num_classes - 1}, found {int(y.min())}.."
            f"{int(y.max())}; set num_classes to match"
        )


def _match_means(method, xs, ys, xt, yt, num_classes, allow_reflection, options):
    """Procrustes between the class means of classes present on both sides."""
    _check_labels(method, ys, "source labels", num_classes)
    _check_labels(method, yt, "target labels", num_classes)
    ms, ps = class_means(xs, ys, num_classes)  # (C, d_s)
    mt, pt = class_means(xt, yt, num_classes)  # (C, d_t)
    common = ps & pt
    if common.sum() < 2:
        raise NotEnoughAnchors(
            f"{method} needs at least 2 classes present on both sides, got {int(common.sum())} "
            f"(source has {int(ps.sum())}, target {int(pt.sum())} of {num_classes}); use more "
            f"samples per side"
        )
    options = {**options, "num_classes": num_classes,
               "classes_used": [int(c) for c in np.flatnonzero(common)]}
    return procrustes_map(method, ms[common], mt[common], allow_reflection, options)


def fit_centroids(source, target, *, source_labels, target_labels, num_classes: int = 10,
                  allow_reflection: bool = True) -> ProcrustesMap:
    """Procrustes between class means computed on two different labelled samples.

    Parameters
    ----------
    source : array or tensor of shape (n_s, d_s), encoder A's latents of its own sample
    target : array or tensor of shape (n_t, d_t), encoder B's latents of another sample
    source_labels : int array of shape (n_s,), true classes of the source sample
    target_labels : int array of shape (n_t,), true classes of the target sample
    num_classes : number of classes C
    allow_reflection : as in `fit_procrustes`

    Returns
    -------
    ProcrustesMap with method ``"centroids"``

    Raises
    ------
    AlignmentError
        on NaN/inf, label shape or range problems.
    NotEnoughAnchors
        when fewer than 2 classes occur in both samples.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(200) % 10
    >>> x = rng.normal(size=(10, 16))[y] + 0.1 * rng.normal(size=(200, 16))
    >>> fit_centroids(x[:100], x[100:] + 5, source_labels=y[:100], target_labels=y[100:]).method
    'centroids'
    """
    method = "centroids"
    xs = as_latents(source, method, "source")
    xt = as_latents(target, method, "target")
    ys = as_labels(source_labels, method, "source_labels", xs.shape[0])
    yt = as_labels(target_labels, method, "target_labels", xt.shape[0])
    options = {"n_source": xs.shape[0], "n_target": xt.shape[0]}
    return _match_means(method, xs, ys, xt, yt, num_classes, allow_reflection, options)


@torch.no_grad()
def predict_labels(decoder: nn.Module, z: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Argmax predictions (n,) of `decoder` in eval mode on latents (n, d); mode is restored."""
    was_training = decoder.training
    decoder.eval()
    try:
        param = next(decoder.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else torch.device("cpu")
        t = torch.as_tensor(z, dtype=dtype, device=device)
        out = [decoder(t[i:i + batch_size]).argmax(1).cpu() for i in range(0, len(t), batch_size)]
    finally:
        decoder.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def fit_self_centroids(source, target, *, source_decoder: nn.Module | None = None,
                       target_decoder: nn.Module | None = None, source_labels=None,
                       target_labels=None, num_classes: int = 10,
                       allow_reflection: bool = True) -> ProcrustesMap:
    """Procrustes between the predicted-class means of two unlabelled samples.

    Each side's labels are its own model's predictions: pass the decoders, or the predicted
    labels already computed (never true labels; use `fit_centroids` for those).

    Parameters
    ----------
    source : array or tensor of shape (n_s, d_s), encoder A's latents of its own sample
    target : array or tensor of shape (n_t, d_t), encoder B's latents of another sample
    source_decoder, target_decoder : decoders A and B; each labels its own side by argmax
    source_labels, target_labels : precomputed predicted labels, shapes (n_s,), (n_t,), used
        where the decoder of that side is not given
    num_classes : number of classes C
    allow_reflection : as in `fit_procrustes`

    Returns
    -------
    ProcrustesMap with method ``"self_centroids"``

    Raises
    ------
    AlignmentError
        on NaN/inf, when a side has neither a decoder nor labels, or gets both.
    NotEnoughAnchors
        when fewer than 2 predicted classes occur on both sides.

    Examples
    --------
    Here each "decoder" is the identity on 10-dim latents, so its argmax labels every sample:

    >>> import numpy as np
    >>> from torch import nn
    >>> rng = np.random.default_rng(0)
    >>> za, zb = rng.normal(size=(200, 10)), rng.normal(size=(300, 10))
    >>> a = fit_self_centroids(za, zb, source_decoder=nn.Identity(), target_decoder=nn.Identity())
    >>> a.options["classes_used"] == list(range(10))
    True
    """
    method = "self_centroids"
    xs = as_latents(source, method, "source")
    xt = as_latents(target, method, "target")
    sides = []
    for side, x, dec, lab in (("source", xs, source_decoder, source_labels),
                              ("target", xt, target_decoder, target_labels)):
        if (dec is None) == (lab is None):
            raise AlignmentError(
                f"{method}: pass exactly one of {side}_decoder= or {side}_labels= (the "
                f"{side} model's own predictions); got {'both' if dec is not None else 'neither'}"
            )
        if dec is not None:
            sides.append(predict_labels(dec, x))
        else:
            sides.append(as_labels(lab, method, f"{side}_labels", x.shape[0]))
    options = {"n_source": xs.shape[0], "n_target": xt.shape[0]}
    return _match_means(method, xs, sides[0], xt, sides[1], num_classes, allow_reflection,
                        options)
