"""The IDX reader and data lookup, on files the tests build and on the bundled data."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import idx_bytes, write_dataset
from stitchlab import data
from stitchlab.errors import DataError


def test_bundled_mnist_loads_with_checked_shapes():
    ds = data.load("mnist")
    assert tuple(ds.train_images.shape) == (60000, 28, 28)
    assert tuple(ds.test_images.shape) == (10000, 28, 28)
    assert ds.train_labels.min() == 0 and ds.train_labels.max() == 9
    # The known first training label of MNIST is 5, the first test label 7.
    assert int(ds.train_labels[0]) == 5 and int(ds.test_labels[0]) == 7
    x = ds.inputs("test")
    assert tuple(x.shape) == (10000, 784)
    assert abs(float(ds.inputs("train").mean())) < 1e-3  # normalised with the training mean


def test_bundled_fashion_mnist_loads():
    ds = data.load("fashion-mnist")
    assert tuple(ds.train_images.shape) == (60000, 28, 28)
    assert len(ds.info.classes) == 10


def test_parse_roundtrip_gz_and_raw(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(data.parse_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(data.parse_idx(tmp_path / "a.gz"), arr)
    wide = np.arange(6, dtype=">i4").reshape(2, 3) * 1000
    (tmp_path / "w").write_bytes(idx_bytes(wide, 0x0C))
    np.testing.assert_array_equal(data.parse_idx(tmp_path / "w"), wide)


def _bad(tmp_path: Path, name: str, blob: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


GOOD = idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))


BAD_FILES = [
    ("missing", None, "file not found"),
    ("empty.gz", b"", "not gzip"),
    ("truncated.gz", gzip.compress(GOOD)[:-9], "cannot read"),
    ("raw-as-gz.gz", GOOD, "not gzip-compressed"),
    ("gz-as-raw", gzip.compress(GOOD), "is gzip-compressed"),
    ("magic", b"\x01\x02" + GOOD[2:], "bad IDX magic"),
    ("type", GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX type"),
    ("short-payload", GOOD[:-1], "truncated"),
    ("long-payload", GOOD + b"\x00", "trailing bytes"),
    ("short-header", GOOD[:6], "truncated in the header"),
    ("tiny", b"\x00\x00", "too short"),
    ("huge-claim", bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + b"x" * 84,
     "truncated"),
]


@pytest.mark.parametrize("name, blob, message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, name, blob, message):
    path = tmp_path / name if blob is None else _bad(tmp_path, name, blob)
    with pytest.raises(DataError, match=message) as info:
        data.parse_idx(path)
    assert str(path) in str(info.value)


def test_count_mismatch_label_range_and_checksum(tmp_path):
    folder = write_dataset(tmp_path, n_train=20, n_test=10)
    info = data.get_info("mnist")
    # Synthetic files are not the published ones, so their names must not be checked by hash.
    plain = data.DatasetInfo(**{**info.__dict__, "sha256": {}})
    images, labels = data.read_split(folder, plain, "train")
    assert images.shape == (20, 28, 28) and labels.shape == (20,)

    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(19, dtype=np.uint8))))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        data.read_split(folder, plain, "train")

    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(20, 10, dtype=np.uint8))))
    with pytest.raises(DataError, match="label 10 at index 0 is outside 0..9"):
        data.read_split(folder, plain, "train")

    # Under its real name and the real checksum table, a synthetic file fails the SHA-256 check.
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        data.read_split(folder, info, "test")


def test_explicit_root_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("STITCHLAB_DATA", raising=False)
    folder = write_dataset(tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        data.load("mnist", root=tmp_path)


def test_lookup_order_root_then_env_then_bundled(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, gz=False)
    write_dataset(b)
    monkeypatch.setenv("STITCHLAB_DATA", str(b))
    assert data.find_dataset_dir("mnist", root=a) == a / "mnist"
    assert data.find_dataset_dir("mnist") == b / "mnist"
    monkeypatch.delenv("STITCHLAB_DATA")
    assert data.find_dataset_dir("mnist") == data.bundled_dir() / "mnist"


class _Mirror(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args, **kwargs):
        return _Mirror(*args, directory=str(served), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_from_local_mirror_checks_sha256(mirror, tmp_path, monkeypatch):
    served, url = mirror
    for p in (data.bundled_dir() / "mnist").glob("*.gz"):
        (served / p.name).write_bytes(p.read_bytes())
    cache = tmp_path / "cache"
    folder = data.download("mnist", dest=cache, mirror=url)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{s}.gz" for pair in data.SPLITS.values() for s in pair)
    got = hashlib.sha256((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    assert got == data.DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte.gz"]

    # load() falls back to the cache, then downloads, when no copy is anywhere else.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STITCHLAB_MIRROR", url)
    monkeypatch.delenv("STITCHLAB_DATA", raising=False)
    monkeypatch.setattr(data, "bundled_dir", lambda: tmp_path / "nowhere")
    ds = data.load("mnist")
    assert ds.source == tmp_path / "xdg" / "stitchlab" / "data" / "mnist"
    assert tuple(ds.test_images.shape) == (10000, 28, 28)


def test_failed_or_corrupt_download_leaves_no_partial_file(mirror, tmp_path):
    served, url = mirror
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="fails its SHA-256 check"):
        data.download("mnist", dest=cache, mirror=url)
    assert list((cache / "mnist").iterdir()) == []
    (served / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="download failed"):
        data.download("mnist", dest=cache, mirror=url)
    assert list((cache / "mnist").iterdir()) == []
