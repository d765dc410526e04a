"""The encoder-decoder classifier of the seed experiment, and spliced compositions of its halves.

Encoder 784 -> 256 -> 128 -> d, ReLU after every layer (the bottleneck too), Dropout(0.2) after
the first two; decoder d -> 128 -> 256 -> 10, ReLU and Dropout(0.2) after the first two, logits
out. State-dict keys are ``encoder.net.{0,3,6}.{weight,bias}`` and ``decoder.net.{0,3,6}...``.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_DIM = 784
ENCODER_HIDDEN = (256, 128)
DECODER_HIDDEN = (128, 256)
NUM_CLASSES = 10


def _mlp(widths: list[int], dropout: float, relu_last: bool) -> nn.Sequential:
    """Linear layers over `widths`, each but the last followed by ReLU and Dropout."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        last = i == len(widths) - 2
        if not last:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        elif relu_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """784 -> 256 -> 128 -> latent_dim, ReLU after every layer, dropout after the first two."""

    def __init__(self, latent_dim: int = 32, dropout: float = 0.2, input_dim: int = INPUT_DIM):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([input_dim, *ENCODER_HIDDEN, latent_dim], dropout, relu_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (n, latent_dim)


class Decoder(nn.Module):
    """latent_dim -> 128 -> 256 -> 10 logits, ReLU and dropout after the first two layers."""

    def __init__(self, latent_dim: int = 32, dropout: float = 0.2, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([latent_dim, *DECODER_HIDDEN, num_classes], dropout, relu_last=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (n, 10)


class EncoderDecoder(nn.Module):
    """The full classifier: ``decoder(encoder(x))``.

    Examples
    --------
    >>> model = EncoderDecoder(latent_dim=32)
    >>> model(torch.zeros(5, 784)).shape
    torch.Size([5, 10])
    """

    def __init__(self, latent_dim: int = 32, dropout: float = 0.2):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim, dropout)
        self.decoder = Decoder(latent_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def build_model(seed: int, latent_dim: int = 32, dropout: float = 0.2) -> EncoderDecoder:
    """A model initialised from `seed` alone, whatever the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EncoderDecoder(latent_dim, dropout)


class Spliced(nn.Module):
    """``decoder(aligner(encoder(x)))``: one model's encoder driving another's decoder.

    `aligner` is anything with ``transform(z) -> z'`` (a `stitchlab.align` Aligner), an
    ``nn.Module``, or None for the raw splice.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, aligner=None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.aligner = aligner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)  # (n, d_source)
        if self.aligner is not None:
            transform = getattr(self.aligner, "transform", None) or self.aligner
            z = transform(z)  # (n, d_target)
        return self.decoder(z)


def splice(encoder: nn.Module, decoder: nn.Module, aligner=None) -> nn.Module:
    """Compose `encoder`, an optional `aligner`, and `decoder` into one module.

    Parameters
    ----------
    encoder : nn.Module mapping inputs of shape (n, 784) to latents (n, d_source)
    decoder : nn.Module mapping latents (n, d_target) to logits (n, 10)
    aligner : optional map from (n, d_source) to (n, d_target), with ``.transform`` or callable

    Returns
    -------
    torch.nn.Module; call ``.eval()`` on it before measuring accuracy.

    Examples
    --------
    >>> a, b = build_model(42), build_model(123)
    >>> splice(a.encoder, b.decoder).eval()(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """
    return Spliced(encoder, decoder, aligner)
