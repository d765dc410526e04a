"""The configuration of a run: dataclasses, TOML loading, validation with clear messages.

A run is described by one `RunConfig`. It is read from TOML (the same keys as the
``config.toml`` every run writes), then command-line flags override single keys, then
`validate` checks every value. Unknown keys are errors, with the nearest known key suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .errors import ConfigError

DATASET_NAMES = ("mnist", "fashion-mnist")
DEVICES = ("auto", "cpu", "cuda")
MAX_CONFIG_BYTES = 1 << 20


@dataclass
class AlignConfig:
    """Alignment experiments (stitchlab align)."""

    methods: list[str] = field(default_factory=lambda: [
        "procrustes", "affine", "ridge", "permutation", "centroids", "self_centroids",
    ])  # methods in the anchor sweep
    anchors: list[int | str] = field(default_factory=lambda: [
        1, 2, 5, 10, 20, 32, 50, 100, 200, 500, 1000, 5000, "all",
    ])  # anchor counts in the sweep ("all" = the whole training set)
    repeats: int = 5  # anchor draws per count
    repaired_anchors: int = 100  # anchors for the repaired N x N matrix
    seed: int = 0  # seed of the anchor draws
    relative: bool = False  # also train relative-representation decoders (slow, opt-in)
    relative_anchors: int = 300  # anchor images of the relative representation


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (and where it goes)."""

    dataset: str = "mnist"  # "mnist" or "fashion-mnist"
    seeds: list[int] = field(default_factory=lambda: [42, 123])  # one model per seed and width
    latent_dims: list[int] = field(default_factory=lambda: [32])  # bottleneck widths
    epochs: int = 10  # passes over the training set
    batch_size: int = 256  # samples per optimizer step
    lr: float = 1e-3  # Adam learning rate
    lr_step: int = 5  # StepLR: epochs between decays
    lr_gamma: float = 0.5  # StepLR: factor per decay
    dropout: float = 0.2  # dropout probability after hidden layers
    train_samples: int = 0  # use the first n training images (0 = all 60,000)
    test_samples: int = 0  # use the first n test images (0 = all 10,000)
    device: str = "auto"  # "auto" (cuda when present), "cpu" or "cuda"
    data_dir: str = ""  # data directory ("" = STITCHLAB_DATA, bundled data/, cache)
    align: AlignConfig = field(default_factory=AlignConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# Keys that describe where or how fast a run goes, not what it computes.
NON_SCIENTIFIC_KEYS = ("device", "data_dir")
TRAINING_KEYS = ("dataset", "epochs", "batch_size", "lr", "lr_step", "lr_gamma", "dropout",
                 "train_samples", "test_samples")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_value(key: str, value, tp, where: str):
    """Return `value` converted to type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: key {key!r} must be a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, inner, where) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(key, value, option, where)
            except ConfigError:
                continue
        names = " or ".join(_type_name(t) for t in typing.get_args(tp))
        raise ConfigError(f"{where}: key {key!r} must be {names}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: key {key!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: key {key!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key {key!r} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp}")


def _from_mapping(cls, data: dict, where: str, prefix: str = ""):
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: section {prefix.rstrip('.')!r} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{prefix}{key}'{hint}; allowed: {', '.join(fields)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_mapping(tp, value, where, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(prefix + key, value, tp, where)
    return cls(**kwargs)


def from_dict(data: dict, where: str = "config") -> RunConfig:
    """A validated RunConfig from a mapping with config.toml's keys."""
    config = _from_mapping(RunConfig, data, where)
    validate(config, where)
    return config


def load_toml(path: str | os.PathLike) -> dict:
    """The raw mapping in a TOML file; ConfigError (naming the file) when unreadable."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a TOML file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: is not a regular file (a device or pipe?); give a TOML file")
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_CONFIG_BYTES + 1)
        if len(blob) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a config is a few lines of TOML"
            )
        return tomllib.loads(blob.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a stitchlab config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None


def _positive(config, key: str, where: str, allow_zero: bool = False) -> None:
    value = getattr(config, key)
    if value < 0 or (value == 0 and not allow_zero):
        need = "zero or positive" if allow_zero else "positive"
        raise ConfigError(f"{where}: key {key!r} must be {need}, got {value}")


def validate(config: RunConfig, where: str = "config") -> None:
    """Check every value of `config`; raise ConfigError naming the first bad key."""
    if config.dataset not in DATASET_NAMES:
        raise ConfigError(
            f"{where}: key 'dataset' must be one of {', '.join(DATASET_NAMES)}, "
            f"got {config.dataset!r}"
        )
    if config.device not in DEVICES:
        raise ConfigError(
            f"{where}: key 'device' must be one of {', '.join(DEVICES)}, got {config.device!r}"
        )
    for key in ("epochs", "batch_size", "lr_step"):
        _positive(config, key, where)
    for key in ("train_samples", "test_samples"):
        _positive(config, key, where, allow_zero=True)
    if not (config.lr > 0 and config.lr < float("inf")):
        raise ConfigError(f"{where}: key 'lr' must be a positive finite number, got {config.lr}")
    if not (0 < config.lr_gamma <= 1):
        raise ConfigError(f"{where}: key 'lr_gamma' must lie in (0, 1], got {config.lr_gamma}")
    if not (0 <= config.dropout < 1):
        raise ConfigError(f"{where}: key 'dropout' must lie in [0, 1), got {config.dropout}")
    if not config.seeds:
        raise ConfigError(f"{where}: key 'seeds' must list at least one seed")
    for s in config.seeds:
        if s < 0 or s >= 2**63:
            raise ConfigError(f"{where}: key 'seeds' holds {s}; seeds must lie in 0..2**63-1")
    dupes = sorted({s for s in config.seeds if config.seeds.count(s) > 1})
    if dupes:
        raise ConfigError(
            f"{where}: key 'seeds' repeats {', '.join(map(str, dupes))}; "
            f"each seed may appear once"
        )
    if not config.latent_dims:
        raise ConfigError(f"{where}: key 'latent_dims' must list at least one width")
    for d in config.latent_dims:
        if d < 1 or d > 4096:
            raise ConfigError(f"{where}: key 'latent_dims' holds {d}; widths must lie in 1..4096")
    if len(set(config.latent_dims)) != len(config.latent_dims):
        raise ConfigError(f"{where}: key 'latent_dims' repeats a width; list each once")
    a = config.align
    if a.repeats < 1:
        raise ConfigError(f"{where}: key 'align.repeats' must be positive, got {a.repeats}")
    if a.repaired_anchors < 1:
        raise ConfigError(
            f"{where}: key 'align.repaired_anchors' must be positive, got {a.repaired_anchors}"
        )
    if a.relative_anchors < 1:
        raise ConfigError(
            f"{where}: key 'align.relative_anchors' must be positive, got {a.relative_anchors}"
        )
    from .align import METHODS

    for m in a.methods:
        if m not in METHODS or m == "relative":
            allowed = ", ".join(k for k in METHODS if k != "relative")
            raise ConfigError(
                f"{where}: key 'align.methods' holds {m!r}; choose from {allowed} "
                f"(relative has its own switch, align.relative = true)"
            )
    for k in a.anchors:
        if (isinstance(k, str) and k != "all") or (isinstance(k, int) and k < 1):
            raise ConfigError(
                f"{where}: key 'align.anchors' holds {k!r}; use positive integers or \"all\""
            )


def model_names(config: RunConfig) -> list[tuple[str, int, int]]:
    """(name, seed, latent_dim) for every model of the run, in training order.

    Models are named A, B, C, ... by seed; with several widths the width is appended (A32, A64).
    """
    out = []
    for d in config.latent_dims:
        for i, seed in enumerate(config.seeds):
            letter = _letters(i)
            name = letter if len(config.latent_dims) == 1 else f"{letter}{d}"
            out.append((name, seed, d))
    return out


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, ... (spreadsheet column names)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s
