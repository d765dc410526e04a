"""The command line: argument parsing, progress bars, the summary table, exit codes.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, no traceback); 1 anything
unexpected; 130 / 143 interrupted by SIGINT / SIGTERM. No science lives here: every command is a
thin layer over `stitchlab.pipeline`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__, pipeline
from . import config as cfg
from .checkpoints import import_weights
from .errors import StitchlabError, Terminated

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
    """One progress bar per model, redrawn in place on a terminal; one line per epoch elsewhere."""

    def __init__(self, epochs: int, stream=None, quiet: bool = False, width: int = 24):
        stream = stream or sys.stderr  # looked up now, not at import, so redirection works
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
        end = "\x1b[K\n" if self.tty else "\n"
        self.stream.write("".join(line + end for line in lines))
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
    sim = results.get("similarity")
    if sim:
        out.append("")
        out.append("similarity (test set)   linear CKA  procrustes  mutual kNN")
        names, values = sim["models"], sim["values"]
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                row = [values.get(m, [[None]])[i][j] for m in
                       ("linear_cka", "procrustes_distance", "mutual_knn")]
                cells = "".join("         n/a" if v is None else f"{v:12.3f}" for v in row)
                out.append(f"{a + ' vs ' + names[j]:<22}{cells}")
    out += _alignment_summary(results.get("alignment"))
    out.append("")
    out.append(f"run directory: {run_dir}")
    if (run_dir / "report.html").is_file():
        out.append(f"report: {run_dir / 'report.html'}")
    return "\n".join(out)


def _alignment_summary(al: dict | None) -> list[str]:
    """Repaired accuracy per method at the repaired-matrix anchor count; the controls."""
    if not al:
        return []
    rep = al["repaired"]
    names = rep["models"]
    pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    wide = len(pairs) > 4
    heads = ["mean", "min", "max"] if wide else [f"{names[i]} -> {names[j]}" for i, j in pairs]
    out = ["", f"repaired splice ({rep['anchors']} anchors)"
           + ("  over all pairs" if wide else "") + "".join(f"{h:>10}" for h in heads)]
    for method, matrix in rep["methods"].items():
        vals = [matrix[i][j] for i, j in pairs]
        if wide:
            ok = [v for v in vals if v is not None]
            vals = [sum(ok) / len(ok), min(ok), max(ok)] if ok else [None] * 3
        label = f"  {method}"
        width = len(out[1]) - 10 * len(heads)
        out.append(f"{label:<{width}}" + "".join(f"{_pct(v):>10}" for v in vals))
    ctrl = al.get("controls")
    if ctrl:
        flagged = ", ".join(ctrl["flagged"]) or "none"
        out.append(f"controls on {ctrl['encoder']} -> {ctrl['decoder']} (untrained encoder, "
                   f"noise inputs): methods that repair them as well as the real encoder: "
                   f"{flagged}")
    return out


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


def _add_stage_parser(sub, name: str, help: str, description: str) -> None:
    """A sub-command that runs one stage on an existing run directory."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--device", choices=cfg.DEVICES, help="where to evaluate")
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
    _add_stage_parser(sub, "splice", "rebuild the N x N splice table from the checkpoints",
                      "Rebuild the N x N splice table of RUN from its checkpoints.")
    _add_stage_parser(sub, "analyze", "latent statistics and similarity measures of a run",
                      "Add latent statistics and similarity measures to RUN.")
    _add_stage_parser(sub, "align", "alignment maps: anchor sweeps, repaired matrices, controls",
                      "Fit alignment maps between every pair of models of RUN.")
    p = sub.add_parser("report", help="draw the figures and write report.html and report.md",
                       description="Draw RUN/figures/*.png|svg and write RUN/report.html "
                                   "(self-contained) and RUN/report.md from RUN's results.")
    p.add_argument("run_dir", metavar="RUN", help="a run directory")
    p.add_argument("--no-views", action="store_true",
                   help="leave out the 2-D latent views (no data or checkpoints needed)")
    _add_verbosity(p)
    p = sub.add_parser("import-weights", help="convert a PyTorch .pth state dict into a "
                       "stitchlab checkpoint",
                       description="Check a .pth state dict of this architecture (loaded with "
                       "weights_only=True, never unpickling code) and write it as a "
                       ".safetensors checkpoint.")
    p.add_argument("file", metavar="FILE", help="the .pth / .pt file")
    p.add_argument("--latent-dim", type=int, metavar="D",
                   help="the bottleneck width it must have (default: read from the file)")
    p.add_argument("--out", metavar="FILE", required=True, help="the .safetensors file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out when it exists")
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
    if args.out == "":
        raise StitchlabError("--out is empty; name a run directory")
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
    ctx = pipeline.run(config, run_dir, on_epoch=progress, force=args.force,
                       train_only=train_only)
    print(summary(ctx.results, run_dir))
    return 0


def cmd_stage(args, *stages) -> int:
    """Run `stages` in order on the existing run directory args.run_dir."""
    run_dir = Path(args.run_dir)
    _setup_logging(args)
    with pipeline.locked(run_dir):
        ctx = pipeline.reopen(run_dir, args.device)
        with pipeline.run_log(run_dir):
            for stage in stages:
                stage(ctx)
    print(summary(ctx.results, run_dir))
    return 0


def cmd_report(args) -> int:
    from .report import write_report  # matplotlib loads only for this command

    run_dir = Path(args.run_dir)
    _setup_logging(args)
    with pipeline.locked(run_dir), pipeline.run_log(run_dir):
        rep = write_report(run_dir, with_latents=not args.no_views)
    print(f"report: {rep.html} ({len(rep.figures)} figures in {rep.seconds:.1f} s)")
    return 0


def cmd_import_weights(args) -> int:
    _setup_logging(args)
    model, out = import_weights(args.file, args.out, latent_dim=args.latent_dim,
                                overwrite=args.force)
    print(f"wrote {out} (latent width {model.latent_dim}) from {args.file}")
    return 0


def _on_sigterm(signum, frame):
    raise Terminated()


def _resume_hint(args) -> str:
    if args.command in ("run", "train"):
        return (f"finished models are kept in {_out_dir(args)}; "
                f"run the same command again to resume")
    return "run the same command again"


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
    # SIGTERM (kill, a batch scheduler, a container stopping) unwinds like Ctrl-C does, so
    # atomic writes clean up, the lock is released, and what finished is kept.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "train":
            return cmd_run(args, train_only=True)
        if args.command == "splice":
            return cmd_stage(args, pipeline.splice)
        if args.command == "analyze":
            return cmd_stage(args, pipeline.latent_stats, pipeline.analyze)
        if args.command == "align":
            return cmd_stage(args, pipeline.align)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "import-weights":
            return cmd_import_weights(args)
        if args.command == "bench":
            return cmd_bench(args)
    except StitchlabError as exc:
        print(f"stitchlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        name, code = ("SIGINT", 130) if isinstance(exc, KeyboardInterrupt) else ("SIGTERM", 143)
        print(f"stitchlab {args.command}: interrupted by {name}; {_resume_hint(args)}",
              file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
