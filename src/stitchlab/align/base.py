"""The interface every alignment method shares: the fitted `Aligner`, its file format, input checks.

An aligner is a small ``nn.Module`` that maps latents of a source encoder, shape (n, d_s), into
the latent space a target decoder expects, shape (n, d_t). Its state is a handful of tensors
(buffers, never trainable parameters) plus a JSON-able `metadata` dict naming the method and
the options it was fitted with. `Aligner.save` writes both into one safetensors file (the
metadata as a JSON string under the key ``stitchlab.align``) and `load_aligner` reads it back
bit for bit.

Each transform family (linear, Procrustes, permutation, padding, relative) is one subclass,
defined next to the methods that fit it; subclasses register themselves by their `kind`, which
is what a file records so that `load_aligner` knows which class to rebuild.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError, StitchlabError

log = logging.getLogger(__name__)

FORMAT = "stitchlab.align/1"  # format tag written into every aligner file
METADATA_KEY = "stitchlab.align"  # safetensors metadata key holding the JSON metadata

_KINDS: dict[str, type[Aligner]] = {}


class AlignmentError(StitchlabError, ValueError):
    """An alignment cannot be fitted or applied with the inputs given; the message says why."""


class NotEnoughAnchors(AlignmentError):
    """A method got fewer anchors (or classes) than it needs; the message says how many."""


class Aligner(nn.Module):
    """A fitted map from source latents (n, d_s) to target latents (n, d_t).

    Subclasses hold their state as buffers, so ``state_dict()`` is a dict of tensors, and
    implement `_map`. Use `transform` (or call the module) to apply it; it works inside
    `stitchlab.models.splice`.

    Attributes
    ----------
    method : str, the name of the method in `stitchlab.align.METHODS` that fitted it
    options : dict, JSON-able, the options it was fitted with and values it chose (e.g. alpha)
    source_dim, target_dim : int, the widths d_s and d_t
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def __init__(self, method: str, source_dim: int, target_dim: int,
                 options: dict[str, Any] | None = None):
        super().__init__()
        self.method = method
        self.source_dim = int(source_dim)
        self.target_dim = int(target_dim)
        self.options = dict(options or {})

    @classmethod
    def empty(cls, metadata: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> Aligner:
        """An instance with zero-filled buffers of the given shapes, to load a state into."""
        raise NotImplementedError

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform(self, z) -> torch.Tensor:
        """Map source latents into the target space.

        Parameters
        ----------
        z : torch.Tensor or array of shape (n, source_dim)

        Returns
        -------
        torch.Tensor of shape (n, target_dim), float32

        Raises
        ------
        AlignmentError
            if `z` is not two-dimensional with `source_dim` columns.
        """
        z = torch.as_tensor(z).to(torch.float32)
        if z.dim() != 2 or z.shape[1] != self.source_dim:
            raise AlignmentError(
                f"{self.method} aligner expects latents of shape (n, {self.source_dim}), got "
                f"{tuple(z.shape)}; pass the source encoder's latents it was fitted on"
            )
        return self._map(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(z)

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-able description: format, kind, method, widths and fitting options."""
        return {
            "format": FORMAT,
            "kind": self.kind,
            "method": self.method,
            "source_dim": self.source_dim,
            "target_dim": self.target_dim,
            "options": self.options,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the state and metadata to one safetensors file.

        Parameters
        ----------
        path : file to write; replaced if it exists

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> from stitchlab import align
        >>> z = np.random.default_rng(0).normal(size=(50, 4))
        >>> a = align.fit("procrustes", z, z[:, ::-1])
        >>> path = os.path.join(tempfile.mkdtemp(), "a.safetensors")
        >>> a.save(path)
        >>> align.load(path).method
        'procrustes'
        """
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, os.fspath(path), metadata={METADATA_KEY: json.dumps(self.metadata)})

    def extra_repr(self) -> str:
        return f"method={self.method!r}, {self.source_dim} -> {self.target_dim}"


def load_aligner(path: str | os.PathLike) -> Aligner:
    """Read an aligner written by `Aligner.save`.

    Parameters
    ----------
    path : a safetensors file written by `Aligner.save`

    Returns
    -------
    Aligner of the class that was saved, on the CPU, with identical tensors

    Raises
    ------
    CheckpointError
        if the file is missing, not safetensors, lacks stitchlab metadata, or its tensors do not
        fit the recorded kind.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: aligner file not found")

    # 1. Read the tensors and the JSON metadata.
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); write it with Aligner.save"
        ) from exc
    if raw is None:
        raise CheckpointError(
            f"{path}: no {METADATA_KEY!r} metadata; this safetensors file was not written by "
            f"Aligner.save"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata {METADATA_KEY!r} is not JSON ({exc})") from exc

    # 2. Rebuild the class the file names and load the tensors into it.
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: aligner format {meta.get('format')!r} is not {FORMAT!r}; refit the aligner"
        )
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise CheckpointError(
            f"{path}: unknown aligner kind {meta.get('kind')!r}; known kinds: "
            f"{', '.join(sorted(_KINDS))}"
        )
    try:
        aligner = cls.empty(meta, {k: tuple(v.shape) for k, v in tensors.items()})
        aligner.load_state_dict(tensors, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: tensors do not fit a {meta['kind']} aligner ({exc}); refit the aligner"
        ) from exc
    return aligner


# --- input checks shared by the fitting functions -------------------------------------------


def as_latents(x, method: str, name: str, width: int | None = None) -> np.ndarray:
    """`x` as a finite float64 array of shape (n, d); raise AlignmentError naming `method`."""
    if x is None:
        raise AlignmentError(f"{method} needs {name} (an array of shape (n, d)); got None")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise AlignmentError(
            f"{method}: {name} must have shape (n_anchors, d), got shape {a.shape}"
        )
    if width is not None and a.shape[1] != width:
        raise AlignmentError(f"{method}: {name} must have {width} columns, got {a.shape[1]}")
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise AlignmentError(
            f"{method}: {name} contains NaN or inf ({int(bad.sum())} values, first in row "
            f"{row}); drop or repair those samples before fitting"
        )
    return a


def as_labels(y, method: str, name: str, n: int) -> np.ndarray:
    """`y` as an int64 array of shape (n,); raise AlignmentError naming `method`."""
    if y is None:
        raise AlignmentError(f"{method} needs {name} (class indices of shape ({n},)); got None")
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    a = np.asarray(y)
    if a.shape != (n,):
        raise AlignmentError(f"{method}: {name} must have shape ({n},), got {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise AlignmentError(f"{method}: {name} must be integer class indices, got {a.dtype}")
    return a.astype(np.int64)


def check_paired(method: str, source, target, min_anchors: int, why: str = ""):
    """Check two latent arrays of the same anchors; return them as float64 arrays.

    Raises AlignmentError on a shape problem or NaN/inf, NotEnoughAnchors below `min_anchors`.
    """
    xs = as_latents(source, method, "source")
    xt = as_latents(target, method, "target")
    if xs.shape[0] != xt.shape[0]:
        raise AlignmentError(
            f"{method}: source has {xs.shape[0]} anchors but target has {xt.shape[0]}; both must "
            f"be latents of the same anchor inputs, row for row"
        )
    check_count(method, xs.shape[0], min_anchors, why)
    return xs, xt


def check_count(method: str, n: int, min_anchors: int, why: str = "") -> None:
    """Raise NotEnoughAnchors when `n` < `min_anchors`."""
    if n < min_anchors:
        reason = f" ({why})" if why else ""
        raise NotEnoughAnchors(
            f"{method} needs at least {min_anchors} anchors{reason}, got {n}; use more anchors "
            f"or a method that needs fewer"
        )


def buffer(x: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """A contiguous CPU tensor from a numpy array, for use as an aligner buffer."""
    # np.ascontiguousarray would turn a 0-d array into shape (1,); copy keeps the shape.
    return torch.from_numpy(np.array(x, copy=True)).to(dtype).contiguous()
