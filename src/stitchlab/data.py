"""MNIST and Fashion-MNIST from IDX files: parsing, checks, lookup and download.

The IDX format (LeCun et al., the MNIST distribution page) is a big-endian header, two zero
bytes, a type code, the number of dimensions and one 32-bit size per dimension, then the payload.
`parse_idx` checks every part of it and never allocates more than the file really holds, so a
header that claims 2**31 images in a 100-byte file is a `DataError`, not an out-of-memory.

Files are looked up in this order (see `find_dataset_dir`):

1. ``root`` (``--data-dir`` on the command line), when given;
2. the ``STITCHLAB_DATA`` environment variable, when set;
3. the ``data/`` folder of a clone of this repository (the bundled copy);
4. the user cache (``$XDG_CACHE_HOME/stitchlab/data``, else ``~/.cache/stitchlab/data``);
5. a download from the data set's public mirror into that cache, checked against SHA-256.

A folder named by 1 or 2 is taken as the user's choice: if it lacks a file, that is an error,
not a silent fall-through to another copy.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

log = logging.getLogger(__name__)

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (third header byte) and the numpy dtype they store, big-endian.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 20
_MAX_NDIM = 32  # numpy 1.x arrays hold at most 32 dimensions (2.x: 64)


@dataclass(frozen=True)
class DatasetInfo:
    """What stitchlab knows about one data set."""

    name: str
    classes: tuple[str, ...]
    mean: float  # pixel mean of the training images after scaling to [0, 1]
    std: float  # pixel standard deviation, same scale
    mirror: str  # base URL of a public mirror holding the four .gz files
    sha256: dict[str, str]  # file name (with or without .gz) -> SHA-256 of its bytes


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        classes=tuple(str(i) for i in range(10)),
        mean=0.1307,
        std=0.3081,
        mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
        sha256={
            "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
            "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
            "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
            "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        mean=0.2860,
        std=0.3530,
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}


@dataclass
class Dataset:
    """A data set held in memory as uint8 images and int64 labels.

    Attributes
    ----------
    name : str
    train_images, test_images : torch.Tensor of shape (n, 28, 28), dtype uint8
    train_labels, test_labels : torch.Tensor of shape (n,), dtype int64, values in 0..9
    info : DatasetInfo
    source : Path, the folder the files were read from
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo
    source: Path

    def inputs(self, split: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Flattened float32 inputs, scaled to [0, 1] then normalised, of shape (n, 784)."""
        images = self.train_images if split == "train" else self.test_images
        return normalise(images, self.info, device)

    def labels(self, split: str, device: str | torch.device = "cpu") -> torch.Tensor:
        return (self.train_labels if split == "train" else self.test_labels).to(device)


def normalise(
    images: torch.Tensor, info: DatasetInfo, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Scale uint8 images to [0, 1], normalise with the data set's mean and std, flatten."""
    x = images.reshape(images.shape[0], -1).to(device=device, dtype=torch.float32)  # (n, 784)
    # In place: the same numbers as (x / 255 - mean) / std without three temporary copies.
    return x.div_(255.0).sub_(info.mean).div_(info.std)


# --- IDX parsing ---------------------------------------------------------------------------


def _read_bounded(stream, limit: int, path: Path) -> bytes:
    """Read at most `limit` bytes in chunks, so memory follows what the file really holds."""
    chunks, total = [], 0
    while total < limit:
        chunk = stream.read(min(_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _open_payload(path: Path):
    """Open an IDX file, decompressing it when its name ends in .gz."""
    with open(path, "rb") as f:
        magic = f.read(2)
    is_gzip_bytes = magic == b"\x1f\x8b"
    if path.suffix == ".gz":
        if not is_gzip_bytes:
            raise DataError(
                f"{path}: named .gz but is not gzip-compressed; "
                f"rename it without .gz if it is a raw IDX file"
            )
        return gzip.open(path, "rb")
    if is_gzip_bytes:
        raise DataError(
            f"{path}: is gzip-compressed but its name has no .gz; rename it to {path.name}.gz"
        )
    return open(path, "rb")


def parse_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (raw, or gzip when the name ends in .gz) into a numpy array.

    Parameters
    ----------
    path : path to the file
    expect_ndim : if given, the number of dimensions the header must declare

    Returns
    -------
    numpy.ndarray with the shape and dtype the header declares

    Raises
    ------
    DataError
        on a missing or unreadable file, bad gzip, wrong magic, unknown type code, wrong number
        of dimensions, or a payload whose size is not exactly what the header implies.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with _open_payload(path) as f:
            # 1. Header: two zero bytes, type code, number of dimensions.
            head = _read_bounded(f, 4, path)
            if len(head) < 4:
                raise DataError(f"{path}: too short for an IDX header ({len(head)} bytes)")
            if head[0] != 0 or head[1] != 0:
                raise DataError(
                    f"{path}: bad IDX magic 0x{head[:4].hex()} (must start with two zero bytes)"
                )
            type_code, ndim = head[2], head[3]
            if type_code not in _IDX_TYPES:
                raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x}")
            if expect_ndim is not None and ndim != expect_ndim:
                raise DataError(
                    f"{path}: header declares {ndim} dimensions, expected {expect_ndim}"
                )
            if ndim == 0 or ndim > _MAX_NDIM:
                raise DataError(
                    f"{path}: header declares {ndim} dimensions; an IDX array needs 1 to "
                    f"{_MAX_NDIM}"
                )

            # 2. Dimensions, then the exact payload size they imply.
            raw_dims = _read_bounded(f, 4 * ndim, path)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated in the header (dimension sizes)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = _IDX_TYPES[type_code]
            expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
            # numpy refuses a shape whose non-zero sizes multiply past its index range, even
            # when another size is 0 and the array would hold nothing.
            span = int(np.prod([d for d in dims if d], dtype=object)) * dtype.itemsize
            if span > np.iinfo(np.intp).max:
                raise DataError(
                    f"{path}: header declares dimensions {tuple(dims)}, too large for any array"
                )

            # 3. Payload: read one byte past the expected end to detect trailing data.
            payload = _read_bounded(f, expected + 1, path)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path}: cannot read ({exc}); the file is damaged, fetch it again"
        ) from exc
    if len(payload) != expected:
        what = "truncated" if len(payload) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: payload {what}: header {tuple(dims)} implies {expected} bytes, "
            f"found {len(payload) if len(payload) <= expected else 'more'}"
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- lookup and download --------------------------------------------------------------------


def bundled_dir() -> Path:
    """The repository's data/ folder (present in a clone, absent in a plain wheel install)."""
    return Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stitchlab" / "data"


def _file_in(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path) -> bool:
    return all(_file_in(folder, s) for pair in SPLITS.values() for s in pair)


def find_dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the four files of data set `name`, or None when only a download helps.

    Raises DataError when a folder the user named (root, STITCHLAB_DATA) lacks a file.
    """
    info = get_info(name)
    chosen = [(root, "--data-dir / root"), (os.environ.get("STITCHLAB_DATA"), "STITCHLAB_DATA")]
    for base, label in chosen:
        if not base:
            continue
        folder = Path(base) / info.name
        for stem in (s for pair in SPLITS.values() for s in pair):
            if _file_in(folder, stem) is None:
                raise DataError(
                    f"{folder / (stem + '.gz')}: file not found (data directory from {label}); "
                    f"put the four {info.name} IDX files there or drop {label}"
                )
        return folder
    for folder in (bundled_dir() / info.name, cache_dir() / info.name):
        if _complete(folder):
            return folder
    return None


def download(
    name: str, dest: str | os.PathLike | None = None, mirror: str | None = None, timeout=60
) -> Path:
    """Download the four gzip files of `name` into `dest` (default: the user cache).

    Each file is written to a temporary name, checked against its SHA-256 and only then renamed
    into place, so a failed or corrupt download leaves no partial file behind.
    """
    info = get_info(name)
    folder = Path(dest) if dest is not None else cache_dir()
    folder = folder / info.name
    folder.mkdir(parents=True, exist_ok=True)
    base = mirror or os.environ.get("STITCHLAB_MIRROR") or info.mirror
    for stem in (s for pair in SPLITS.values() for s in pair):
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        url = base.rstrip("/") + f"/{stem}.gz"
        log.info("downloading %s", url)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != info.sha256[target.name]:
                raise DataError(
                    f"{url}: downloaded file fails its SHA-256 check "
                    f"(got {digest.hexdigest()[:16]}..., "
                    f"expected {info.sha256[target.name][:16]}...); "
                    f"try another mirror with STITCHLAB_MIRROR"
                )
            os.replace(tmp, target)
        except (OSError, urllib.error.URLError) as exc:
            raise DataError(
                f"{url}: download failed ({exc}); copy the files into {folder} by hand "
                f"or point --data-dir at a folder that has them"
            ) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder


def get_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def read_split(folder: Path, info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one split: images (n, 28, 28) uint8 and labels (n,) uint8."""
    stems = SPLITS[split]
    paths = [_file_in(folder, s) or folder / f"{s}.gz" for s in stems]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: file not found")
        known = info.sha256.get(p.name)
        if known is not None and sha256_file(p) != known:
            raise DataError(
                f"{p}: SHA-256 mismatch with the published {info.name} file; "
                f"the file is damaged or not the original, fetch it again"
            )
    images = parse_idx(paths[0], expect_ndim=3)
    labels = parse_idx(paths[1], expect_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{folder}: images and labels must be unsigned bytes (IDX type 0x08)")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{paths[0]}: {images.shape[0]} images but {paths[1].name} has "
            f"{labels.shape[0]} labels; the two files do not belong together"
        )
    if labels.size and labels.max() >= len(info.classes):
        bad = int(np.argmax(labels >= len(info.classes)))
        raise DataError(
            f"{paths[1]}: label {int(labels[bad])} at index {bad} "
            f"is outside 0..{len(info.classes) - 1}"
        )
    return images, labels


def load(name: str = "mnist", root: str | os.PathLike | None = None) -> Dataset:
    """Load a data set, checked, from the first place that has it (see the module docstring).

    Parameters
    ----------
    name : "mnist" or "fashion-mnist"
    root : optional data directory holding a folder named `name`

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        if a file is missing, damaged or fails a check; the message names the file.

    Examples
    --------
    >>> ds = load("mnist")
    >>> ds.train_images.shape, ds.test_labels.shape
    (torch.Size([60000, 28, 28]), torch.Size([10000]))
    """
    info = get_info(name)
    folder = find_dataset_dir(name, root)
    if folder is None:
        folder = download(name)
    train = read_split(folder, info, "train")
    test = read_split(folder, info, "test")
    log.info("loaded %s from %s", name, folder)
    return Dataset(
        name=name,
        train_images=torch.from_numpy(train[0].copy()),
        train_labels=torch.from_numpy(train[1].astype(np.int64)),
        test_images=torch.from_numpy(test[0].copy()),
        test_labels=torch.from_numpy(test[1].astype(np.int64)),
        info=info,
        source=folder,
    )
