"""Shared fixtures: IDX files built in the test, and a tiny real-MNIST run."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stitchlab
from stitchlab import config as cfg
from stitchlab import pipeline


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file (header and big-endian payload) holding `array`."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_dataset(folder: Path, n_train=20, n_test=10, gz=True, seed=0) -> Path:
    """A small, valid data set in the standard layout under folder/mnist."""
    rng = np.random.default_rng(seed)
    out = folder / "mnist"
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", images),
                          (f"{prefix}-labels-idx1-ubyte", labels)):
            blob = idx_bytes(arr)
            if gz:
                (out / f"{stem}.gz").write_bytes(gzip.compress(blob))
            else:
                (out / stem).write_bytes(blob)
    return out


def tiny_config(**overrides) -> cfg.RunConfig:
    """Real MNIST, 20k training images, 3 epochs: trains in a few seconds."""
    base = dict(seeds=[42, 123], epochs=3, train_samples=20000, test_samples=5000, device="cpu",
                align={"anchors": [5, 50, 200], "repeats": 2})
    base.update(overrides)
    return cfg.from_dict(base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pipeline.Context:
    """One tiny real-data run shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    return pipeline.run(tiny_config(), run_dir)


# The command-line flags of tiny_config().
TINY_ARGS = ["--seeds", "42", "123", "--epochs", "3", "--train-samples", "20000",
             "--test-samples", "5000", "--device", "cpu"]


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the shared tiny run, free to be locked, resumed or damaged."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch (and BLAS) thread in this process while a module's tests run (see `cli_env`).

    On a small shared machine, two OpenMP threads that keep waiting for each other make these
    tiny trainings several times slower; with one thread everywhere, in-process and subprocess
    runs also compute under the same setting.
    """
    with pipeline.single_threaded():
        yield


def cli_env(threads: int | None = None) -> dict[str, str]:
    """The environment for a subprocess that must import the same stitchlab as the tests.

    `threads` sets OMP_NUM_THREADS, which is where torch takes its thread count from.
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    src = str(Path(stitchlab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.setdefault("NO_COLOR", "1")
    return env


def run_cli(*args, cwd=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m stitchlab ARGS` in a subprocess, importing the same stitchlab as the tests."""
    return subprocess.run([sys.executable, "-m", "stitchlab", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=cli_env(), **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to show a command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def main_in_process(capsys):
    """Call `stitchlab.cli.main(argv)` here; returns (exit code, stdout, stderr).

    Cheaper than a subprocess (no torch import); the package logger is restored afterwards,
    since main() points it at this test's captured stderr.
    """
    from stitchlab import cli

    logger = logging.getLogger("stitchlab")
    handlers, level = list(logger.handlers), logger.level

    def call(*argv):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    logger.handlers[:] = handlers
    logger.setLevel(level)
