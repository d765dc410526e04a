"""The stages of a run, each reading and writing a run directory.

    config -> data -> train -> encode -> splice -> analyze -> align -> results.json -> report

`run` does them in order; the command line's sub-commands call single stages on an existing run
directory. Every stage writes results.json atomically when it ends, so an interrupted run keeps
what finished. A run directory looks like::

    RUN/config.toml  RUN/results.json  RUN/log.txt  RUN/models/NAME.safetensors
    RUN/report.html  RUN/report.md  RUN/figures/NAME.png|svg

While a command writes into RUN it holds ``RUN/.lock`` (see `locked`); running it again on the
same RUN resumes: checkpoints trained with the same settings are reused, later stages recomputed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config as cfg
from . import data as data_mod
from .checkpoints import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError, StitchlabError, TrainingDiverged
from .fileio import atomic_write_text, remove_stale_temporaries
from .latent import basic_stats, mean_vector_comparison
from .models import EncoderDecoder
from .results import SCHEMA, environment, read_results, write_results
from .runlock import RunLock
from .splice import encode, splice_table
from .training import TrainedModel, TrainSettings, train_models

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, list[dict]], None]


@dataclass
class Context:
    """What the stages share within one process: config, data, models, latents, results."""

    run_dir: Path
    config: cfg.RunConfig
    device: torch.device
    results: dict
    dataset: data_mod.Dataset | None = None
    x_train: torch.Tensor | None = None  # (n_train, 784), normalised
    y_train: torch.Tensor | None = None  # (n_train,)
    x_test: torch.Tensor | None = None  # (n_test, 784)
    y_test: torch.Tensor | None = None  # (n_test,)
    models: dict[str, EncoderDecoder] = field(default_factory=dict)
    train_latents: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n_train, d)
    test_latents: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n_test, d)

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.results["models"]]

    def save(self) -> None:
        write_results(self.run_dir / "results.json", self.results)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StitchlabError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(name)


def prepare_run_dir(run_dir: Path) -> None:
    """Create `run_dir` (and models/) or fail with a message if it cannot hold a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise StitchlabError(f"--out {run_dir}: is a file, not a directory; choose another --out")
    try:
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchlabError(
            f"--out {run_dir}: cannot create the run directory ({exc.strerror})"
        ) from None


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold RUN/.lock while the block runs; temporaries of interrupted writes are removed.

    Temporaries are removed on entry (left by a killed run) and on every way out, so a block
    stopped by an exception or KeyboardInterrupt leaves only whole files behind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StitchlabError(f"{run_dir}: no such run directory; create one with `stitchlab run`")
    with RunLock(run_dir):
        for p in remove_stale_temporaries(run_dir):
            log.info("removed %s, left by an interrupted write", p)
        try:
            yield
        finally:
            remove_stale_temporaries(run_dir)


def new_context(config: cfg.RunConfig, run_dir: Path) -> Context:
    device = resolve_device(config.device)
    results = {
        "schema": SCHEMA,
        "config": config.to_dict(),
        "environment": environment(device),
        "models": [],
        "timings": {},
    }
    return Context(run_dir=run_dir, config=config, device=device, results=results)


def open_context(run_dir: Path, device: str | None = None) -> Context:
    """A context for an existing run directory, from its config.toml and results.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StitchlabError(f"{run_dir}: no such run directory; create one with `stitchlab run`")
    config = cfg.from_dict(cfg.load_toml(run_dir / "config.toml"), str(run_dir / "config.toml"))
    if device is not None:
        config.device = device
    results = read_results(run_dir / "results.json")
    ctx = Context(run_dir=run_dir, config=config, device=resolve_device(config.device),
                  results=results)
    ctx.results["environment"] = environment(ctx.device)
    return ctx


def _timed(ctx: Context, stage: str, start: float) -> None:
    ctx.results.setdefault("timings", {})[stage] = round(time.perf_counter() - start, 3)


# --- stages ---------------------------------------------------------------------------------


def load_data(ctx: Context) -> None:
    """Load, check and normalise the data set, trimmed to train_samples / test_samples."""
    t0 = time.perf_counter()
    c = ctx.config
    ds = data_mod.load(c.dataset, root=c.data_dir or None)
    for key, have in (("train_samples", ds.train_images.shape[0]),
                      ("test_samples", ds.test_images.shape[0])):
        if getattr(c, key) > have:
            raise ConfigError(f"key {key!r} is {getattr(c, key)} but {c.dataset} has only "
                              f"{have} images in that split; use at most {have} (0 = all)")
    n_tr = c.train_samples or ds.train_images.shape[0]
    n_te = c.test_samples or ds.test_images.shape[0]
    ctx.dataset = ds
    ctx.x_train = data_mod.normalise(ds.train_images[:n_tr], ds.info, ctx.device)
    ctx.y_train = ds.train_labels[:n_tr].to(ctx.device)
    ctx.x_test = data_mod.normalise(ds.test_images[:n_te], ds.info, ctx.device)
    ctx.y_test = ds.test_labels[:n_te].to(ctx.device)
    _timed(ctx, "data", t0)


def training_signature(config: cfg.RunConfig, seed: int, latent_dim: int) -> dict:
    """The config keys that determine one model's weights, as stored in its checkpoint."""
    sig = {k: getattr(config, k) for k in cfg.TRAINING_KEYS}
    return {**sig, "seed": seed, "latent_dim": latent_dim}


def _model_record(name: str, seed: int, latent_dim: int, dataset: str, meta: dict) -> dict:
    return {
        "name": name,
        "seed": seed,
        "latent_dim": latent_dim,
        "dataset": dataset,
        "test_accuracy": meta["test_accuracy"],
        "test_loss": meta["test_loss"],
        "train_seconds": meta["train_seconds"],
        "history": meta["history"],
        "checkpoint": f"models/{name}.safetensors",
    }


def reusable_checkpoint(path: Path, signature: dict) -> dict | None:
    """The metadata of `path` when it was trained with `signature`; None when absent.

    Raises StitchlabError when it exists but was trained differently, naming the keys.
    """
    if not path.is_file():
        return None
    try:
        _, meta = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; or pass --force to retrain every model") from exc
    stored = meta.get("training", {})
    diff = sorted(k for k in signature if stored.get(k) != signature[k])
    if diff:
        changes = ", ".join(f"{k}: {stored.get(k)!r} -> {signature[k]!r}" for k in diff)
        raise StitchlabError(
            f"{path}: checkpoint was trained with a different config ({changes}); "
            f"pass --force to retrain, or choose another --out"
        )
    return meta


def check_reuse(ctx: Context, force: bool = False) -> None:
    """Raise before anything is written if RUN holds checkpoints trained with other settings."""
    if force:
        return
    for name, seed, width in cfg.model_names(ctx.config):
        path = ctx.run_dir / "models" / f"{name}.safetensors"
        reusable_checkpoint(path, training_signature(ctx.config, seed, width))


def _all_finite(t: TrainedModel) -> bool:
    """Whether a trained model's weights and every number in its history are finite.

    Training checks its loss every epoch, but the last step can still leave NaN weights, and
    those would show only as a NaN test loss.
    """
    numbers = [v for row in t.history for v in row.values() if isinstance(v, float)]
    return (all(math.isfinite(v) for v in numbers)
            and all(bool(torch.isfinite(p).all()) for p in t.model.parameters()))


def train(ctx: Context, on_epoch: EpochCallback | None = None, force: bool = False) -> None:
    """Train every model of the config (reusing matching checkpoints unless `force`).

    Models of one width are trained together in one batched pass; each checkpoint is written
    atomically as soon as its batch finishes.
    """
    t0 = time.perf_counter()
    c = ctx.config
    settings = TrainSettings(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                             lr_step=c.lr_step, lr_gamma=c.lr_gamma, dropout=c.dropout)
    records: dict[str, dict] = {}
    todo: dict[int, list[tuple[str, int]]] = {}

    # 1. Reuse what an earlier run with the same config already trained.
    for name, seed, width in cfg.model_names(c):
        path = ctx.run_dir / "models" / f"{name}.safetensors"
        meta = None if force else reusable_checkpoint(path, training_signature(c, seed, width))
        if meta is None:
            todo.setdefault(width, []).append((name, seed))
        else:
            log.info("model %s: reusing %s", name, path)
            records[name] = _model_record(name, seed, width, c.dataset, meta)

    # 2. Train the rest, one batched pass per width, saving each model as it finishes.
    for width, group in todo.items():
        names = [n for n, _ in group]
        seeds = [s for _, s in group]
        log.info("training %s (latent width %d) on %s", ", ".join(names), width, ctx.device)
        trained = train_models(seeds, names, ctx.x_train, ctx.y_train, ctx.x_test, ctx.y_test,
                               latent_dim=width, settings=settings, device=ctx.device,
                               on_epoch=on_epoch)
        diverged = [t.name for t in trained if not _all_finite(t)]
        for t in trained:
            if t.name in diverged:
                continue
            meta = {
                "name": t.name, "seed": t.seed, "dataset": c.dataset, "dropout": c.dropout,
                "test_accuracy": t.test_accuracy, "test_loss": t.test_loss,
                "train_seconds": t.train_seconds, "history": t.history,
                "trained_with": names, "training": training_signature(c, t.seed, width),
                "config": c.to_dict(),
            }
            save_checkpoint(ctx.run_dir / "models" / f"{t.name}.safetensors", t.model, meta)
            records[t.name] = _model_record(t.name, t.seed, width, c.dataset, meta)
            ctx.models[t.name] = t.model
        if diverged:
            raise TrainingDiverged(
                f"model {', '.join(diverged)} ended training with non-finite weights or test "
                f"loss (the others are saved); lower --lr (now {c.lr}) and run again"
            )

    ctx.results["models"] = [records[n] for n, _, _ in cfg.model_names(c)]
    _timed(ctx, "train", t0)
    ctx.save()


def load_models(ctx: Context) -> None:
    """Load every model listed in results.json from its checkpoint (no training)."""
    for rec in ctx.results["models"]:
        if rec["name"] in ctx.models:
            continue
        model, _ = load_checkpoint(ctx.run_dir / rec["checkpoint"], rec["latent_dim"])
        ctx.models[rec["name"]] = model.to(ctx.device)


def encode_all(ctx: Context) -> None:
    """Every model's latents of the train and test sets, computed once per run."""
    t0 = time.perf_counter()
    for name in ctx.names:
        if name in ctx.test_latents:
            continue
        model = ctx.models[name].to(ctx.device).eval()
        ctx.train_latents[name] = encode(model.encoder, ctx.x_train)
        ctx.test_latents[name] = encode(model.encoder, ctx.x_test)
    _timed(ctx, "encode", t0)


def splice(ctx: Context) -> None:
    """The N x N table of raw splices on the test set."""
    t0 = time.perf_counter()
    decoders = {n: ctx.models[n].decoder for n in ctx.names}
    ctx.results["splice"] = splice_table(ctx.names, ctx.test_latents, decoders, ctx.y_test)
    _timed(ctx, "splice", t0)
    ctx.save()


def latent_stats(ctx: Context) -> None:
    """Basic per-model latent statistics and the mean-vector comparison of every pair."""
    t0 = time.perf_counter()
    labels = ctx.y_test.cpu().numpy()
    per_model = {n: basic_stats(ctx.test_latents[n], labels) for n in ctx.names}
    pairs = []
    for i, a in enumerate(ctx.names):
        for b in ctx.names[i + 1:]:
            pairs.append({"a": a, "b": b,
                          **mean_vector_comparison(ctx.test_latents[a], ctx.test_latents[b])})
    ctx.results["latent"] = {"models": per_model, "pairs": pairs}
    _timed(ctx, "latent", t0)
    ctx.save()


def analyze(ctx: Context) -> None:
    """Full latent statistics per model, and every similarity measure for every pair."""
    from . import latent, similarity

    t0 = time.perf_counter()
    labels = ctx.y_test.cpu().numpy()
    section = ctx.results.setdefault("latent", {"models": {}, "pairs": []})
    try:
        with single_threaded():
            for name in ctx.names:
                section["models"][name] = latent.describe(ctx.test_latents[name], labels)
            sim = similarity.similarity_matrix(
                {n: ctx.test_latents[n] for n in ctx.names}, labels)
    except ValueError as exc:
        raise StitchlabError(f"analyze: {exc}; a larger test_samples may help") from exc
    if "splice" in ctx.results:
        sim["splice_correlation"] = similarity.rank_correlation_with_splice(
            sim["values"], ctx.results["splice"]["accuracy"])
    ctx.results["similarity"] = sim
    _timed(ctx, "analyze", t0)
    ctx.save()


@contextlib.contextmanager
def single_threaded():
    """One torch and one BLAS thread for the block.

    The analysis and alignment stages run thousands of small products; on this project's
    2-core reference machine, two threads made them several times slower (see the docstring
    of stitchlab.align.experiments).
    """
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(old)


# Naive baselines for splices across different widths (not defined for equal widths).
WIDTH_BASELINES = ("zero_pad", "truncate")
# A method whose score on a control comes within this many points of its real score is flagged.
CONTROL_MARGIN = 0.05


def align(ctx: Context) -> None:
    """Anchor sweeps for every ordered pair, repaired N x N matrices, and the controls."""
    from .align import experiments as ex

    t0 = time.perf_counter()
    c = ctx.config.align
    names = ctx.names
    width = {n: ctx.test_latents[n].shape[1] for n in names}
    y_train, y_test = ctx.y_train.cpu().numpy(), ctx.y_test.cpu().numpy()
    with single_threaded():
        # 1. Accuracy against the number of anchors, per ordered pair and method.
        curves = []
        for enc in names:
            for dec in names:
                if enc == dec:
                    continue
                baselines = WIDTH_BASELINES if width[enc] != width[dec] else ()
                methods = [*c.methods, *(m for m in baselines if m not in c.methods)]
                if width[enc] > width[dec]:
                    methods = [m for m in methods if m != "zero_pad"]
                elif width[enc] < width[dec]:
                    methods = [m for m in methods if m != "truncate"]
                rows = ex.anchor_sweep(
                    ctx.train_latents[enc], ctx.train_latents[dec], y_train,
                    ctx.models[dec].decoder, ctx.test_latents[enc], y_test,
                    methods=methods, anchor_counts=c.anchors, repeats=c.repeats, seed=c.seed,
                    source_decoder=ctx.models[enc].decoder, encoder=enc, decoder_name=dec,
                )
                curves += [r for r in rows if r.get("accuracy_mean") is not None]
        log.info("alignment: %d sweep points", len(curves))

        # 2. The repaired N x N matrix per method at one anchor count.
        k = min(c.repaired_anchors, ctx.x_train.shape[0] // 2)
        decoders = {n: ctx.models[n].decoder for n in names}
        repaired = {
            m: ex.repaired_matrix(ctx.train_latents, y_train, ctx.test_latents, y_test,
                                  decoders, m, anchors=k, seed=c.seed)
            for m in c.methods
        }
        section = {"curves": curves,
                   "repaired": {"anchors": k, "models": names, "methods": repaired}}

        # 3. Controls on the first pair of equal widths: an untrained encoder, noise inputs.
        pair = next(((a, b) for a in names for b in names
                     if a != b and width[a] == width[b]), None)
        if pair is not None:
            ctrl = ex.controls(ctx.models[pair[0]], ctx.models[pair[1]], ctx.x_train.cpu(),
                               y_train, ctx.x_test.cpu(), y_test, c.methods, anchors=k,
                               seed=c.seed)
            ctrl["encoder"], ctrl["decoder"] = pair
            ctrl["flagged"] = _flag_controls(ctrl)
            section["controls"] = ctrl

        # 4. Relative representations, opt-in: decoders trained on relative coordinates.
        if c.relative:
            section["relative"] = {
                "anchors": c.relative_anchors, "models": names,
                "accuracy": ex.relative_matrix(ctx.train_latents, y_train, ctx.test_latents,
                                               y_test, anchors=c.relative_anchors,
                                               seed=c.seed),
            }
    ctx.results["alignment"] = section
    _timed(ctx, "align", t0)
    ctx.save()


def _flag_controls(ctrl: dict) -> list[str]:
    """Methods that repair a control (untrained encoder, noise) about as well as the real one."""
    flagged = []
    for method, real in ctrl["real"].items():
        if real is None:
            continue
        for condition in ("untrained_encoder", "noise_inputs"):
            score = ctrl[condition].get(method)
            if score is not None and score >= real - CONTROL_MARGIN:
                flagged.append(method)
                break
    return flagged


def report(ctx: Context) -> None:
    """Figures, report.html and report.md of the run, from what the earlier stages measured."""
    from .report import write_report  # matplotlib loads only when a report is drawn

    t0 = time.perf_counter()
    write_report(ctx)
    _timed(ctx, "report", t0)
    ctx.save()


def write_config(ctx: Context) -> None:
    atomic_write_text(ctx.run_dir / "config.toml", ctx.config.to_toml())


@contextlib.contextmanager
def run_log(run_dir: Path):
    """Append the package's log records (INFO and up) to RUN/log.txt while the block runs."""
    logger = logging.getLogger("stitchlab")
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def run(
    config: cfg.RunConfig,
    run_dir: Path,
    on_epoch: EpochCallback | None = None,
    force: bool = False,
    train_only: bool = False,
) -> Context:
    """Every stage in order into `run_dir` (only up to training if `train_only`).

    Resumes when `run_dir` holds an earlier run: matching checkpoints are reused (all retrained
    when `force`); checkpoints trained with other settings stop the run before it writes
    anything. Returns the context with all results.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir)
    with run_log(run_dir), locked(run_dir):
        ctx = new_context(config, run_dir)
        check_reuse(ctx, force)
        load_data(ctx)
        write_config(ctx)
        train(ctx, on_epoch=on_epoch, force=force)
        if train_only:
            return ctx
        load_models(ctx)
        encode_all(ctx)
        splice(ctx)
        latent_stats(ctx)
        analyze(ctx)
        align(ctx)
        report(ctx)
        _timed(ctx, "total", t0)
        ctx.save()
    return ctx


def reopen(run_dir: Path, device: str | None = None) -> Context:
    """An existing run with data loaded, models loaded from checkpoints and latents computed."""
    ctx = open_context(run_dir, device)
    load_data(ctx)
    load_models(ctx)
    encode_all(ctx)
    return ctx
