"""Time every similarity measure, and latent.describe, on one pair of 10,000 x 32 latents.

Run from the repository root:

    PYTHONPATH=src python benchmarks/bench_similarity.py [--n 10000] [--d 32] [--repeats 3]
                                                         [--blas-threads 1]

The two latents are synthetic and ReLU-like (a shared class structure seen through two random
projections, then ReLU, with a few dead units), so no trained run is needed. Each row of the table
is the median wall and CPU time of `--repeats` calls; the total is the sum of the medians. The load
average is printed too, because on a shared machine it moves every figure.

Measured on the 2-core development machine while others' training jobs shared it (load average
3.6), median of 3 repeats, with ``--blas-threads 1``: all eleven measures 1.70 s of CPU time
(2.93 s wall), of which RBF CKA 0.72 s and mutual k-NN 0.72 s; latent.describe 0.42 s of CPU
(0.85 s wall). With the default two BLAS threads on the same loaded machine: 2.91 s CPU, 3.31 s
wall; oversubscribed BLAS threads are what slows the small matrix products most.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from stitchlab import latent, similarity


def make_latents(n: int, d: int, seed: int = 0):
    """Two correlated ReLU-like latents of shape (n, d) in float32, and their class labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    shared = 2.0 * rng.normal(size=(10, d))[labels] + rng.normal(size=(n, d))  # (n, d)
    out = []
    for k in range(2):
        proj = rng.normal(size=(d, d)) / np.sqrt(d)  # (d, d)
        z = shared @ proj + 0.3 * rng.normal(size=(n, d)) - 0.3  # (n, d)
        z = np.maximum(z, 0.0)
        z[:, rng.choice(d, 3 + k, replace=False)] = 0.0  # dead units
        out.append(z.astype(np.float32))
    return out[0], out[1], labels


def timed(func, repeats: int):
    """The last value of func(), and the median wall and median CPU seconds of `repeats` calls.

    CPU seconds (this process, all its threads) move less than wall time with other load on the
    machine; with one thread and an idle machine the two agree.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = func()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return value, statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples (rows)")
    parser.add_argument("--d", type=int, default=32, help="latent width (columns)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per measure")
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS/OpenMP threads")
    args = parser.parse_args()

    # 1. Data, and an optional thread limit (threadpoolctl ships with scikit-learn).
    x, y, labels = make_latents(args.n, args.d)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(
        f"n={args.n} d={args.d} repeats={args.repeats} cpus={os.cpu_count()} "
        f"blas_threads={args.blas_threads or 'default'} load_avg={load}"
    )
    print(f"dead units: x {int(np.all(x == 0, 0).sum())}, y {int(np.all(y == 0, 0).sum())}")

    # 2. Every measure, then describe().
    print(f"{'measure':<22}{'value':>10}{'wall s':>9}{'cpu s':>9}")
    total_wall = total_cpu = 0.0
    for name, measure in similarity.MEASURES.items():
        value, wall, cpu = timed(lambda m=measure: m(x, y, labels), args.repeats)
        total_wall += wall
        total_cpu += cpu
        print(f"{name:<22}{value:>10.4f}{wall:>9.3f}{cpu:>9.3f}")
    print(f"{'total (all measures)':<22}{'':>10}{total_wall:>9.3f}{total_cpu:>9.3f}")
    _, wall, cpu = timed(lambda: latent.describe(x, labels), args.repeats)
    print(f"{'latent.describe(x)':<22}{'':>10}{wall:>9.3f}{cpu:>9.3f}")


if __name__ == "__main__":
    main()
