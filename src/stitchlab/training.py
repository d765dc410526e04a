"""Training: K encoder-decoder models of one shape at once, each from its own seed.

The K models live in one flat float32 buffer; layer i's weights are a view of shape
(K, d_out, d_in) (nn.Linear's layout, one model after another) and every layer is one batched
matrix product. Forward and backward are written out by hand: no autograd graph, every
intermediate in a buffer allocated once, the gradients written straight into a second flat
buffer, and one fused Adam step over the whole buffer. Each model keeps everything that makes
it itself: its initialisation (`models.build_model(seed)`), its shuffle order (a torch.Generator)
and its dropout masks (a numpy SFC64 bit generator), both seeded from its own seed alone. A
model trained in a batch of K therefore sees exactly the random numbers it would see alone;
only the order of floating-point sums inside the batched products can differ.

Dropout masks cost little: each mask element is one 16-bit lane of the model's raw 64-bit
stream, kept when the lane is below 52429, so the keep probability is 52429 / 65536 =
0.80000305 (drop 0.19999695) for the default dropout 0.2; `keep_threshold` gives it for any p.

On CUDA (``device="cuda"``) the shuffle orders and the masks are still drawn on the CPU, from
the same generators, and copied to the device each step, so a model's random numbers are the
same on either device; everything else runs on the device. No GPU was at hand when this was
written: the CUDA path is written to run but only the CPU path is tested.

Hyper-parameters are the seed experiment's: Adam (lr 1e-3), batch 256, StepLR(5, 0.5),
cross-entropy, 10 epochs, a fresh shuffle every epoch, the last partial batch kept.

Measured with ``stitchlab bench --out bench.json`` (full MNIST, 60,000 images per epoch,
median of 5 epochs; a 2-core AMD EPYC VM, torch 2.13 CPU, 2 threads, two runs at load average
1.3-2.2): one model 0.82-0.85 s per epoch, 1.35-1.60 x the float32 floor (6 x params x samples
at the machine's measured matrix-product peak); eight models 0.62-0.86 s per model-epoch,
1.22-1.35 x. Two models, evaluation included, alternating in the same quiet windows: the
autograd trainer this replaced 1.7-2.0 s per model-epoch, this one 0.8-0.9 s. Default models
(seeds 42, 123, 10 epochs): 98.06 % and 98.04 % test accuracy, the same bits on every run;
with ``precision="bfloat16"`` 98.12 % and 98.10 %.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam as functional_adam

from .errors import TrainingDiverged
from .models import (
    DECODER_HIDDEN,
    ENCODER_HIDDEN,
    INPUT_DIM,
    NUM_CLASSES,
    EncoderDecoder,
    build_model,
)

log = logging.getLogger(__name__)

# Linear layers of the model in order, with the activations that follow each one.
_LAYERS = ("encoder.net.0", "encoder.net.3", "encoder.net.6",
           "decoder.net.0", "decoder.net.3", "decoder.net.6")
_RELU_AFTER = (True, True, True, True, True, False)
_DROPOUT_AFTER = (True, True, False, True, True, False)

# A dropout mask element is one 16-bit lane of a 64-bit random word.
_LANES = 65536
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class TrainSettings:
    """How to train; defaults are the seed experiment's."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 256  # samples per optimizer step
    lr: float = 1e-3  # Adam learning rate
    lr_step: int = 5  # StepLR: epochs between decays
    lr_gamma: float = 0.5  # StepLR: factor per decay
    dropout: float = 0.2  # drop probability after the hidden layers
    eval_batch_size: int = 10000  # test samples per evaluation forward pass
    precision: str = "float32"  # dtype of the matrix products: "float32" or "bfloat16"


@dataclass
class TrainedModel:
    """One trained model and what was measured while training it."""

    name: str
    seed: int
    latent_dim: int
    model: EncoderDecoder
    history: list[dict] = field(default_factory=list)
    test_accuracy: float = float("nan")  # fraction in [0, 1]
    test_loss: float = float("nan")  # mean cross-entropy, nats
    train_seconds: float = float("nan")  # wall seconds, the batch's time divided by its size

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def derive_seeds(seed: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (shuffle, dropout) derived from one model seed."""
    states = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint32)
    shuffle = (int(states[0]) << 31) ^ int(states[1])
    dropout = (int(states[2]) << 31) ^ int(states[3])
    return shuffle, dropout


def keep_threshold(dropout: float) -> int:
    """The 16-bit threshold below which a mask lane keeps its unit.

    The keep probability is ``keep_threshold(p) / 65536``, the nearest multiple of 2**-16 to
    ``1 - p``; for p = 0.2 that is 52429 / 65536 = 0.80000305.
    """
    return int(round((1.0 - dropout) * _LANES))


def layer_shapes(latent_dim: int) -> list[tuple[int, int]]:
    """(d_out, d_in) of the six linear layers, input to logits."""
    widths = [INPUT_DIM, *ENCODER_HIDDEN, latent_dim, *DECODER_HIDDEN, NUM_CLASSES]
    return [(b, a) for a, b in zip(widths[:-1], widths[1:], strict=True)]


def count_parameters(latent_dim: int = 32) -> int:
    """Weights and biases of one model (277,802 for the default latent width 32)."""
    return sum(o * i + o for o, i in layer_shapes(latent_dim))


class StackedModels:
    """K models of one shape in one flat buffer, with a gradient buffer of the same layout.

    ``weights[i]`` is a view of shape (K, d_out, d_in) and ``biases[i]`` one of shape (K, 1,
    d_out); ``grad_weights`` and ``grad_biases`` are the matching views of ``flat_grad``.
    """

    def __init__(self, models: Sequence[EncoderDecoder], device: torch.device):
        self.k = len(models)
        self.latent_dim = models[0].latent_dim
        self.shapes = layer_shapes(self.latent_dim)
        total = self.k * count_parameters(self.latent_dim)
        self.flat = torch.empty(total, device=device)
        self.flat_grad = torch.zeros(total, device=device)
        self.weights, self.biases = self.views(self.flat)
        self.grad_weights, self.grad_biases = self.views(self.flat_grad)

        # Copy each model's state into its slot.
        states = [m.state_dict() for m in models]
        with torch.no_grad():
            for name, w, b in zip(_LAYERS, self.weights, self.biases, strict=True):
                w.copy_(torch.stack([s[f"{name}.weight"] for s in states]))
                b.copy_(torch.stack([s[f"{name}.bias"] for s in states]).unsqueeze(1))

    def views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer weight (K, d_out, d_in) and bias (K, 1, d_out) views of a flat buffer."""
        weights, biases, at = [], [], 0
        for d_out, d_in in self.shapes:
            weights.append(flat[at:at + self.k * d_out * d_in].view(self.k, d_out, d_in))
            at += self.k * d_out * d_in
            biases.append(flat[at:at + self.k * d_out].view(self.k, 1, d_out))
            at += self.k * d_out
        return weights, biases

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def forward_one(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Model j's logits (n, 10) for inputs (n, 784) in evaluation mode.

        The same operations on the same memory layout as `EncoderDecoder` in eval mode, so the
        numbers match the unstacked module bit for bit.
        """
        h = x
        for w, b, relu in zip(self.weights, self.biases, _RELU_AFTER, strict=True):
            h = F.linear(h, w[j], b[j, 0])  # (n, d_out)
            if relu:
                h.relu_()  # in place: the same values, no second (n, d_out) allocation
        return h

    def to_models(self, dropout: float) -> list[EncoderDecoder]:
        """Unstack into K ordinary `EncoderDecoder` modules on the CPU, in eval mode."""
        models = []
        for j in range(self.k):
            model = EncoderDecoder(self.latent_dim, dropout)
            state = {}
            for n, w, b in zip(_LAYERS, self.weights, self.biases, strict=True):
                state[f"{n}.weight"] = w[j].detach().contiguous().cpu()
                state[f"{n}.bias"] = b[j, 0].detach().contiguous().cpu()
            model.load_state_dict(state)
            models.append(model.eval())
        return models


@torch.no_grad()
def evaluate_stacked(
    stacked: StackedModels, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model accuracy (fraction) and mean cross-entropy on (x, y), each of shape (K,)."""
    correct = torch.zeros(stacked.k, dtype=torch.float64)
    loss = torch.zeros(stacked.k, dtype=torch.float64)
    for j in range(stacked.k):
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            logits = stacked.forward_one(j, xb)  # (b, 10)
            correct[j] += float((logits.argmax(-1) == yb).sum())
            loss[j] += float(F.cross_entropy(logits, yb, reduction="sum").double())
    n = x.shape[0]
    return correct / n, loss / n


class _Buffers:
    """Activations and gradients of one step for batch size b, allocated once."""

    def __init__(self, k: int, b: int, shapes: list[tuple[int, int]], device: torch.device,
                 dtype: torch.dtype):
        opts = {"device": device, "dtype": dtype}
        self.x = torch.empty(k * b, INPUT_DIM, **opts)  # (K * b, 784), gathered inputs
        self.acts = [torch.empty(k, b, d_out, **opts) for d_out, _ in shapes]
        # Gradient with respect to each layer's input, for every layer but the first.
        self.grads = [None] + [torch.empty(k, b, d_in, **opts) for _, d_in in shapes[1:]]
        width = sum(shapes[i][0] for i in range(len(shapes)) if _DROPOUT_AFTER[i])
        self.raw_keep = np.empty((k, b * width), dtype=np.bool_)  # per model, layer after layer
        self.keep = torch.empty(k, b * width, **opts)  # 0 (dropped) or 1 (kept)
        self.targets = torch.empty(k, b, 1, dtype=torch.int64, device=device)
        self.minus_one = torch.full((k, b, 1), -1.0, device=device)
        # Each dropout layer's mask as a (K, b, width) view of `keep`.
        self.masks: list[torch.Tensor | None] = []
        at = 0
        for i, (d_out, _) in enumerate(shapes):
            if not _DROPOUT_AFTER[i]:
                self.masks.append(None)
                continue
            self.masks.append(self.keep[:, at * b:(at + d_out) * b].view(k, b, d_out))
            at += d_out


class BatchedTrainer:
    """The training loop of `train_models`, one epoch at a time (the benchmark times these).

    Parameters
    ----------
    seeds : the K model seeds
    x_train : float tensor of shape (n_train, 784), normalised
    y_train : int64 tensor of shape (n_train,)
    latent_dim : bottleneck width
    settings : hyper-parameters; the seed experiment's when None
    device : where to train

    Raises
    ------
    ValueError
        if `seeds` is empty, or `settings` holds a dropout outside [0, 1), a batch size below
        1 or an unknown precision.

    Examples
    --------
    >>> x, y = torch.randn(512, 784), torch.randint(0, 10, (512,))
    >>> trainer = BatchedTrainer([42, 123], x, y)
    >>> trainer.train_epoch().shape  # mean training cross-entropy per model
    torch.Size([2])
    >>> len(trainer.stacked.to_models(dropout=0.2))
    2
    """

    def __init__(
        self,
        seeds: Sequence[int],
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        latent_dim: int = 32,
        settings: TrainSettings | None = None,
        device: str | torch.device = "cpu",
    ):
        s = settings or TrainSettings()
        if len(seeds) == 0:
            raise ValueError("seeds: got an empty list; give at least one model seed")
        if s.batch_size < 1:
            raise ValueError(f"batch_size: got {s.batch_size}; allowed is 1 or more")
        if not 0.0 <= s.dropout < 1.0:
            raise ValueError(f"dropout: got {s.dropout}; allowed is 0 <= dropout < 1")
        if s.precision not in PRECISIONS:
            raise ValueError(f"precision: got {s.precision!r}; allowed are "
                             f"{', '.join(map(repr, PRECISIONS))}")
        self.settings = s
        self.device = torch.device(device)
        self.k = len(seeds)
        self.dtype = PRECISIONS[s.precision]
        self.x_train = x_train.to(self.device, self.dtype)  # a copy only for bfloat16
        self.y_train = y_train.to(self.device)
        self.n = self.x_train.shape[0]

        # 1. Each model's own initialisation and random streams.
        models = [build_model(sd, latent_dim, s.dropout) for sd in seeds]
        self.stacked = StackedModels(models, self.device)
        derived = [derive_seeds(sd) for sd in seeds]
        self.shuffle_gens = [torch.Generator().manual_seed(a) for a, _ in derived]
        self.dropout_gens = [np.random.SFC64(b) for _, b in derived]
        self.threshold = keep_threshold(s.dropout)
        # Dropout's 1 / (1 - p) is not applied to the activations but folded into the alpha of
        # every product that reads them: layer i's input is scaled by in_scale[i].
        keep_scale = 1.0 / (1.0 - s.dropout)
        self.in_scale = [keep_scale if i > 0 and _DROPOUT_AFTER[i - 1] and s.dropout > 0
                         else 1.0 for i in range(len(_LAYERS))]

        # 2. Adam state over the flat buffer (Adam is elementwise: one Adam over the K models'
        #    buffer is K independent Adams).
        self.exp_avg = torch.zeros_like(self.stacked.flat)
        self.exp_avg_sq = torch.zeros_like(self.stacked.flat)
        self.step_count = torch.zeros((), dtype=torch.float32, device=self.device)

        # 3. What the products read and write: the float32 buffers themselves, or bfloat16
        #    copies (weights cast before every step, gradients cast back after it).
        st = self.stacked
        if self.dtype == torch.float32:
            self._flat_c = self._grad_c = None
            self.w, self.b = st.weights, st.biases
            self.gw, self.gb = st.grad_weights, st.grad_biases
        else:
            self._flat_c = torch.empty_like(st.flat, dtype=self.dtype)
            self._grad_c = torch.empty_like(st.flat, dtype=self.dtype)
            self.w, self.b = st.views(self._flat_c)
            self.gw, self.gb = st.views(self._grad_c)
        self._buffers: dict[int, _Buffers] = {}
        self.epoch = 0

    def _buffers_for(self, b: int) -> _Buffers:
        if b not in self._buffers:
            self._buffers[b] = _Buffers(self.k, b, self.stacked.shapes, self.device, self.dtype)
        return self._buffers[b]

    def _draw_masks(self, buf: _Buffers) -> None:
        """Each model's dropout masks for one step, from its own bit generator."""
        words = buf.raw_keep.shape[1] // 4
        for j, gen in enumerate(self.dropout_gens):
            lanes = gen.random_raw(words).view(np.uint16)  # (b * width,)
            np.less(lanes, self.threshold, out=buf.raw_keep[j])
        buf.keep.copy_(torch.from_numpy(buf.raw_keep.view(np.uint8)))  # (K, b * width)

    def _step(self, idx: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step of every model on its batch `idx` (K, b); returns summed CE (K,)."""
        st = self.stacked
        k, b = idx.shape
        buf = self._buffers_for(b)

        # 1. Gather the batches and draw the masks.
        flat_idx = idx.reshape(-1)  # (K * b,)
        torch.index_select(self.x_train, 0, flat_idx, out=buf.x)
        x = buf.x.view(k, b, INPUT_DIM)  # (K, b, 784)
        torch.index_select(self.y_train, 0, flat_idx, out=buf.targets.view(-1))
        if self.settings.dropout > 0:
            self._draw_masks(buf)
        if self._flat_c is not None:
            self._flat_c.copy_(st.flat)

        # 2. Forward: z = scale * a W^T + b, then ReLU and the 0/1 dropout mask in place.
        a = x
        for i, (w, bias) in enumerate(zip(self.w, self.b, strict=True)):
            z = torch.baddbmm(bias, a, w.transpose(1, 2), alpha=self.in_scale[i],
                              out=buf.acts[i])  # (K, b, d_out)
            if _RELU_AFTER[i]:
                z.relu_()
            if _DROPOUT_AFTER[i] and self.settings.dropout > 0:
                z.mul_(buf.masks[i])
            a = z

        # 3. Cross-entropy and its gradient with respect to the logits, (softmax - onehot) / b,
        #    in float32 (written out: log_softmax's kernel is slow on a last dimension of 10).
        shifted = a.float() - a.amax(dim=-1, keepdim=True)  # (K, b, 10)
        e = shifted.exp()
        total = e.sum(dim=-1, keepdim=True)  # (K, b, 1)
        ce = (total.log() - shifted.gather(2, buf.targets)).sum((1, 2))  # (K,)
        g = e.div_(total).scatter_add_(2, buf.targets, buf.minus_one).mul_(1.0 / b)
        g = g.to(self.dtype)

        # 4. Backward, writing the gradients into the flat gradient buffer.
        for i in range(len(self.w) - 1, -1, -1):
            a_in = x if i == 0 else buf.acts[i - 1]  # (K, b, d_in)
            scale = self.in_scale[i]
            gw = self.gw[i]  # (K, d_out, d_in)
            torch.baddbmm(gw, g.transpose(1, 2), a_in, beta=0.0, alpha=scale, out=gw)
            torch.sum(g, dim=1, keepdim=True, out=self.gb[i])  # (K, 1, d_out)
            if i == 0:
                break
            # Through the scale, the mask and the ReLU: an input unit passes gradient only
            # where its (masked) activation is positive.
            g_in = buf.grads[i]  # (K, b, d_in)
            torch.baddbmm(g_in, g, self.w[i], beta=0.0, alpha=scale, out=g_in)
            torch.ops.aten.threshold_backward.grad_input(g_in, a_in, 0.0, grad_input=g_in)
            g = g_in

        # 5. One fused Adam step over all K models' float32 parameters.
        if self._grad_c is not None:
            st.flat_grad.copy_(self._grad_c)
        functional_adam(
            [st.flat], [st.flat_grad], [self.exp_avg], [self.exp_avg_sq], [],
            [self.step_count], fused=True, amsgrad=False, beta1=_ADAM_BETAS[0],
            beta2=_ADAM_BETAS[1], lr=lr, weight_decay=0.0, eps=_ADAM_EPS, maximize=False,
        )
        return ce

    def train_epoch(self) -> torch.Tensor:
        """One pass over the training set for every model; mean training CE of shape (K,)."""
        s = self.settings
        self.epoch += 1
        lr = s.lr * s.lr_gamma ** ((self.epoch - 1) // s.lr_step)  # StepLR
        perms = torch.stack(
            [torch.randperm(self.n, generator=g) for g in self.shuffle_gens]
        ).to(self.device)  # (K, n)
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=self.device)
        for i in range(0, self.n, s.batch_size):
            ce = self._step(perms[:, i:i + s.batch_size], lr)
            loss_sum += ce
        return (loss_sum / self.n).cpu()


def train_models(
    seeds: Sequence[int],
    names: Sequence[str],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    latent_dim: int = 32,
    settings: TrainSettings | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, list[dict]], None] | None = None,
) -> list[TrainedModel]:
    """Train one model per seed, all in one batched pass.

    Parameters
    ----------
    seeds : the K model seeds; each sets initialisation, shuffle order and dropout masks
    names : K display names, in the same order
    x_train : float tensor of shape (n_train, 784), already normalised
    y_train : int64 tensor of shape (n_train,)
    x_test, y_test : the same for the test set, evaluated after every epoch
    latent_dim : bottleneck width
    settings : hyper-parameters; the seed experiment's when None
    device : where to train
    on_epoch : called after every epoch with (epoch, one metrics dict per model)

    Returns
    -------
    list of TrainedModel, in the order of `seeds`, their modules on the CPU in eval mode

    Raises
    ------
    TrainingDiverged
        if a model's training loss becomes NaN or infinite; the message names the model.
    ValueError
        if `names` and `seeds` differ in length, or for the settings `BatchedTrainer` refuses.

    Examples
    --------
    >>> x, y = torch.randn(512, 784), torch.randint(0, 10, (512,))
    >>> out = train_models([42, 123], ["A", "B"], x, y, x[:100], y[:100],
    ...                    settings=TrainSettings(epochs=1))
    >>> [m.name for m in out], len(out[0].history)
    (['A', 'B'], 1)
    """
    s = settings or TrainSettings()
    k = len(seeds)
    if len(names) != k:
        raise ValueError(f"names: got {len(names)} names for {k} seeds; give one per seed")
    trainer = BatchedTrainer(seeds, x_train, y_train, latent_dim, s, device)
    x_test, y_test = x_test.to(trainer.device), y_test.to(trainer.device)

    histories: list[list[dict]] = [[] for _ in seeds]
    start = time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        # 1. One epoch of batched steps.
        t0 = time.perf_counter()
        train_loss = trainer.train_epoch()

        # 2. Check for divergence, evaluate, record.
        bad = [names[j] for j in range(k) if not math.isfinite(float(train_loss[j]))]
        if bad:
            raise TrainingDiverged(
                f"model {', '.join(bad)} diverged in epoch {epoch} (training loss is not finite); "
                f"lower --lr (now {s.lr}) and run again"
            )
        acc, test_loss = evaluate_stacked(trainer.stacked, x_test, y_test, s.eval_batch_size)
        seconds = time.perf_counter() - t0
        metrics = []
        for j in range(k):
            row = {
                "epoch": epoch,
                "train_loss": float(train_loss[j]),
                "test_loss": float(test_loss[j]),
                "test_accuracy": float(acc[j]),
                "seconds": seconds / k,
            }
            histories[j].append(row)
            metrics.append({"name": names[j], **row})
        log.debug("epoch %d: %s", epoch, metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    # 3. Unstack into ordinary modules.
    wall = time.perf_counter() - start
    out = []
    for j, model in enumerate(trainer.stacked.to_models(s.dropout)):
        last = histories[j][-1] if histories[j] else {}
        out.append(TrainedModel(
            name=names[j], seed=int(seeds[j]), latent_dim=latent_dim, model=model,
            history=histories[j], test_accuracy=last.get("test_accuracy", float("nan")),
            test_loss=last.get("test_loss", float("nan")), train_seconds=wall / k,
        ))
    return out
