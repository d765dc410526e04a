"""The N x N splice table: every encoder with every decoder on the test set.

Each encoder's latents are computed once; each decoder then runs on every encoder's latents, so
the table costs N encoder passes and N^2 decoder passes. Row = encoder, column = decoder; the
diagonal is each model's own accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def encode(encoder: nn.Module, x: torch.Tensor, batch_size: int = 10000) -> torch.Tensor:
    """Latents of `x` (n, 784) under `encoder` in eval mode, shape (n, d)."""
    encoder.eval()
    return torch.cat([encoder(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def decode_metrics(decoder: nn.Module, z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy as a fraction, mean cross-entropy) of `decoder` on latents `z` (n, d)."""
    decoder.eval()
    logits = decoder(z)  # (n, 10)
    accuracy = (logits.argmax(1) == y).float().mean().item()
    return accuracy, F.cross_entropy(logits, y).item()


def splice_table(
    names: Sequence[str],
    test_latents: Mapping[str, torch.Tensor],
    decoders: Mapping[str, nn.Module],
    labels: torch.Tensor,
) -> dict:
    """Accuracy and loss of every (encoder, decoder) pair whose widths agree.

    Parameters
    ----------
    names : model names, the order of rows and columns
    test_latents : name -> latents of the test set under that model's encoder, (n, d)
    decoders : name -> that model's decoder
    labels : test labels, shape (n,)

    Returns
    -------
    dict with ``models``, ``accuracy`` and ``loss`` (N x N lists, row = encoder,
    column = decoder); pairs of different widths hold None (they need an aligner).
    """
    acc = [[None] * len(names) for _ in names]
    loss = [[None] * len(names) for _ in names]
    for i, enc in enumerate(names):
        z = test_latents[enc]
        for j, dec in enumerate(names):
            if z.shape[1] != decoders[dec].latent_dim:
                continue
            acc[i][j], loss[i][j] = decode_metrics(decoders[dec], z, labels)
    return {"models": list(names), "accuracy": acc, "loss": loss}
