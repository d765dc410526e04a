"""Checkpoints: safetensors weights plus JSON metadata, shape-checked on loading.

A checkpoint holds the state dict of one `EncoderDecoder` and, under the safetensors metadata
key ``stitchlab``, a JSON object with at least ``seed``, ``latent_dim``, ``dataset``,
``test_accuracy``, ``stitchlab_version`` and the resolved ``config`` it was trained with.
Loading never unpickles anything: safetensors stores raw tensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CheckpointError
from .fileio import atomic_write_bytes
from .models import EncoderDecoder

META_KEY = "stitchlab"


def save_checkpoint(path: str | os.PathLike, model: EncoderDecoder, metadata: dict) -> Path:
    """Write `model`'s weights and `metadata` to `path` atomically.

    Parameters
    ----------
    path : destination, conventionally ``RUN/models/NAME.safetensors``
    model : the model to save
    metadata : JSON-serialisable facts about it (seed, data set, accuracy, config, ...)
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"latent_dim": model.latent_dim, "stitchlab_version": __version__, **metadata}
    blob = st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return atomic_write_bytes(path, blob)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The raw tensors and metadata of a checkpoint, without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        blob = path.read_bytes()
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get(META_KEY, "{}"))
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({exc}); retrain or copy it again"
        ) from exc
    return tensors, meta


def check_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> None:
    """Raise CheckpointError unless `state` has exactly `model`'s keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)"
        )
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            width = getattr(model, "latent_dim", None)
            hint = f" (the model asked for has latent width {width})" if width else ""
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(got.shape)} in the file but "
                f"{tuple(want.shape)} in the model{hint}"
            )


def load_checkpoint(
    path: str | os.PathLike, latent_dim: int | None = None
) -> tuple[EncoderDecoder, dict]:
    """Load a stitchlab checkpoint into a new `EncoderDecoder` in eval mode.

    Parameters
    ----------
    path : the .safetensors file
    latent_dim : the width the caller expects; None takes the width stored in the file

    Returns
    -------
    (model, metadata)

    Raises
    ------
    CheckpointError
        if the file is missing or unreadable, or its tensors do not fit the model; a width
        mismatch names both widths.
    """
    tensors, meta = read_checkpoint(path)
    stored = meta.get("latent_dim")
    if stored is None and "encoder.net.6.weight" in tensors:
        stored = int(tensors["encoder.net.6.weight"].shape[0])
    width = latent_dim if latent_dim is not None else stored
    if width is None:
        raise CheckpointError(f"{path}: no latent width in the file; pass latent_dim")
    if stored is not None and latent_dim is not None and int(stored) != int(latent_dim):
        raise CheckpointError(
            f"{path}: checkpoint has latent width {stored} but a model of width {latent_dim} "
            f"was asked for; load it with latent_dim={stored}"
        )
    model = EncoderDecoder(int(width), dropout=float(meta.get("dropout", 0.2)))
    check_state_dict(tensors, model, str(path))
    model.load_state_dict(tensors)
    return model.eval(), meta
