"""The repair measurements the pipeline runs: anchor sweep, repaired matrix, controls, relative.

All functions are pure: they take latents (tensors or arrays) and modules, return plain lists
and dicts of floats ready for JSON, never print, and leave the modules' train/eval mode as they
found it. Latents are computed once by the caller (or `latents`); each fit + evaluation then
costs milliseconds, so the whole default sweep is cheap.

Accuracy is always decoder B's accuracy on the test set after mapping encoder A's test latents
(a fraction in [0, 1]). Anchors are drawn from the training set without replacement. Paired
methods fit on k anchors; centroid methods use k images per side, drawn disjoint for source
and target (the first k and the next k of one seeded draw, so their source side holds the
paired methods' anchors).

Timing (``PYTHONPATH=src python benchmarks/bench_align.py [--full]``): the default sweep, both
ordered pairs, the 6 closed-form methods, 13 counts x 5 draws (582 fits and evaluations on the
10,000 test images) took 17.4 s on fully trained and 17.2 s on tiny models (22-27 s under
heavier load), with one torch and one BLAS thread on a shared 2-core machine; about 12 ms of
each fit is decoder B's forward pass over the test set. Thread oversubscription dominates on
such a machine: with the default two torch and BLAS threads the same sweep took 92 s. These
functions leave thread settings to the caller (``torch.set_num_threads(1)``,
``threadpoolctl.threadpool_limits(1)``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import NUM_CLASSES, Decoder, build_model
from .base import AlignmentError, NotEnoughAnchors, as_latents
from .centroids import predict_labels
from .registry import (
    CLASS_MEANS,
    PAIRED,
    PREDICTED_CLASS_MEANS,
    RELATIVE,
    SHAPES,
    get_method,
)
from .relative import RelativeMap, fit_relative

log = logging.getLogger(__name__)

DEFAULT_ANCHOR_COUNTS = (1, 2, 5, 10, 20, 32, 50, 100, 200, 500, 1000, 5000, "all")
# The closed-form methods that fit on latents alone (no training); the default sweep's set.
CLOSED_FORM_METHODS = ("procrustes", "affine", "ridge", "permutation", "centroids",
                       "self_centroids")


# --- helpers ---------------------------------------------------------------------------------


@contextmanager
def _eval_mode(*modules: nn.Module | None):
    """Put modules in eval mode for the block, then restore each one's mode."""
    modes = [(m, m.training) for m in modules if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _as_tensor(z) -> torch.Tensor:
    return torch.as_tensor(z).to(torch.float32)


def _as_label_array(y) -> np.ndarray:
    return np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)


def latents(encoder: nn.Module, x: torch.Tensor, batch_size: int = 10000) -> torch.Tensor:
    """Encoder outputs (n, d), float32, computed in eval mode without gradients.

    Parameters
    ----------
    encoder : module mapping (n, 784) to (n, d)
    x : tensor of shape (n, 784)
    batch_size : samples per forward pass

    Returns
    -------
    torch.Tensor of shape (n, d)
    """
    with _eval_mode(encoder), torch.inference_mode():
        parts = [encoder(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).float() if parts else torch.zeros(0, 0)


def accuracy(decoder: nn.Module, z, labels, batch_size: int = 10000) -> float:
    """Fraction of argmax predictions of `decoder` on latents `z` (n, d) equal to `labels` (n,)."""
    z, y = _as_tensor(z), torch.as_tensor(labels)
    if z.shape[0] == 0:
        return float("nan")
    correct = 0
    with _eval_mode(decoder), torch.inference_mode():
        for i in range(0, z.shape[0], batch_size):
            correct += int((decoder(z[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size])
                           .sum())
    return correct / z.shape[0]


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1); 0.0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


class _Pool:
    """Training latents of one ordered pair, from which each draw's fitting inputs are cut."""

    def __init__(self, source_z, target_z, labels, decoder, source_decoder=None,
                 method_options: Mapping[str, Mapping[str, Any]] | None = None):
        self.zs = as_latents(source_z, "anchor pool", "source latents")  # (n, d_s)
        self.zt = as_latents(target_z, "anchor pool", "target latents")  # (n, d_t)
        if self.zs.shape[0] != self.zt.shape[0]:
            raise AlignmentError(
                f"source latents have {self.zs.shape[0]} rows, target latents "
                f"{self.zt.shape[0]}; both must be the two encoders' latents of the same inputs"
            )
        self.y = _as_label_array(labels)  # (n,)
        if self.y.shape != (self.zs.shape[0],):
            raise AlignmentError(
                f"train labels have shape {self.y.shape}, expected ({self.zs.shape[0]},)"
            )
        self.n = self.zs.shape[0]
        self.decoder = decoder
        self.source_decoder = source_decoder
        self.options = {k: dict(v) for k, v in (method_options or {}).items()}
        self._pred: tuple[np.ndarray, np.ndarray] | None = None

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """Each model's own argmax labels of the whole pool, computed once."""
        if self._pred is None:
            if self.source_decoder is None:
                raise AlignmentError(
                    "self_centroids needs the source model's decoder to label its own images; "
                    "pass source_decoder="
                )
            self._pred = (predict_labels(self.source_decoder, self.zs),
                          predict_labels(self.decoder, self.zt))
        return self._pred

    def fit(self, method: str, src_idx: np.ndarray, tgt_idx: np.ndarray):
        """Fit `method` with paired anchors `src_idx`, or samples `src_idx` / `tgt_idx`."""
        spec = get_method(method)
        options = dict(self.options.get(method, {}))
        if spec.inputs == PAIRED:
            if method == "stitch_layer":
                options.setdefault("labels", self.y[src_idx])
                options.setdefault("decoder", self.decoder)
            return spec(self.zs[src_idx], self.zt[src_idx], **options)
        if spec.inputs == CLASS_MEANS:
            return spec(self.zs[src_idx], self.zt[tgt_idx], source_labels=self.y[src_idx],
                        target_labels=self.y[tgt_idx], **options)
        if spec.inputs == PREDICTED_CLASS_MEANS:
            ps, pt = self.predictions()
            return spec(self.zs[src_idx], self.zt[tgt_idx], source_labels=ps[src_idx],
                        target_labels=pt[tgt_idx], **options)
        if spec.inputs == SHAPES:
            return spec(self.zs[:1], self.zt[:1], **options)
        assert spec.inputs == RELATIVE
        raise AlignmentError(
            f"{method} maps into relative coordinates that only decoders trained for them can "
            f"read; measure it with relative_matrix instead"
        )

    def draw(self, method: str, k: int, order: np.ndarray | None):
        """Indices for one fit: (anchors, anchors) or two disjoint samples of k each.

        `order` is a seeded permutation of the pool (`_draw_order`), cut into the first k (and
        the next k); None means the deterministic "all" draw: every sample, or the two halves.
        """
        inputs = get_method(method).inputs
        two_sided = inputs in (CLASS_MEANS, PREDICTED_CLASS_MEANS)
        if order is None:
            if two_sided:
                half = self.n // 2
                return np.arange(half), np.arange(half, 2 * half)
            return np.arange(self.n), np.arange(self.n)
        need = 2 * k if two_sided else k
        if need > self.n:
            raise NotEnoughAnchors(
                f"{method} with {k} {'images per side' if two_sided else 'anchors'} needs {need} "
                f"training samples, the pool has {self.n}"
            )
        idx = order[:need]
        return (idx[:k], idx[k:]) if two_sided else (idx, idx)


def _check_methods(methods: Sequence[str], caller: str) -> None:
    """Known methods only, and not ``relative``, which needs decoders trained for it."""
    for m in methods:
        if get_method(m).inputs == RELATIVE:
            raise AlignmentError(
                f"{caller} cannot measure {m}: it maps into relative coordinates that only "
                f"decoders trained for them can read; use relative_matrix instead"
            )


def _draw_order(n: int, seed: int, k: int, repeat: int) -> np.ndarray:
    """Draw `repeat` at count `k`: a permutation of range(n), the same for every method and pair.

    Paired methods take its first k entries, centroid methods its first and next k, so the
    source sample of a centroid method holds exactly the paired methods' anchors.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, k, repeat])).permutation(n)


# --- anchor sweep ------------------------------------------------------------------------------


def anchor_sweep(
    source_train_z,
    target_train_z,
    train_labels,
    decoder: nn.Module,
    test_source_z,
    test_labels,
    methods: Sequence[str] = CLOSED_FORM_METHODS,
    anchor_counts: Sequence[int | str] = DEFAULT_ANCHOR_COUNTS,
    repeats: int = 5,
    seed: int = 0,
    *,
    source_decoder: nn.Module | None = None,
    encoder: str | None = None,
    decoder_name: str | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Repair accuracy of each method against the number of anchors, for one ordered pair.

    Parameters
    ----------
    source_train_z : array or tensor of shape (n_train, d_s), encoder A on the training set
    target_train_z : array or tensor of shape (n_train, d_t), encoder B on the same images
    train_labels : int array of shape (n_train,)
    decoder : decoder B, mapping (n, d_t) to logits
    test_source_z : array or tensor of shape (n_test, d_s), encoder A on the test set
    test_labels : int array of shape (n_test,)
    methods : names in `METHODS` (not ``relative``; see `relative_matrix`)
    anchor_counts : anchors per fit (images per side for centroid methods); ``"all"`` means
        every training sample (paired) or the two halves of the training set (centroids), one
        deterministic draw, recorded with ``repeats=1``
    repeats : seeded draws per count; each draw is shared by all methods and all pairs that use
        the same `seed`
    seed : seeds the draws
    source_decoder : decoder A, needed by ``self_centroids`` to label A's images
    encoder, decoder_name : names copied into every row (the pipeline's model names)
    method_options : per-method fitting options, e.g. ``{"stitch_layer": {"steps": 100}}``

    Returns
    -------
    list of dict, one per (method, count), in that order, with keys ``method``, ``encoder``,
    ``decoder``, ``anchors`` (the count asked for, int or "all"), ``n_anchors`` (the count
    used), ``repeats``, ``accuracy_mean``, ``accuracy_std`` (sample std, 0.0 for one draw),
    ``accuracies`` (one per draw) and ``skipped``. When a method cannot fit with that many
    anchors (fewer than it needs, or more than the pool holds) the row is kept with
    ``skipped`` = the reason, ``repeats`` = 0 and None accuracies; otherwise ``skipped`` is None.
    Shape-only methods do not depend on the draw and are evaluated once per count.

    Raises
    ------
    AlignmentError
        for an unknown method, mismatched shapes, ``relative``, or ``self_centroids`` without
        `source_decoder`.

    Examples
    --------
    >>> import torch
    >>> from stitchlab.models import build_model
    >>> a, b = build_model(42), build_model(123)
    >>> x, y = torch.randn(400, 784), torch.arange(400) % 10
    >>> za, zb = latents(a.encoder, x), latents(b.encoder, x)
    >>> rows = anchor_sweep(za, zb, y, b.decoder, za, y, ["procrustes"], [1, 50], repeats=2)
    >>> [(r["anchors"], r["skipped"] is None) for r in rows]
    [(1, False), (50, True)]
    """
    _check_methods(methods, "anchor_sweep")
    if "self_centroids" in methods and source_decoder is None:
        raise AlignmentError(
            "self_centroids needs the source model's decoder to label its own images; pass "
            "source_decoder= to anchor_sweep or drop self_centroids"
        )
    if not (isinstance(repeats, int) and repeats >= 1):
        raise AlignmentError(f"repeats must be an integer >= 1, got {repeats!r}")
    pool = _Pool(source_train_z, target_train_z, train_labels, decoder, source_decoder,
                 method_options)
    z_test = _as_tensor(test_source_z)  # (n_test, d_s)
    y_test = torch.as_tensor(test_labels)

    rows = []
    with _eval_mode(decoder, source_decoder):
        for method in methods:
            shape_only = get_method(method).inputs == SHAPES
            shape_acc = None
            for k in anchor_counts:
                is_all = k == "all"
                if not is_all and not (isinstance(k, int) and k >= 1):
                    raise AlignmentError(f"anchor count must be an int >= 1 or 'all', got {k!r}")
                row = {"method": method, "encoder": encoder, "decoder": decoder_name,
                       "anchors": k, "n_anchors": None, "repeats": 0, "accuracy_mean": None,
                       "accuracy_std": None, "accuracies": [], "skipped": None}
                accs = []
                try:
                    if shape_only:
                        if shape_acc is None:
                            shape_acc = accuracy(decoder, pool.fit(method, [], []).transform(
                                z_test), y_test)
                        accs = [shape_acc]
                        row["n_anchors"] = 0
                    for r in range(0 if shape_only else (1 if is_all else repeats)):
                        order = None if is_all else _draw_order(pool.n, seed, k, r)
                        src, tgt = pool.draw(method, 0 if is_all else k, order)
                        aligner = pool.fit(method, src, tgt)
                        accs.append(accuracy(decoder, aligner.transform(z_test), y_test))
                        row["n_anchors"] = len(src)
                except NotEnoughAnchors as exc:
                    row["skipped"] = str(exc)
                    rows.append(row)
                    log.debug("anchor sweep: %s at %s anchors skipped: %s", method, k, exc)
                    continue
                row.update(repeats=len(accs), accuracy_mean=float(np.mean(accs)),
                           accuracy_std=_std(accs), accuracies=[float(a) for a in accs])
                rows.append(row)
                log.debug("anchor sweep: %s at %s anchors: %.4f", method, k, row["accuracy_mean"])
    return rows


# --- repaired matrix ---------------------------------------------------------------------------


def repaired_matrix(
    latents_train: Mapping[str, Any],
    train_labels,
    latents_test: Mapping[str, Any],
    test_labels,
    decoders: Mapping[str, nn.Module],
    method: str,
    anchors: int = 100,
    seed: int = 0,
    *,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[list[float | None]]:
    """N x N accuracies of encoder i, repaired by `method`, driving decoder j.

    Parameters
    ----------
    latents_train : name -> array of shape (n_train, d_name), every model on the same training
        images, in the order the matrix uses
    train_labels : int array of shape (n_train,)
    latents_test : name -> array of shape (n_test, d_name), the same models on the test set
    test_labels : int array of shape (n_test,)
    decoders : name -> decoder module
    method : a name in `METHODS` (not ``relative``)
    anchors : anchors per fit (images per side for centroid methods); one seeded draw, the same
        for every pair
    seed : seeds the draw (the same draw as `anchor_sweep`'s first repeat at this count)
    method_options : per-method fitting options

    Returns
    -------
    list of N lists of N floats: row i = encoder, column j = decoder, in the order of
    `latents_train`. The diagonal is each model's own plain accuracy (no map). A cell is None
    when the method cannot fit that pair (too few anchors, incompatible widths); the reason is
    logged at INFO.

    Raises
    ------
    AlignmentError
        for an unknown method, ``relative``, or names missing from `latents_test`/`decoders`.
    """
    _check_methods([method], "repaired_matrix")
    names = list(latents_train)
    missing = [n for n in names if n not in latents_test or n not in decoders]
    if missing:
        raise AlignmentError(
            f"repaired_matrix: models {missing} are in latents_train but missing from "
            f"latents_test or decoders; pass all three with the same names"
        )
    matrix: list[list[float | None]] = []
    for i in names:
        row: list[float | None] = []
        for j in names:
            if i == j:
                row.append(accuracy(decoders[j], latents_test[j], test_labels))
                continue
            pool = _Pool(latents_train[i], latents_train[j], train_labels, decoders[j],
                         decoders[i], method_options)
            try:
                src, tgt = pool.draw(method, anchors, _draw_order(pool.n, seed, anchors, 0))
                aligner = pool.fit(method, src, tgt)
            except AlignmentError as exc:
                log.info("repaired_matrix: %s cannot fit %s -> %s: %s", method, i, j, exc)
                row.append(None)
                continue
            with torch.inference_mode():
                mapped = aligner.transform(_as_tensor(latents_test[i]))
            row.append(accuracy(decoders[j], mapped, test_labels))
        matrix.append(row)
    return matrix


# --- controls ---------------------------------------------------------------------------------


def controls(
    source_model: nn.Module,
    target_model: nn.Module,
    x_train: torch.Tensor,
    y_train,
    x_test: torch.Tensor,
    y_test,
    methods: Sequence[str] = CLOSED_FORM_METHODS,
    anchors: int = 100,
    seed: int = 0,
    *,
    untrained_seed: int = 0,
    noise_std: float = 1.0,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The same repair fitted on sources that carry no learned (or no) information.

    Three conditions, each with the same anchor images, labels and target encoder B:

    - ``real``: encoder A, as in `repaired_matrix`;
    - ``untrained_encoder``: a randomly initialised model (`models.build_model(untrained_seed)`)
      in place of A, its decoder labelling for ``self_centroids``. Random ReLU features still
      carry some information about the input, so this measures what the map itself can
      extract; a method scoring here as well as on ``real`` repairs nothing specific to A;
    - ``noise_inputs``: encoder A applied to Gaussian noise images (std `noise_std` in
      normalised pixel units) instead of the anchor and test images. The source then carries
      nothing about the labels, so any score well above chance (0.1) signals a leak.

    Parameters
    ----------
    source_model, target_model : `EncoderDecoder` modules (with ``.encoder``, ``.decoder``)
    x_train, y_train : training inputs (n_train, 784) and labels (n_train,); anchors are drawn
        from them as in `repaired_matrix`
    x_test, y_test : test inputs (n_test, 784) and labels (n_test,)
    methods : names in `METHODS` (not ``relative``)
    anchors : anchors per fit (images per side for centroid methods)
    seed : seeds the anchor draw and the noise
    untrained_seed : initialisation seed of the untrained model
    noise_std : standard deviation of the noise images
    method_options : per-method fitting options

    Returns
    -------
    dict with ``anchors``, ``seed``, ``chance`` (1 / number of classes) and, under each of
    ``real``, ``untrained_encoder`` and ``noise_inputs``, a dict method -> accuracy (None when
    the method cannot fit).

    Raises
    ------
    AlignmentError
        for an unknown method or ``relative``; NotEnoughAnchors when x_train holds fewer than
        2 x `anchors` images.

    Examples
    --------
    >>> import torch
    >>> from stitchlab.models import build_model
    >>> a, b = build_model(42), build_model(123)
    >>> x, y = torch.randn(300, 784), torch.arange(300) % 10
    >>> out = controls(a, b, x, y, x[:50], y[:50], ["procrustes"], anchors=100)
    >>> sorted(out["noise_inputs"])
    ['procrustes']
    """
    _check_methods(methods, "controls")
    y_train_np = _as_label_array(y_train)

    # 1. One draw of 2k training images: the first k are the paired anchors (and the source
    #    sample of centroid methods), the next k the target sample. Only these are encoded.
    n = int(x_train.shape[0])
    if 2 * anchors > n:
        raise NotEnoughAnchors(
            f"controls with {anchors} anchors need {2 * anchors} training images, got {n}"
        )
    idx = _draw_order(n, seed, anchors, 0)[:2 * anchors]
    x_anchor, y_anchor = x_train[torch.as_tensor(idx)], y_train_np[idx]  # (2k, 784), (2k,)
    gen = torch.Generator().manual_seed(seed)
    noise_anchor = torch.randn(x_anchor.shape, generator=gen) * noise_std  # (2k, 784)
    noise_test = torch.randn(x_test.shape, generator=gen) * noise_std  # (n_test, 784)
    untrained = build_model(untrained_seed, latent_dim=_latent_dim(source_model))

    # 2. Source encoder, its decoder and the images it sees, per condition.
    conditions = {
        "real": (source_model.encoder, source_model.decoder, x_anchor, x_test),
        "untrained_encoder": (untrained.encoder, untrained.decoder, x_anchor, x_test),
        "noise_inputs": (source_model.encoder, source_model.decoder, noise_anchor, noise_test),
    }
    zt = latents(target_model.encoder, x_anchor)  # (2k, d_t)
    src = np.arange(anchors)
    out: dict[str, Any] = {"anchors": anchors, "seed": seed, "chance": 1.0 / NUM_CLASSES}
    with _eval_mode(target_model.decoder):
        for name, (enc, dec, xa, xt) in conditions.items():
            pool = _Pool(latents(enc, xa), zt, y_anchor, target_model.decoder, dec,
                         method_options)
            z_test = latents(enc, xt)  # (n_test, d_s)
            scores: dict[str, float | None] = {}
            for method in methods:
                two_sided = get_method(method).inputs in (CLASS_MEANS, PREDICTED_CLASS_MEANS)
                try:
                    aligner = pool.fit(method, src, src + anchors if two_sided else src)
                except NotEnoughAnchors as exc:
                    log.info("controls: %s cannot fit (%s): %s", method, name, exc)
                    scores[method] = None
                    continue
                scores[method] = accuracy(target_model.decoder, aligner.transform(z_test),
                                          y_test)
            out[name] = scores
    return out


def _latent_dim(model: nn.Module) -> int:
    width = getattr(model, "latent_dim", None)
    if not isinstance(width, int):
        raise AlignmentError(
            f"controls needs EncoderDecoder models with a latent_dim; got {type(model).__name__}"
        )
    return width


# --- relative representations (opt-in, trains decoders) ---------------------------------------


def train_relative_decoder(
    train_z,
    train_labels,
    anchor_z,
    *,
    center: bool = False,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
    dropout: float = 0.2,
    seed: int = 0,
) -> tuple[RelativeMap, Decoder]:
    """Train a decoder on one encoder's relative coordinates (Moschella et al. 2023).

    Slow compared with the closed-form methods (it trains a network); opt-in.

    Parameters
    ----------
    train_z : array or tensor of shape (n_train, d), the encoder's training latents
    train_labels : int array of shape (n_train,)
    anchor_z : array or tensor of shape (k, d), the same encoder's latents of the anchor images
    center : passed to `fit_relative`
    epochs, batch_size, lr : Adam training on cross-entropy
    dropout : dropout of the decoder's hidden layers
    seed : seeds initialisation, shuffling and dropout (the global RNG state is left as it was)

    Returns
    -------
    (projection, decoder): the `RelativeMap` of this encoder and a `models.Decoder` with input
    width k, returned in eval mode. Another encoder is swapped in by giving it its own
    projection of the same anchor images: ``splice(enc_b, decoder, fit_relative(anchor_z_b))``.

    Raises
    ------
    AlignmentError
        on NaN/inf latents, labels of the wrong shape, or a non-finite training loss.

    Examples
    --------
    >>> import torch
    >>> z, y = torch.rand(256, 32), torch.arange(256) % 10
    >>> proj, dec = train_relative_decoder(z, y, z[:20], epochs=1)
    >>> dec(proj.transform(z)).shape
    torch.Size([256, 10])
    """
    projection = fit_relative(anchor_z, center=center)
    with torch.inference_mode():
        r = projection.transform(_as_tensor(train_z)).clone()  # (n, k)
    y = torch.as_tensor(_as_label_array(train_labels))
    if y.shape != (r.shape[0],):
        raise AlignmentError(
            f"train_relative_decoder: train_labels have shape {tuple(y.shape)}, expected "
            f"({r.shape[0]},)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = Decoder(latent_dim=r.shape[1], dropout=dropout)
        opt = torch.optim.Adam(decoder.parameters(), lr=lr)
        decoder.train()
        for _ in range(epochs):
            perm = torch.randperm(r.shape[0])
            for i in range(0, r.shape[0], batch_size):
                b = perm[i:i + batch_size]
                loss = F.cross_entropy(decoder(r[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    if not math.isfinite(float(loss.detach())):
        raise AlignmentError(
            f"train_relative_decoder: loss became {float(loss.detach())}; lower lr={lr}"
        )
    return projection, decoder.eval()


def relative_matrix(
    latents_train: Mapping[str, Any],
    train_labels,
    latents_test: Mapping[str, Any],
    test_labels,
    anchors: int = 300,
    seed: int = 0,
    *,
    center: bool = False,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
) -> list[list[float]]:
    """N x N accuracies of relative decoders: encoder i's coordinates into decoder j.

    Each model gets a decoder trained on its own relative coordinates (the same anchor images
    for all models); cell (i, j) feeds encoder i's test latents, projected on encoder i's own
    anchor latents, to decoder j. No map is fitted between the spaces. Opt-in and slow: it
    trains N decoders.

    Parameters
    ----------
    latents_train, latents_test : name -> latents, as in `repaired_matrix`
    train_labels, test_labels : int arrays
    anchors : number of anchor images, one seeded draw from the training set
    seed : seeds the anchor draw and the decoders' training
    center, epochs, batch_size, lr : passed to `train_relative_decoder`

    Returns
    -------
    list of N lists of N floats, rows = encoders, columns = relative decoders, in the order of
    `latents_train`; the diagonal is each relative model's own accuracy.

    Raises
    ------
    NotEnoughAnchors
        when the training set holds fewer than `anchors` samples.
    """
    names = list(latents_train)
    n = as_latents(latents_train[names[0]], "relative", "latents_train").shape[0]
    if anchors > n:
        raise NotEnoughAnchors(f"relative with {anchors} anchors needs {anchors} training "
                               f"samples, got {n}")
    idx = _draw_order(n, seed, anchors, 0)[:anchors]
    projections, decoders = {}, {}
    for name in names:
        z = _as_tensor(latents_train[name])
        projections[name], decoders[name] = train_relative_decoder(
            z, train_labels, z[torch.as_tensor(idx)], center=center, epochs=epochs,
            batch_size=batch_size, lr=lr, seed=seed,
        )
    matrix = []
    for i in names:
        with torch.inference_mode():
            r = projections[i].transform(_as_tensor(latents_test[i]))  # (n_test, k)
        matrix.append([accuracy(decoders[j], r, test_labels) for j in names])
    return matrix
