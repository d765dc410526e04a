"""Where one training epoch's time goes, by operator (torch.profiler), for K models at once.

    PYTHONPATH=src python benchmarks/profile_trainer.py --k 1 --samples 15360

Prints the epoch's wall time, its floor ratio against the peak measured on the spot, the share
of the matrix products, and the profiler's table of operators by self CPU time.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from stitchlab import bench, data
from stitchlab.training import BatchedTrainer, TrainSettings, count_parameters

MATMUL_OPS = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=1, help="models trained at once (default 1)")
    p.add_argument("--samples", type=int, default=15360, help="training images (default 15360)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--rows", type=int, default=20, help="operators in the table (default 20)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the products (default float32)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. Peak and data.
    peak = bench.measure_peak((1024, 2048), repeats=3, precision=args.precision)["gflops"]
    ds = data.load("mnist")
    x, y = ds.inputs("train")[:args.samples], ds.labels("train")[:args.samples]

    # 2. One warm-up epoch, then one profiled epoch.
    settings = TrainSettings(precision=args.precision)
    trainer = BatchedTrainer(list(range(1, args.k + 1)), x, y, settings=settings)
    trainer.train_epoch()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        trainer.train_epoch()
        wall = time.perf_counter() - t0

    # 3. Report.
    flops = 6.0 * count_parameters() * args.samples * args.k
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    print(f"K={args.k}, {args.samples} samples, {args.precision}, "
          f"{torch.get_num_threads()} threads: "
          f"{wall:.3f} s wall (profiled), {flops / wall / 1e9:.1f} GFLOP/s, "
          f"{wall / (flops / (peak * 1e9)):.2f} x floor (peak {peak:.1f} GFLOP/s)")
    print(f"matrix products: {100 * matmul / total:.1f}% of self CPU time in torch operators; "
          f"the rest of the wall time is Python, numpy (dropout masks) and waiting")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
