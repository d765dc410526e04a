"""Checkpoints: safetensors weights plus JSON metadata, shape-checked on loading.

A checkpoint holds the state dict of one `EncoderDecoder` and, under the safetensors metadata
key ``stitchlab``, a JSON object with at least ``seed``, ``latent_dim``, ``dataset``,
``test_accuracy``, ``stitchlab_version`` and the resolved ``config`` it was trained with.
Loading never unpickles anything: safetensors stores raw tensors only. Imported checkpoints
(`import_weights`) carry ``imported_from`` and ``source_sha256`` instead of the training facts.

Weights from elsewhere (a ``.pth`` written by ``torch.save``) come in through
`import_state_dict`, which reads them with ``torch.load(weights_only=True)`` (tensors and plain
containers only, so a file cannot run code), maps wrapped key names onto this architecture's,
and checks every key and shape before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CheckpointError
from .fileio import atomic_write_bytes
from .models import EncoderDecoder

log = logging.getLogger(__name__)

META_KEY = "stitchlab"

# Leading key parts that wrap a model rather than name one of its layers: DataParallel and DDP
# (module.), torch.compile (_orig_mod.), an attribute holding the model (model., net.).
_WRAPPERS = ("module", "_orig_mod", "model", "net")
# Keys under which training scripts commonly nest the model's state dict beside other things.
_CONTAINERS = ("state_dict", "model_state_dict")
_PARTS = ("encoder", "decoder")


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


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    source: str,
    origin: Mapping[str, str] | None = None,
) -> None:
    """Raise CheckpointError unless `state` has exactly `model`'s keys and shapes.

    `origin` maps a key of `state` to the name it had in the file, when they differ, so that a
    message names the key the user can find in their file.
    """
    origin = origin or {}

    def name(key: str) -> str:
        return f"{origin[key]!r} (as {key!r})" if origin.get(key, key) != key else repr(key)

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key {name(unexpected[0])} ({len(unexpected)} unexpected)"
        )
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            width = getattr(model, "latent_dim", None)
            hint = f" (the model asked for has latent width {width})" if width else ""
            raise CheckpointError(
                f"{source}: key {name(key)} has shape {tuple(got.shape)} in the file but "
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


# --- foreign weights ------------------------------------------------------------------------


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """A one-line message for a file that torch.load(weights_only=True) would not read."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return CheckpointError(
            f"{path}: refused to load: it needs the Python object {found.group(1)}, and "
            f"unpickling that could run code; save the weights alone with "
            f"torch.save(model.state_dict(), FILE) and import that"
        )
    marker = "WeightsUnpickler error:"
    detail = text.split(marker, 1)[1] if marker in text else text
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    reason = lines[0] if lines else ""
    if marker not in text:
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return CheckpointError(
        f"{path}: not a readable PyTorch weights file ({reason}); copy it again or re-save it "
        f"with torch.save(model.state_dict(), FILE)"
    )


def _read_foreign(path_or_dict) -> tuple[str, Mapping]:
    """(a name for messages, the raw mapping) of a .pth / .safetensors file or a given dict."""
    if isinstance(path_or_dict, Mapping):
        return "state dict", path_or_dict
    path = Path(path_or_dict)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        return str(path), read_checkpoint(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted bytes: any failure to read them is the file's fault
        raise _refusal(path, exc) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of key names "
            f"to tensors); save it with torch.save(model.state_dict(), FILE)"
        )
    return str(path), obj


def _flatten(obj: Mapping, source: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested mappings as one mapping with dotted keys; non-tensor leaves are left out."""
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, source, name + "."))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        else:
            log.debug("%s: ignoring %r, which is not a tensor", source, name)
    return out


def _canonical(key: str) -> str | None:
    """This architecture's name for a foreign key, or None if it names no encoder/decoder layer.

    ``module.encoder.net.0.weight`` and ``model.encoder.0.weight`` both become
    ``encoder.net.0.weight``; layer positions are kept as they are, since they encode where the
    ReLU and dropout modules sit.
    """
    parts = key.split(".")
    while parts and parts[0] in _WRAPPERS:
        parts.pop(0)
    if len(parts) < 3 or parts[0] not in _PARTS:
        return None
    if parts[1].isdigit():  # the encoder or decoder was a bare nn.Sequential
        parts.insert(1, "net")
    return ".".join(parts)


def import_state_dict(path_or_dict, latent_dim: int | None = None) -> EncoderDecoder:
    """An `EncoderDecoder` holding weights trained elsewhere, every key and shape checked.

    Parameters
    ----------
    path_or_dict : a ``.pth`` / ``.pt`` file written by ``torch.save``, a ``.safetensors`` file,
        or a mapping already in memory. Accepted layouts: an EncoderDecoder's state dict
        (``encoder.net.0.weight`` ...), the same with a wrapper prefix on the keys (``module.``
        from DataParallel, ``_orig_mod.``, ``model.``, ``net.``), separate encoder and decoder
        dicts (``{"encoder": {...}, "decoder": {...}}``), encoders or decoders that are bare
        ``nn.Sequential`` (``encoder.0.weight``), and a training checkpoint that nests the model
        under ``state_dict`` or ``model_state_dict`` (the rest of it, e.g. the optimizer, is
        ignored).
    latent_dim : the bottleneck width the weights must have; None reads it from the file

    Returns
    -------
    EncoderDecoder in eval mode

    Raises
    ------
    CheckpointError
        if the file needs anything but tensors to load (it is never unpickled beyond that), a
        key is missing or unexpected or two keys collide, a shape differs from the model's
        (naming the key and both shapes), or a tensor is not floating point or not finite.
        Nothing is loaded partially.

    Examples
    --------
    >>> from stitchlab.models import build_model
    >>> wrapped = {f"module.{k}": v for k, v in build_model(1).state_dict().items()}
    >>> import_state_dict(wrapped).latent_dim
    32
    """
    source, raw = _read_foreign(path_or_dict)

    # 1. Take the model's part of a training checkpoint, then flatten nested dicts.
    for container in _CONTAINERS:
        if isinstance(raw.get(container), Mapping):
            log.info("%s: reading the model from its %r entry", source, container)
            raw = raw[container]
            break
    flat = _flatten(raw, source)
    if not flat:
        raise CheckpointError(f"{source}: holds no tensors; is it a state dict?")

    # 2. Map every key onto this architecture's names; nothing may be dropped or doubled.
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in flat.items():
        canon = _canonical(key)
        if canon is None:
            raise CheckpointError(
                f"{source}: key {key!r} names no encoder or decoder layer (expected keys like "
                f"'encoder.net.0.weight'); save the model's state_dict() alone"
            )
        if canon in state:
            raise CheckpointError(
                f"{source}: keys {origin[canon]!r} and {key!r} both mean {canon!r}; keep one"
            )
        state[canon], origin[canon] = tensor, key

    # 3. The width, the model, and every key, shape and value checked before loading.
    if latent_dim is not None and not 1 <= latent_dim <= 4096:
        raise CheckpointError(f"latent_dim (--latent-dim) must lie in 1..4096, got {latent_dim}")
    bottleneck = state.get("encoder.net.6.weight")
    width = latent_dim
    if width is None:
        width = int(bottleneck.shape[0]) if bottleneck is not None and bottleneck.dim() else 32
    model = EncoderDecoder(width)
    check_state_dict(state, model, source, origin)
    for key, tensor in state.items():
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise CheckpointError(
                f"{source}: key {origin[key]!r} is a {tensor.dtype} {tensor.layout} tensor; "
                f"weights must be dense floating point"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: key {origin[key]!r} holds NaN or infinite values")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return model.eval()


def import_weights(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    latent_dim: int | None = None,
    overwrite: bool = False,
) -> tuple[EncoderDecoder, Path]:
    """Convert the weights file `src` into the stitchlab checkpoint `dst` (see above).

    Returns the model and the path written. Raises CheckpointError as `import_state_dict` does,
    and when `dst` does not end in .safetensors or exists and `overwrite` is false.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"--out {dst}: must end in .safetensors")
    if dst.exists() and (dst.is_dir() or not overwrite):
        raise CheckpointError(
            f"--out {dst}: already exists; choose another --out or pass --force to replace it"
        )
    model = import_state_dict(src, latent_dim)
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    meta = {"imported_from": src.name, "source_sha256": digest.hexdigest()}
    return model, save_checkpoint(dst, model, meta)
