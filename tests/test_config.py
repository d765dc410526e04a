"""Config loading and validation: every bad key or value is named in the message."""

from __future__ import annotations

import pytest

from stitchlab import config as cfg
from stitchlab.errors import ConfigError


def test_defaults_are_the_seed_experiment():
    c = cfg.from_dict({})
    assert (c.dataset, c.seeds, c.latent_dims, c.epochs, c.batch_size, c.lr) == (
        "mnist", [42, 123], [32], 10, 256, 1e-3)
    assert [n for n, _, _ in cfg.model_names(c)] == ["A", "B"]


def test_toml_roundtrip(tmp_path):
    c = cfg.from_dict({"seeds": [1, 2, 3], "epochs": 3, "align": {"repeats": 2}})
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    again = cfg.from_dict(cfg.load_toml(path))
    assert again == c


@pytest.mark.parametrize("data, message", [
    ({"epoch": 3}, r"unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ({"align": {"repeat": 3}}, r"unknown key 'align.repeat'"),
    ({"epochs": 0}, r"'epochs' must be positive, got 0"),
    ({"epochs": -2}, r"'epochs' must be positive, got -2"),
    ({"epochs": "ten"}, r"'epochs' must be an integer, got 'ten'"),
    ({"epochs": 2.5}, r"'epochs' must be an integer"),
    ({"batch_size": 0}, r"'batch_size' must be positive"),
    ({"lr": -1.0}, r"'lr' must be a positive finite number"),
    ({"dropout": 1.0}, r"'dropout' must lie in \[0, 1\)"),
    ({"seeds": [1, 1]}, r"'seeds' repeats 1"),
    ({"seeds": []}, r"'seeds' must list at least one seed"),
    ({"seeds": [-1]}, r"'seeds' holds -1"),
    ({"latent_dims": [0]}, r"'latent_dims' holds 0"),
    ({"latent_dims": 32}, r"'latent_dims' must be a list"),
    ({"dataset": "cifar"}, r"'dataset' must be one of mnist, fashion-mnist"),
    ({"device": "tpu"}, r"'device' must be one of auto, cpu, cuda"),
    ({"align": {"anchors": [0]}}, r"'align.anchors' holds 0"),
    ({"align": 3}, r"section 'align' must be a table"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict(data)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        cfg.load_toml(path)
    with pytest.raises(ConfigError, match="config file not found"):
        cfg.load_toml(tmp_path / "absent.toml")
