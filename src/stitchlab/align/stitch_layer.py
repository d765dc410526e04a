"""A linear stitching layer trained on the task loss through the frozen target decoder.

The layer ``z -> z W + b`` (d_s -> d_t) is trained by Adam to minimise the cross-entropy of
``decoder_B(z_A W + b)`` against the anchors' labels, decoder B frozen (Bansal, Nakkiran & Barak
2021, "Revisiting model stitching to compare neural representations"; Csiszárik et al. 2021,
"Similarity and matching of neural network representations", who start the task-loss training
from the least-squares match, as done here when the anchors determine it).

Unlike the closed-form methods it uses labels, so with few anchors it can fit the anchors'
labels rather than the geometry; `stitchlab.align.experiments.controls` measures how much.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AlignmentError, as_labels, as_latents, buffer, check_count, check_paired
from .linear import LinearMap, least_squares

log = logging.getLogger(__name__)


def fit_stitch_layer(
    source,
    target=None,
    *,
    labels,
    decoder: nn.Module,
    steps: int = 300,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 1024,
    init: str = "auto",
    seed: int = 0,
) -> LinearMap:
    """Train a linear layer from source latents into decoder B on the anchors' labels.

    Parameters
    ----------
    source : array or tensor of shape (n_anchors, d_s), encoder A's latents of the anchors
    target : optional array of shape (n_anchors, d_t), encoder B's latents of the same anchors;
        used only for the least-squares initialisation
    labels : int array of shape (n_anchors,), the anchors' classes
    decoder : the target decoder, mapping (n, d_t) to logits; frozen (a copy is used, in eval
        mode), so its parameters and their ``.grad`` are left untouched
    steps : Adam steps
    lr : Adam learning rate
    weight_decay : L2 penalty on the layer (Adam's ``weight_decay``)
    batch_size : anchors per step; all of them when there are fewer, else a seeded sample
    init : ``"auto"`` (least squares when `target` is given and n_anchors > d_s, else
        identity), ``"lstsq"``, or ``"identity"`` (``eye(d_s, d_t)``, zero bias)
    seed : seeds the batch sampling

    Returns
    -------
    LinearMap with method ``"stitch_layer"``; ``options`` records the settings, the init used
    and the final training loss.

    Raises
    ------
    AlignmentError
        on mismatched counts, NaN/inf, a missing decoder or labels, or an unknown init.
    NotEnoughAnchors
        with no anchors, or with ``init="lstsq"`` and n_anchors <= d_s.

    Examples
    --------
    >>> import torch
    >>> from stitchlab.models import build_model
    >>> z = torch.randn(64, 32)
    >>> a = fit_stitch_layer(z, labels=torch.arange(64) % 10, decoder=build_model(0).decoder,
    ...                      steps=5)
    >>> a.transform(z).shape
    torch.Size([64, 32])
    """
    method = "stitch_layer"

    # 1. Check inputs.
    if target is None:
        xs = as_latents(source, method, "source")
        check_count(method, xs.shape[0], 1)
        xt = None
    else:
        xs, xt = check_paired(method, source, target, 1)
    y = as_labels(labels, method, "labels", xs.shape[0])
    if not isinstance(decoder, nn.Module):
        raise AlignmentError(
            f"{method} needs decoder= (the target decoder, an nn.Module); got {type(decoder)}"
        )
    d_s = xs.shape[1]
    d_t = xt.shape[1] if xt is not None else _input_width(decoder, method)
    if init not in ("auto", "lstsq", "identity"):
        raise AlignmentError(f"{method}: init must be 'auto', 'lstsq' or 'identity', got {init!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise AlignmentError(f"{method}: steps must be an integer >= 0, got {steps!r}")

    # 2. Initial weights: least squares when the anchors determine it, else identity.
    use_lstsq = init == "lstsq" or (init == "auto" and xt is not None and xs.shape[0] > d_s)
    if use_lstsq:
        if xt is None:
            raise AlignmentError(f"{method}: init='lstsq' needs target latents; pass target=")
        check_count(method, xs.shape[0], d_s + 1, "for init='lstsq'")
        w0, b0 = least_squares(xs, xt)
    else:
        w0, b0 = np.eye(d_s, d_t), np.zeros(d_t)

    # 3. Adam on the task loss through a frozen copy of the decoder.
    frozen = copy.deepcopy(decoder).eval().requires_grad_(False)
    frozen = frozen.to(torch.float32)
    weight = nn.Parameter(buffer(w0).clone())  # (d_s, d_t)
    bias = nn.Parameter(buffer(b0).clone())  # (d_t,)
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    z_all = buffer(xs)  # (n, d_s)
    y_all = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    n = xs.shape[0]
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        if n > batch_size:
            idx = torch.randint(n, (batch_size,), generator=gen)
            zb, yb = z_all[idx], y_all[idx]  # (b, d_s), (b,)
        else:
            zb, yb = z_all, y_all
        loss = F.cross_entropy(frozen(torch.addmm(bias, zb, weight)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    final = float(loss.detach()) if steps else None
    if final is not None and not np.isfinite(final):
        raise AlignmentError(
            f"{method}: the training loss became {final} after {steps} steps at lr={lr}; "
            f"lower lr and fit again"
        )
    log.debug("%s: %d steps, final loss %s", method, steps, final)

    options: dict[str, Any] = {
        "n_anchors": n, "steps": steps, "lr": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "init": "lstsq" if use_lstsq else "identity", "seed": seed,
        "final_loss": final,
    }
    return LinearMap(method, weight.detach().clone(), bias.detach().clone(), options)


def _input_width(decoder: nn.Module, method: str) -> int:
    """The input width of `decoder`: its ``latent_dim``, else its first Linear layer's."""
    width = getattr(decoder, "latent_dim", None)
    if isinstance(width, int):
        return width
    for module in decoder.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    raise AlignmentError(
        f"{method}: cannot tell the decoder's input width; pass target= latents of the anchors"
    )
