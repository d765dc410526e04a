"""The batched trainer: gradients, random streams, determinism, and batch-of-K against alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stitchlab import data
from stitchlab.models import splice
from stitchlab.training import (
    _DROPOUT_AFTER,
    _RELU_AFTER,
    BatchedTrainer,
    TrainSettings,
    keep_threshold,
    train_models,
)


@pytest.fixture(scope="module")
def mnist():
    """Real MNIST: the first 12,000 training and 2,000 test images, normalised."""
    ds = data.load("mnist")
    return (ds.inputs("train")[:12000], ds.labels("train")[:12000],
            ds.inputs("test")[:2000], ds.labels("test")[:2000])


@pytest.mark.parametrize("dropout", [0.2, 0.0])
def test_hand_written_backward_matches_autograd(dropout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 784, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)
    settings = TrainSettings(batch_size=64, dropout=dropout)
    trainer = BatchedTrainer([1, 2, 3], x, y, settings=settings)
    st = trainer.stacked
    weights = [w.clone().requires_grad_() for w in st.weights]
    biases = [b.clone().requires_grad_() for b in st.biases]
    idx = torch.stack([torch.randperm(300, generator=gen)[:64] for _ in range(3)])  # (3, 64)

    # 1. One hand-written step (its masks stay in the step's buffers).
    ce = trainer._step(idx, lr=1e-3)
    masks = trainer._buffers[64].masks  # 0 or 1; the 1 / (1 - p) is applied below

    # 2. The same forward pass through autograd, with the same masks.
    a = x[idx]  # (3, 64, 784)
    for i in range(6):
        a = torch.baddbmm(biases[i], a, weights[i].transpose(1, 2))
        if _RELU_AFTER[i]:
            a = a.relu()
        if _DROPOUT_AFTER[i] and dropout > 0:
            a = a * masks[i] / (1 - dropout)
    loss = F.cross_entropy(a.reshape(-1, 10), y[idx].reshape(-1), reduction="none")
    loss = loss.reshape(3, 64).mean(1)  # (3,)
    loss.sum().backward()

    torch.testing.assert_close(ce / 64, loss.detach())
    for i in range(6):
        torch.testing.assert_close(st.grad_weights[i], weights[i].grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(st.grad_biases[i], biases[i].grad, rtol=1e-4, atol=1e-7)


def test_keep_probability_is_documented_and_drawn():
    assert keep_threshold(0.2) == 52429  # keep 52429 / 65536 = 0.80000305
    assert keep_threshold(0.0) == 65536
    x = torch.zeros(512, 784)
    trainer = BatchedTrainer([5], x, torch.zeros(512, dtype=torch.int64))
    trainer._step(torch.arange(512).reshape(1, 512)[:, :256], lr=0.0)
    keep = trainer._buffers[256].keep  # (1, 256 * 768), values 0 or 1
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(keep.ne(0).float().mean().item() - 0.8) < 0.005  # 196,608 draws: 5 sigma


def test_dropout_out_of_range_names_the_parameter():
    x, y = torch.zeros(4, 784), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"dropout: got 1.0; allowed is 0 <= dropout < 1"):
        BatchedTrainer([1], x, y, settings=TrainSettings(dropout=1.0))


def test_a_models_random_streams_do_not_depend_on_its_batch(mnist):
    x, y = mnist[0][:2048], mnist[1][:2048]
    alone = BatchedTrainer([42], x, y)
    batch = BatchedTrainer([7, 42, 123], x, y)

    # 1. The first step's masks and shuffle order of seed 42 are the same numbers.
    perm_alone = torch.randperm(2048, generator=alone.shuffle_gens[0])
    perm_batch = torch.randperm(2048, generator=batch.shuffle_gens[1])
    assert torch.equal(perm_alone, perm_batch)
    alone._step(perm_alone[:256].reshape(1, -1), lr=1e-3)
    batch._step(torch.stack([perm_batch[:256]] * 3), lr=1e-3)
    assert torch.equal(alone._buffers[256].keep[0], batch._buffers[256].keep[1])

    # 2. After one epoch more (8 steps) its weights agree to float tolerance.
    alone.train_epoch()
    batch.train_epoch()
    for w_alone, w_batch in zip(alone.stacked.weights, batch.stacked.weights, strict=True):
        torch.testing.assert_close(w_alone[0], w_batch[1], rtol=1e-4, atol=1e-5)


def test_same_config_gives_the_same_bits(mnist):
    x, y = mnist[0][:2048], mnist[1][:2048]
    runs = []
    for _ in range(2):
        trainer = BatchedTrainer([42, 123], x, y)
        trainer.train_epoch()
        runs.append(trainer.stacked.flat.clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.slow
def test_batched_models_match_alone_in_accuracy_and_splice_pattern(mnist):
    x, y, xt, yt = mnist
    settings = TrainSettings(epochs=2)
    batched = train_models([42, 123], ["A", "B"], x, y, xt, yt, settings=settings)
    alone = [train_models([sd], [name], x, y, xt, yt, settings=settings)[0]
             for sd, name in ((42, "A"), (123, "B"))]

    # 1. Each model's accuracy is the same within noise whether trained alone or in a batch
    #    (the same random numbers; only summation order differs).
    for b, a in zip(batched, alone, strict=True):
        assert b.test_accuracy > 0.8, b.test_accuracy
        assert abs(b.test_accuracy - a.test_accuracy) < 0.01, (b.test_accuracy, a.test_accuracy)

    # 2. Both give the same splice pattern: diagonal high, off-diagonal collapsed.
    for models in (batched, alone):
        acc = [[(splice(e.model.encoder, d.model.decoder).eval()(xt).argmax(1) == yt)
                .float().mean().item() for d in models] for e in models]
        assert acc[0][0] > 0.8 and acc[1][1] > 0.8, acc
        assert acc[0][1] < 0.35 and acc[1][0] < 0.35, acc
