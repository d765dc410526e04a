"""Checkpoint round trips and the shape checks on loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from stitchlab.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from stitchlab.errors import CheckpointError
from stitchlab.models import build_model


def test_roundtrip_is_bit_exact_and_keeps_metadata(tmp_path):
    model = build_model(7, latent_dim=32)
    path = save_checkpoint(tmp_path / "m.safetensors", model,
                           {"seed": 7, "dataset": "mnist", "test_accuracy": 0.5})
    loaded, meta = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert meta["seed"] == 7 and meta["latent_dim"] == 32 and meta["dataset"] == "mnist"
    assert "stitchlab_version" in meta
    assert not loaded.training
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_loading_into_another_width_names_both_widths(tmp_path):
    path = save_checkpoint(tmp_path / "w64.safetensors", build_model(1, latent_dim=64), {})
    with pytest.raises(CheckpointError, match="latent width 64 .* width 32"):
        load_checkpoint(path, latent_dim=32)


def test_tensor_shape_mismatch_names_the_key_and_shapes(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(1, latent_dim=64), {})
    tensors, meta = read_checkpoint(path)
    meta["latent_dim"] = 32  # a file that lies about its width
    save_file(tensors, str(path), metadata={"stitchlab": json.dumps(meta)})
    message = r"'encoder.net.6.weight' has shape \(64, 128\) .* \(32, 128\)"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_garbage_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
