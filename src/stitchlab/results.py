"""The results file: schema "stitchlab.results/1", atomic writing, validation on reading.

Top-level sections (later stages add theirs; a reader ignores sections it does not know):
``schema``, ``config``, ``environment``, ``models``, ``splice``, ``latent``, ``similarity``,
``alignment``, ``timings``. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import StitchlabError
from .fileio import atomic_write_json

SCHEMA = "stitchlab.results/1"
REQUIRED = ("schema", "config", "environment", "models")


def environment(device: str | torch.device = "cpu") -> dict:
    """Versions, device and threads: everything besides the config that can change a number."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "stitchlab": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        # Kernels and precision: a different SIMD level, oneDNN on or off, or a lower float32
        # matmul precision changes the order or width of sums, hence the last bits.
        "cpu_capability": _cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "thread_env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "git_commit": git_commit(),
    }
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cudnn"] = torch.backends.cudnn.version()
        env["cudnn_deterministic"] = torch.backends.cudnn.deterministic
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return env


# Environment variables that set thread counts or kernel choices, recorded when set.
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
               "CUBLAS_WORKSPACE_CONFIG")


def _cpu_capability() -> str | None:
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get is not None else None


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Write `results` atomically after checking its required sections."""
    missing = [k for k in REQUIRED if k not in results]
    assert not missing, f"results lack sections {missing}"
    return atomic_write_json(path, results)


def read_results(path: str | os.PathLike) -> dict:
    """Read and check a results file; StitchlabError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise StitchlabError(
            f"{path}: no results file; is this a run directory? create one with `stitchlab run`"
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StitchlabError(
            f"{path}: not valid JSON ({exc}); rerun the stage that wrote it"
        ) from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        got = results.get("schema") if isinstance(results, dict) else type(results).__name__
        raise StitchlabError(f"{path}: schema is {got!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in results]
    if missing:
        raise StitchlabError(f"{path}: missing section {missing[0]!r}; rerun `stitchlab run`")
    return results
