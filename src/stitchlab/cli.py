"""The command line: argument parsing, progress bars, the summary table, exit codes.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback); 1 anything
unexpected; 130 / 143 interrupted by SIGINT / SIGTERM. No science lives here: every command is a
thin layer over `stitchlab.pipeline`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__, pipeline
from . import config as cfg
from .errors import StitchlabError

log = logging.getLogger("stitchlab")

DEFAULT_OUT = "runs/default"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- output ---------------------------------------------------------------------------------


def _use_colour(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class EpochProgress:
    """One progress bar per model, redrawn in place on a terminal, one line per epoch elsewhere."""

    def __init__(self, epochs: int, stream=sys.stderr, quiet: bool = False, width: int = 24):
        self.epochs, self.stream, self.quiet, self.width = epochs, stream, quiet, width
        self.tty = stream.isatty()
        self.drawn = 0

    def __call__(self, epoch: int, metrics: list[dict]) -> None:
        if self.quiet:
            return
        if epoch == 1:
            self.drawn = 0
        lines = []
        for m in metrics:
            filled = round(self.width * epoch / self.epochs)
            bar = "#" * filled + "." * (self.width - filled)
            lines.append(
                f"train {m['name']:>4} [{bar}] epoch {epoch:>3}/{self.epochs}  "
                f"loss {m['train_loss']:.4f}  test acc {100 * m['test_accuracy']:6.2f}%  "
                f"{m['seconds']:5.2f} s/epoch"
            )
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F")  # back to the first bar line
        if self.tty or epoch == self.epochs or epoch == 1:
            self.stream.write("".join(f"{line}\x1b[K\n" if self.tty else f"{line}\n"
                                      for line in lines))
            self.drawn = len(lines)
        self.stream.flush()


def _pct(x) -> str:
    return "     n/a" if x is None else f"{100 * x:7.2f}%"


def summary(results: dict, run_dir: Path) -> str:
    """The table printed at the end of a run."""
    out = []
    models = results["models"]
    out.append("model  seed        width  test acc  test loss")
    for m in models:
        out.append(f"{m['name']:<6} {m['seed']:<11} {m['latent_dim']:>5}  "
                   f"{_pct(m['test_accuracy'])}  {m['test_loss']:9.4f}")
    sp = results.get("splice")
    if sp:
        names = sp["models"]
        own = {n: sp["accuracy"][i][i] for i, n in enumerate(names)}
        out.append("")
        out.append("splice (encoder -> decoder)  accuracy  drop vs decoder's own")
        for i, enc in enumerate(names):
            for j, dec in enumerate(names):
                acc = sp["accuracy"][i][j]
                if i == j or acc is None:
                    continue
                drop = 100 * (own[dec] - acc)
                out.append(f"{enc + ' -> ' + dec:<27} {_pct(acc)}  {drop:6.1f} points")
    out.append("")
    out.append(f"run directory: {run_dir}")
    return "\n".join(out)


# --- arguments ------------------------------------------------------------------------------


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors and the result")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-v info, -vv debug)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file with config.toml's keys; "
                   "flags override it")
    p.add_argument("--dataset", choices=cfg.DATASET_NAMES, help="data set (default mnist)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="one model per seed (default 42 123)")
    p.add_argument("--epochs", type=int, help="training epochs (default 10)")
    p.add_argument("--latent-dim", type=int, metavar="D", help="bottleneck width (default 32)")
    p.add_argument("--latent-dims", type=int, nargs="+", metavar="D",
                   help="several widths: one model per seed and width")
    p.add_argument("--batch-size", type=int, help="samples per step (default 256)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--train-samples", type=int, metavar="N",
                   help="use the first N training images (default all)")
    p.add_argument("--test-samples", type=int, metavar="N",
                   help="use the first N test images (default all)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding mnist/ and fashion-mnist/")
    p.add_argument("--device", choices=cfg.DEVICES, help="where to train (default auto)")
    p.add_argument("--out", metavar="DIR", help=f"run directory (default {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true",
                   help="retrain models even when matching checkpoints exist")
    _add_verbosity(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stitchlab",
        description="Train encoder-decoder models from different seeds, splice every encoder "
                    "onto every decoder, and measure why the splice fails.",
    )
    parser.add_argument("--version", action="version", version=f"stitchlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="every stage in order (the main job)",
                       description="Train, splice and measure, into a run directory.")
    _add_run_options(p)
    p = sub.add_parser("train", help="train the models into a run directory",
                       description="Train the models of a config into a run directory.")
    _add_run_options(p)
    p = sub.add_parser("splice", help="rebuild the N x N splice table from the checkpoints",
                       description="Rebuild the N x N splice table of RUN from its checkpoints.")
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--device", choices=cfg.DEVICES, help="where to evaluate")
    _add_verbosity(p)
    _add_bench_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> cfg.RunConfig:
    """Defaults, then the --config file, then flags; validated."""
    data: dict = {}
    where = "command line"
    if args.config:
        data = cfg.load_toml(args.config)
        where = f"{args.config} and command line"
        cfg.from_dict(data, args.config)  # report a bad file as the file's fault
    if args.latent_dim is not None and args.latent_dims is not None:
        raise StitchlabError("--latent-dim and --latent-dims: give one or the other")
    flags = {
        "dataset": args.dataset, "seeds": args.seeds, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
        "data_dir": args.data_dir, "train_samples": args.train_samples,
        "test_samples": args.test_samples,
        "latent_dims": [args.latent_dim] if args.latent_dim is not None else args.latent_dims,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    return cfg.from_dict(data, where)


def _out_dir(args) -> Path:
    return Path(args.out or DEFAULT_OUT)


def _setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][
        min(args.verbose, 2)]
    root = logging.getLogger("stitchlab")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)


# --- commands -------------------------------------------------------------------------------


def cmd_run(args, train_only: bool = False) -> int:
    config = config_from_args(args)
    run_dir = _out_dir(args)
    pipeline.prepare_run_dir(run_dir)
    _setup_logging(args)
    progress = EpochProgress(config.epochs, quiet=args.quiet)
    if train_only:
        with pipeline.run_log(run_dir):
            ctx = pipeline.new_context(config, run_dir)
            pipeline.write_config(ctx)
            pipeline.load_data(ctx)
            pipeline.train(ctx, on_epoch=progress, force=args.force)
    else:
        ctx = pipeline.run(config, run_dir, on_epoch=progress, force=args.force)
    print(summary(ctx.results, run_dir))
    return 0


def cmd_splice(args) -> int:
    run_dir = Path(args.run_dir)
    _setup_logging(args)
    ctx = pipeline.reopen(run_dir, args.device)
    with pipeline.run_log(run_dir):
        pipeline.splice(ctx)
    print(summary(ctx.results, run_dir))
    return 0


# --- bench ----------------------------------------------------------------------------------


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="training speed against this machine's compute floor",
                       description="Measure the matrix-product peak, our trainer (one model "
                                   "and K = 2, 4, 8 at once), the conventional pipeline and "
                                   "the default run job; print a table.")
    p.add_argument("--quick", action="store_true",
                   help="partial epochs, fewer repeats, a 1-epoch run job (under a minute)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("--device", choices=cfg.DEVICES, default="cpu",
                   help="where to measure (default cpu)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding mnist/")
    p.add_argument("--no-run", action="store_true", help="skip the `stitchlab run` job")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of our trainer's products (default float32); the run job and "
                        "the conventional pipeline stay float32")
    _add_verbosity(p)


def cmd_bench(args) -> int:
    from . import bench
    from .fileio import atomic_write_json

    _setup_logging(args)
    settings = bench.BenchSettings.quick_settings() if args.quick else bench.BenchSettings()
    settings.run_job = not args.no_run
    settings.precision = args.precision
    results = bench.run_bench(settings, pipeline.resolve_device(args.device), args.data_dir)
    if args.out:
        atomic_write_json(args.out, results)
    print(bench.format_table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "train":
            return cmd_run(args, train_only=True)
        if args.command == "splice":
            return cmd_splice(args)
        if args.command == "bench":
            return cmd_bench(args)
    except StitchlabError as exc:
        print(f"stitchlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stitchlab {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
