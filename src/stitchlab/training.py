"""Training: K encoder-decoder models of one shape at once, each from its own seed.

The K models' weights are stacked into tensors of shape (K, d_in, d_out) and every layer is one
batched matrix product, so a zoo of models costs little more per model than one. Each model keeps
everything that makes it itself: its initialisation (`models.build_model(seed)`), its shuffle
order and its dropout masks, each drawn from generators seeded from its own seed alone. A model
trained in a batch of K therefore sees exactly the random numbers it would see alone; only the
order of floating-point sums inside the batched products can differ.

Hyper-parameters are the seed experiment's: Adam (lr 1e-3), batch 256, StepLR(5, 0.5),
cross-entropy, 10 epochs, a fresh shuffle every epoch, the last partial batch kept.

Reproduce the headline figure (two MNIST models, 10 epochs):
    stitchlab run --out runs/default
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

from .errors import TrainingDiverged
from .models import DECODER_HIDDEN, ENCODER_HIDDEN, EncoderDecoder, build_model

log = logging.getLogger(__name__)

# Linear layers of the model in order, with the activations that follow each one.
_LAYERS = ("encoder.net.0", "encoder.net.3", "encoder.net.6",
           "decoder.net.0", "decoder.net.3", "decoder.net.6")
_RELU_AFTER = (True, True, True, True, True, False)
_DROPOUT_AFTER = (True, True, False, True, True, False)


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


class StackedModels:
    """K models of one shape as stacked tensors: weights (K, d_in, d_out), biases (K, 1, d_out)."""

    def __init__(self, models: Sequence[EncoderDecoder], device: torch.device):
        states = [m.state_dict() for m in models]
        self.latent_dim = models[0].latent_dim
        self.weights = [
            torch.stack([s[f"{n}.weight"].t() for s in states]).to(device).requires_grad_()
            for n in _LAYERS
        ]
        self.biases = [
            torch.stack([s[f"{n}.bias"] for s in states]).unsqueeze(1).to(device).requires_grad_()
            for n in _LAYERS
        ]

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of shape (K, n, 10) for inputs of shape (K, n, 784) or (n, 784).

        `masks` holds one (K, n, width) keep-mask per dropout layer, already scaled by
        1 / (1 - p); None means evaluation mode (no dropout).
        """
        h = x
        m = 0
        for w, b, relu, drop in zip(self.weights, self.biases, _RELU_AFTER, _DROPOUT_AFTER,
                                    strict=True):
            # (K, n, d_in) @ (K, d_in, d_out); an unbatched (n, d_in) input broadcasts over K.
            h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
            if relu:
                h = torch.relu(h)
            if drop and masks is not None:
                h = h * masks[m]
                m += 1
        return h

    def to_models(self, dropout: float) -> list[EncoderDecoder]:
        """Unstack into K ordinary `EncoderDecoder` modules on the CPU."""
        models = []
        for k in range(self.weights[0].shape[0]):
            model = EncoderDecoder(self.latent_dim, dropout)
            state = {}
            for n, w, b in zip(_LAYERS, self.weights, self.biases, strict=True):
                state[f"{n}.weight"] = w[k].detach().t().contiguous().cpu()
                state[f"{n}.bias"] = b[k, 0].detach().contiguous().cpu()
            model.load_state_dict(state)
            models.append(model.eval())
        return models


@torch.no_grad()
def evaluate_stacked(
    stacked: StackedModels, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model accuracy (fraction) and mean cross-entropy on (x, y), each of shape (K,)."""
    k = stacked.weights[0].shape[0]
    correct = torch.zeros(k, device=x.device)
    loss = torch.zeros(k, device=x.device, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        logits = stacked.forward(xb)  # (K, b, 10)
        correct += (logits.argmax(-1) == yb).sum(-1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(k), reduction="none")
        loss += ce.reshape(k, -1).double().sum(-1)
    n = x.shape[0]
    return correct / n, loss / n


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
    """
    s = settings or TrainSettings()
    device = torch.device(device)
    k = len(seeds)
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    n = x_train.shape[0]

    # 1. Each model's own initialisation and random streams.
    stacked = StackedModels([build_model(sd, latent_dim, s.dropout) for sd in seeds], device)
    gens = [derive_seeds(sd) for sd in seeds]
    shuffle_gens = [torch.Generator().manual_seed(a) for a, _ in gens]
    dropout_gens = [torch.Generator().manual_seed(b) for _, b in gens]
    widths = [*ENCODER_HIDDEN, *DECODER_HIDDEN]  # the four dropout layers
    total_width = sum(widths)
    keep_scale = 1.0 / (1.0 - s.dropout) if s.dropout < 1 else 0.0

    # 2. Optimizer and schedule, over the stacked tensors (Adam is elementwise, so one Adam
    #    over the stack is K independent Adams).
    opt = torch.optim.Adam(stacked.parameters, lr=s.lr, foreach=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.lr_step, gamma=s.lr_gamma)

    histories: list[list[dict]] = [[] for _ in seeds]
    start = time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in shuffle_gens]).to(device)
        loss_sum = torch.zeros(k, device=device, dtype=torch.float64)

        # 3. One epoch of batched steps.
        for i in range(0, n, s.batch_size):
            idx = perms[:, i:i + s.batch_size]  # (K, b)
            b = idx.shape[1]
            xb = x_train[idx]  # (K, b, 784)
            yb = y_train[idx]  # (K, b)
            masks = None
            if s.dropout > 0:
                u = torch.stack([torch.rand(b, total_width, generator=g) for g in dropout_gens])
                keep = (u >= s.dropout).to(device=device, dtype=xb.dtype) * keep_scale
                masks = list(keep.split(widths, dim=-1))  # each (K, b, width)
            logits = stacked.forward(xb, masks)  # (K, b, 10)
            ce = F.cross_entropy(logits.reshape(k * b, -1), yb.reshape(-1), reduction="none")
            per_model = ce.reshape(k, b).mean(-1)  # (K,)
            opt.zero_grad(set_to_none=True)
            per_model.sum().backward()
            opt.step()
            loss_sum += per_model.detach().double() * b
        sched.step()

        # 4. Check for divergence, evaluate, record.
        train_loss = (loss_sum / n).cpu()
        bad = [names[j] for j in range(k) if not math.isfinite(float(train_loss[j]))]
        if bad:
            raise TrainingDiverged(
                f"model {', '.join(bad)} diverged in epoch {epoch} (training loss is not finite); "
                f"lower --lr (now {s.lr}) and run again"
            )
        acc, test_loss = evaluate_stacked(stacked, x_test, y_test, s.eval_batch_size)
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

    # 5. Unstack into ordinary modules.
    wall = time.perf_counter() - start
    out = []
    for j, model in enumerate(stacked.to_models(s.dropout)):
        last = histories[j][-1] if histories[j] else {}
        out.append(TrainedModel(
            name=names[j], seed=int(seeds[j]), latent_dim=latent_dim, model=model,
            history=histories[j], test_accuracy=last.get("test_accuracy", float("nan")),
            test_loss=last.get("test_loss", float("nan")), train_seconds=wall / k,
        ))
    return out
