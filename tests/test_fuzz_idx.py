"""Fuzzing the IDX reader: whatever the bytes, a DataError or a correct array, in bounded memory.

Inputs are random bytes, and well-formed headers (any type code, 0 to 40 dimensions, sizes up to
2**32 - 1) with payloads of any length, then truncated and bit-flipped, raw or gzip-compressed.
Memory is measured with tracemalloc: the peak must stay within a few times the bytes the file
really holds plus one read chunk (1 MiB), whatever its header claims.
"""

from __future__ import annotations

import gzip
import math
import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stitchlab import data
from stitchlab.errors import DataError

ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
CHUNK = 1 << 20
# Deflate expands at most about 1032-fold, which bounds what a damaged .gz can decompress to.
DEFLATE_MAX_RATIO = 1032


@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    """(the bytes of a file, whether it is gzip-compressed)."""
    if draw(st.booleans()):
        blob = draw(st.binary(max_size=400))
    else:
        type_code = draw(st.one_of(st.sampled_from(sorted(ITEMSIZE)), st.integers(0, 255)))
        ndim = draw(st.one_of(st.integers(1, 4), st.integers(0, 40)))
        size = st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1))
        dims = draw(st.lists(size, min_size=ndim, max_size=ndim))
        header = bytes([0, 0, type_code, ndim]) + struct.pack(f">{ndim}I", *dims)
        implied = math.prod(dims) * ITEMSIZE.get(type_code, 1)
        length = draw(st.one_of(st.just(min(implied, 2000)), st.integers(0, 2000)))
        blob = header + draw(st.binary(min_size=length, max_size=length))
        if draw(st.booleans()):
            blob = blob[:draw(st.integers(0, len(blob)))]
    gz = draw(st.booleans())
    disk = gzip.compress(blob, mtime=0) if gz else blob
    if disk:
        flips = draw(st.lists(st.integers(0, 8 * len(disk) - 1), max_size=3))
        damaged = bytearray(disk)
        for bit in flips:
            damaged[bit // 8] ^= 1 << (bit % 8)
        disk = bytes(damaged)
    return disk, gz


def parse_measured(disk: bytes, gz: bool) -> tuple[np.ndarray | None, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("f.gz" if gz else "f")
        path.write_bytes(disk)
        tracemalloc.start()
        try:
            array = data.parse_idx(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            array = None
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return array, peak


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx_files())
@example((bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + bytes(84), False))
@example((bytes([0, 0, 8, 255]) + struct.pack(">255I", *[1] * 255) + b"x", False))
@example((bytes([0, 0, 8, 40]) + struct.pack(">40I", 0, *[2**32 - 1] * 39), False))
@example((bytes([0, 0, 8, 4]) + struct.pack(">4I", 0, 2, 2**31, 2**31), False))  # numpy: too big
@example((gzip.compress(bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 2**32 - 1)), True))
def test_any_bytes_give_a_data_error_or_a_correct_array(case):
    disk, gz = case
    array, peak = parse_measured(disk, gz)
    real = len(disk) * DEFLATE_MAX_RATIO if gz else len(disk)
    assert peak <= 4 * real + 2 * CHUNK, (peak, len(disk))
    if array is not None:
        # A success must be exactly what the header and payload say.
        raw = gzip.decompress(disk) if gz else disk
        header = 4 + 4 * array.ndim
        assert raw[2] in ITEMSIZE and raw[3] == array.ndim
        assert array.shape == struct.unpack(f">{array.ndim}I", raw[4:header])
        assert array.tobytes() == np.frombuffer(raw[header:], array.dtype).tobytes()
