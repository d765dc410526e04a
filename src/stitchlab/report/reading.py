"""What a report is made of: the results of a run, its test latents, and sentences from them.

`gather` collects the inputs once, from a live `pipeline.Context` (the last stage of
`stitchlab run`) or from a run directory (``stitchlab report RUN``). `reading` turns the numbers
into one paragraph; `pct` is the one way the report writes an accuracy, so that a test can find
the same text in the page.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DATASETS
from ..errors import StitchlabError
from ..results import read_results

log = logging.getLogger(__name__)

CHANCE = 0.1  # accuracy of guessing one of ten classes
DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass
class ReportInput:
    """Everything a report reads; latents and labels are None when they could not be had."""

    run_dir: Path
    results: dict
    latents: dict[str, np.ndarray] | None = None  # name -> (n_test, d)
    labels: np.ndarray | None = None  # (n_test,)
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.results.get("models", [])]

    @property
    def classes(self) -> tuple[str, ...]:
        info = DATASETS.get(self.results.get("config", {}).get("dataset", "mnist"))
        return info.classes if info else tuple(str(i) for i in range(10))


def gather(source, with_latents: bool = True) -> ReportInput:
    """The report's inputs from a `pipeline.Context` or a run directory.

    From a directory the latents come from `pipeline.reopen` (data, checkpoints, encoding); when
    that fails, the report is still written without the views that need them, and the reason is
    kept in ``notes``.
    """
    from ..pipeline import Context  # the pipeline runs the report as its last stage

    # 1. A live context already holds the latents.
    if isinstance(source, Context):
        inp = ReportInput(run_dir=Path(source.run_dir), results=source.results)
        if with_latents and source.test_latents and source.y_test is not None:
            inp.latents = {n: _numpy(z) for n, z in source.test_latents.items()}
            inp.labels = _numpy(source.y_test).astype(np.int64)
        return inp

    # 2. A run directory: the recorded results, and latents recomputed from the checkpoints.
    run_dir = Path(source)
    if not run_dir.is_dir():
        raise StitchlabError(f"{run_dir}: no such run directory; create one with `stitchlab run`")
    inp = ReportInput(run_dir=run_dir, results=read_results(run_dir / "results.json"))
    if not with_latents:
        return inp
    try:
        inp.latents, inp.labels = encode_test_split(run_dir)
    except (StitchlabError, OSError, KeyError, RuntimeError) as exc:
        log.warning("report: latent views left out, cannot reopen %s: %s", run_dir, exc)
        inp.notes.append(f"The 2-D latent views are left out: the run could not be reopened "
                         f"({exc}).")
    return inp


def encode_test_split(run_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every model's test latents (name -> (n_test, d)) and the test labels (n_test,), on CPU.

    Like `pipeline.reopen`, but only the test files are read, normalised and encoded (the
    report needs no training latents), and a data set that is not on disk is not downloaded.
    """
    import torch

    from .. import data as data_mod
    from ..pipeline import load_models, open_context
    from ..splice import encode

    ctx = open_context(run_dir, device="cpu")
    c = ctx.config
    folder = data_mod.find_dataset_dir(c.dataset, c.data_dir or None)
    if folder is None:
        raise StitchlabError(f"data set {c.dataset!r} not found on this machine")
    info = data_mod.get_info(c.dataset)
    images, labels = data_mod.read_split(folder, info, "test")  # (n, 28, 28), (n,)
    n_te = c.test_samples or images.shape[0]
    x_test = data_mod.normalise(torch.from_numpy(images[:n_te].copy()), info)  # (n_te, 784)
    load_models(ctx)
    latents = {n: encode(ctx.models[n].encoder, x_test).numpy() for n in ctx.names}
    return latents, labels[:n_te].astype(np.int64)


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


# --- numbers as text ------------------------------------------------------------------------


def pct(x, digits: int = 2) -> str:
    """An accuracy fraction as a percentage string, "n/a" for None or NaN: 0.9082 -> "90.82%"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.{digits}f}%"


def num(x, decimals: int = 3) -> str:
    """A number with a fixed count of decimals (integers as they are), "n/a" for None or NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    return f"{x:.{decimals}f}"


def anchors_label(k) -> str:
    return "all" if k == "all" else str(k)


def off_diagonal(matrix) -> list[tuple[int, int, float]]:
    """(row, column, value) for every off-diagonal entry that is a number."""
    out = []
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if i != j and v is not None and math.isfinite(v):
                out.append((i, j, float(v)))
    return out


def decoder_accuracy(results: dict, name: str) -> float | None:
    for m in results.get("models", []):
        if m["name"] == name:
            return m.get("test_accuracy")
    return None


# --- the paragraph --------------------------------------------------------------------------


def reading(results: dict) -> list[str]:
    """Sentences that read the run's numbers, in the order of the report's sections."""
    out = []
    models = results.get("models", [])
    if models:
        out.append(_models_sentence(models))
    splice = results.get("splice")
    if splice:
        out.extend(_splice_sentences(splice))
    sim = results.get("similarity")
    if sim and sim.get("splice_correlation"):
        out.extend(_similarity_sentences(sim))
    align = results.get("alignment")
    if align and splice:
        out.extend(_alignment_sentences(align, splice, results))
    return out


def _models_sentence(models: list[dict]) -> str:
    accs = [m["test_accuracy"] for m in models]
    dataset = models[0].get("dataset", "the data set")
    dataset = DATASET_TITLES.get(dataset, dataset)
    if len(models) == 1:
        return f"Model {models[0]['name']} reaches {pct(accs[0], 1)} test accuracy on {dataset}."
    if len(models) <= 4:
        names = _and([m["name"] for m in models])
        values = _and([pct(a, 1) for a in accs])
        return f"Models {names} reach {values} test accuracy on {dataset} on their own."
    return (f"The {len(models)} models reach between {pct(min(accs), 1)} and {pct(max(accs), 1)} "
            f"test accuracy on {dataset} on their own (mean {pct(float(np.mean(accs)), 1)}).")


def _splice_sentences(splice: dict) -> list[str]:
    names = splice["models"]
    pairs = off_diagonal(splice["accuracy"])
    if not pairs:
        return []
    chance = f"chance is {pct(CHANCE, 0)}"
    if len(pairs) <= 2:
        parts = [f"{names[i]}'s encoder with {names[j]}'s decoder scores {pct(v, 1)}"
                 for i, j, v in pairs]
        first = f"Spliced, {_and(parts)} ({chance})"
    else:
        values = [v for _, _, v in pairs]
        lo = min(pairs, key=lambda p: p[2])
        first = (f"The {len(pairs)} raw splices score between {pct(min(values), 1)} and "
                 f"{pct(max(values), 1)} (mean {pct(float(np.mean(values)), 1)}; {chance}); the "
                 f"worst is {names[lo[0]]}'s encoder with {names[lo[1]]}'s decoder")
    gap = float(np.mean([splice["accuracy"][j][j] - v for _, j, v in pairs]))
    return [f"{first}: a decoder does not read a foreign encoder's latents; it loses "
            f"{100 * gap:.1f} points on average from its accuracy with its own encoder."]


def _similarity_sentences(sim: dict) -> list[str]:
    corr = {m: c for m, c in sim["splice_correlation"].items() if c.get("spearman") is not None}
    values = sim.get("values", {})
    names = sim.get("models", [])
    out = []
    if "linear_cka" in values and len(names) >= 2:
        pairs = off_diagonal(values["linear_cka"])
        if pairs:
            mean = float(np.mean([v for _, _, v in pairs]))
            text = f"Linear CKA between different models is {mean:.2f} on average"
            if mean >= 0.7:
                text += (", so the spaces hold much the same information in different "
                         "coordinates")
            out.append(text + ".")
    if corr:
        best = max(corr, key=lambda m: abs(corr[m]["spearman"]))
        c = corr[best]
        out.append(f"Of the similarity measures, {best} tracks splice accuracy most closely "
                   f"(Spearman {c['spearman']:+.2f} over {c['n_pairs']} pairs).")
    return out


def _alignment_sentences(align: dict, splice: dict, results: dict) -> list[str]:
    out = []
    names = splice["models"]
    pairs = off_diagonal(splice["accuracy"])
    repaired = align.get("repaired") or {}
    methods = repaired.get("methods") or {}
    if pairs and methods:
        i, j, raw = pairs[0]
        k = repaired.get("anchors")
        rnames = repaired.get("models", names)
        if names[i] in rnames and names[j] in rnames:
            ri, rj = rnames.index(names[i]), rnames.index(names[j])
            scored = {m: v[ri][rj] for m, v in methods.items() if v[ri][rj] is not None}
            if scored:
                best = max(scored, key=scored.get)
                own = decoder_accuracy(results, names[j])
                out.append(f"{names[i]}'s encoder with {names[j]}'s decoder: {pct(raw, 1)}; "
                           f"after {best} on {k} anchors: {pct(scored[best], 1)} (the decoder "
                           f"with its own encoder: {pct(own, 1)}).")
    fewest = _fewest_anchors(align.get("curves") or [], results)
    if fewest:
        method, enc, dec, k = fewest
        out.append(f"With {method}, {k} anchors are enough for {enc}'s encoder with {dec}'s "
                   f"decoder to reach 90% of the decoder's own accuracy.")
    controls = align.get("controls") or {}
    ranges = []
    for key, label in (("untrained_encoder", "when fitted on an untrained encoder"),
                       ("noise_inputs", "on noise inputs")):
        vals = [v for v in (controls.get(key) or {}).values() if v is not None]
        if vals:
            ranges.append(f"{pct(min(vals), 1)} to {pct(max(vals), 1)} {label}")
    if ranges:
        out.append(f"As controls, the methods score {_and(ranges)} (chance "
                   f"{pct(controls.get('chance', CHANCE), 0)}).")
    flagged = controls.get("flagged") or []
    if flagged:
        out.append(f"The controls flag {_and(sorted(flagged))}: fitted on an untrained "
                   f"encoder or on noise inputs it still scores well above chance, so part of "
                   f"its repair does not come from the encoder's latents.")
    return out


def _fewest_anchors(curves: list[dict], results: dict):
    """(method, encoder, decoder, anchors) with the fewest numeric anchors reaching 90% of the
    decoder's own accuracy, on the first (encoder, decoder) pair of the curves."""
    pairs = [(c["encoder"], c["decoder"]) for c in curves if c["encoder"] != c["decoder"]]
    if not pairs:
        return None
    enc, dec = pairs[0]
    own = decoder_accuracy(results, dec)
    if own is None:
        return None
    best = None
    for c in curves:
        k, acc = c["anchors"], c.get("accuracy_mean")
        if (c["encoder"], c["decoder"]) != (enc, dec) or k == "all" or acc is None:
            continue
        if acc >= 0.9 * own and (best is None or k < best[3]):
            best = (c["method"], enc, dec, k)
    return best


def _and(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
