"""Time the default anchor sweep and print its accuracy table.

Trains two MNIST models (seeds 42 and 123), encodes the whole training and test sets once, then
runs `stitchlab.align.experiments.anchor_sweep` for both ordered pairs with the closed-form
methods, 13 anchor counts and 5 draws each. Prints one table per ordered pair (test accuracy,
mean +- sample std over the draws, n in the header) and the wall time of the sweep alone.

    PYTHONPATH=src python benchmarks/bench_align.py         # tiny models: 20k images, 3 epochs
    PYTHONPATH=src python benchmarks/bench_align.py --full  # the pipeline's: 60k, 10 epochs

Measured on the shared 2-core CPU machine with one torch and one BLAS thread: the whole sweep
(both pairs, 6 methods x 13 counts x 5 draws, 582 fits) took 17.2 s on the tiny models and
17.4 s with --full (models at 97.9% and 98.0%, 100-anchor Procrustes 97.7% and 97.9%); 22-27 s
when the machine was more heavily loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from stitchlab import data
from stitchlab.align import experiments as ex
from stitchlab.training import TrainSettings, train_models


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=20000, help="training images per model")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per model")
    p.add_argument("--full", action="store_true", help="60,000 images and 10 epochs")
    p.add_argument("--repeats", type=int, default=5, help="anchor draws per count")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor draws")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads (1 is fastest for these small ops on a shared "
                        "machine)")
    p.add_argument("--methods", nargs="+", default=list(ex.CLOSED_FORM_METHODS),
                   help="alignment methods to sweep")
    return p.parse_args()


def cell(row: dict) -> str:
    if row["skipped"] is not None:
        return "-"
    return f"{100 * row['accuracy_mean']:.1f}+-{100 * row['accuracy_std']:.1f}"


def print_table(title: str, rows: list[dict], counts) -> None:
    width = 11
    print(f"\n{title}")
    print("method".ljust(15) + "".join(str(k).rjust(width) for k in counts))
    by_key = {(r["method"], r["anchors"]): r for r in rows}
    for method in dict.fromkeys(r["method"] for r in rows):
        line = "".join(cell(by_key[(method, k)]).rjust(width) for k in counts)
        print(method.ljust(15) + line)


def blas_threads(n: int):
    """Limit numpy's BLAS threads with threadpoolctl (a scikit-learn dependency) if present."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with blas_threads(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    n_train, epochs = (60000, 10) if args.full else (args.train_size, args.epochs)

    # 1. Train the pair and encode everything once.
    ds = data.load("mnist")
    x, y = ds.inputs("train"), ds.labels("train")
    xt, yt = ds.inputs("test"), ds.labels("test")
    t0 = time.perf_counter()
    trained = train_models([42, 123], ["s42", "s123"], x[:n_train], y[:n_train], xt, yt,
                           settings=TrainSettings(epochs=epochs))
    train_s = time.perf_counter() - t0
    models = {m.name: m.model for m in trained}
    z = {n: ex.latents(m.encoder, x) for n, m in models.items()}
    zt = {n: ex.latents(m.encoder, xt) for n, m in models.items()}
    own = ", ".join(f"{m.name} {100 * m.test_accuracy:.2f}%" for m in trained)
    print(f"trained {n_train} images x {epochs} epochs in {train_s:.1f} s: {own}")

    # 2. The sweep, both ordered pairs, timed on its own.
    counts = ex.DEFAULT_ANCHOR_COUNTS
    tables = {}
    t0 = time.perf_counter()
    for src, tgt in (("s42", "s123"), ("s123", "s42")):
        tables[(src, tgt)] = ex.anchor_sweep(
            z[src], z[tgt], y, models[tgt].decoder, zt[src], yt, args.methods, counts,
            args.repeats, args.seed, source_decoder=models[src].decoder, encoder=src,
            decoder_name=tgt,
        )
    sweep_s = time.perf_counter() - t0
    fits = sum(r["repeats"] for rows in tables.values() for r in rows)

    # 3. Report.
    for (src, tgt), rows in tables.items():
        raw = ex.accuracy(models[tgt].decoder, zt[src], yt)
        print_table(f"encoder {src} -> decoder {tgt}: test accuracy %, mean+-std over "
                    f"n={args.repeats} draws (all: n=1); raw splice {100 * raw:.1f}%", rows,
                    counts)
    print(f"\nsweep: {fits} fits + evaluations in {sweep_s:.1f} s "
          f"({1000 * sweep_s / max(fits, 1):.1f} ms each), {args.threads} torch/BLAS thread(s)")


if __name__ == "__main__":
    main()
