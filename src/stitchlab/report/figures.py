"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg for PNG).

Every ``fig_*`` function takes a `ReportInput` and returns a matplotlib Figure, or None when
the run lacks what the figure shows. `render` draws them all and writes ``figures/NAME.png``
and ``figures/NAME.svg`` atomically. Colours: one per model (the same in every figure) and
one per class (the same in every 2-D view).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..fileio import atomic_write_bytes
from .reading import CHANCE, ReportInput, decoder_accuracy, off_diagonal

log = logging.getLogger(__name__)

DPI = 100
VIEW_POINTS = 2000  # test points drawn in each PCA view
TSNE_POINTS = 1000  # test points embedded by t-SNE (its cost grows faster than n)
TSNE_SEED = 0
MAX_VIEW_MODELS = 8  # models shown in the 2-D views, the first ones of the run
MODEL_COLOURS = ("#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class FigureSpec:
    """One figure of the report: where it goes, and what it says."""

    name: str  # file stem under figures/
    section: str  # id of the report section that shows it
    title: str
    caption: str
    draw: Callable[[ReportInput], Figure | None]


@dataclass
class RenderedFigure:
    name: str
    section: str
    title: str
    caption: str
    png: bytes  # the PNG as written, for embedding
    png_path: Path
    svg_path: Path


def model_colour(names: list[str], name: str) -> str:
    return MODEL_COLOURS[names.index(name) % len(MODEL_COLOURS)]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _matrix(values) -> np.ndarray:
    """A nested list with None entries as a float array with NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def heatmap(ax, values, rows: list[str], cols: list[str], fmt: str | None = "{:.1f}",
            vmin=None, vmax=None, cmap: str = "viridis", scale: float = 1.0):
    """A heatmap of `values` (rows x cols; None shown grey), each cell printed with `fmt`
    (None prints nothing); returns the image."""
    m = _matrix(values) * scale
    cm = colormaps[cmap].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if fmt is None:
        return im

    # Cell text in black or white, whichever reads better on the cell's colour.
    lo, hi = im.get_clim()
    for (i, j), v in np.ndenumerate(m):
        if np.isnan(v):
            text, colour = "n/a", "#444444"
        else:
            text = fmt.format(v)
            r, g, b, _ = im.cmap((v - lo) / (hi - lo) if hi > lo else 0.5)
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
        ax.text(j, i, text, ha="center", va="center", color=colour,
                fontsize=9 if len(rows) <= 6 else 7)
    return im


def _percent_axis(ax, top: float = 100.0) -> None:
    ax.set_ylim(0, top)
    ax.axhline(100 * CHANCE, color="#888888", linestyle=":", linewidth=1)
    ax.grid(axis="y", color="#eeeeee")
    ax.set_axisbelow(True)


# --- 1. headline ----------------------------------------------------------------------------


def fig_accuracy_bars(inp: ReportInput) -> Figure | None:
    models = inp.results.get("models") or []
    if not models:
        return None
    labels = [m["name"] for m in models]
    values = [m["test_accuracy"] for m in models]
    colours = ["#1b6ca8"] * len(models)
    splice = inp.results.get("splice")
    if splice:
        names = splice["models"]
        for i, j, v in off_diagonal(splice["accuracy"]):
            labels.append(f"{names[i]}\u2192{names[j]}")
            values.append(v)
            colours.append("#d1495b")
    fig = _figure(max(4.5, 0.55 * len(labels) + 1.5), 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, [100 * v for v in values], color=colours, width=0.7)
    for xi, v in zip(x, values, strict=True):
        ax.text(xi, 100 * v + 1.5, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=8)
    _percent_axis(ax, 108)
    ax.set_xticks(x, labels, rotation=0 if len(labels) <= 8 else 60)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(handles=[
        Line2D([], [], color="#1b6ca8", lw=6, label="model (own encoder)"),
        Line2D([], [], color="#d1495b", lw=6, label="raw splice encoder\u2192decoder"),
        Line2D([], [], color="#888888", ls=":", label="chance"),
    ], loc="upper right", fontsize=8, framealpha=0.9)
    return fig


def fig_splice_heatmap(inp: ReportInput) -> Figure | None:
    splice = inp.results.get("splice")
    if not splice:
        return None
    names = splice["models"]
    n = len(names)
    fig = _figure(max(3.6, 0.65 * n + 2.2), max(3.0, 0.55 * n + 1.6))
    ax = fig.add_subplot()
    im = heatmap(ax, splice["accuracy"], names, names, vmin=0, vmax=100, scale=100)
    ax.set_xlabel("decoder")
    ax.set_ylabel("encoder")
    ax.set_title("raw splice accuracy (%)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


# --- 2. training ----------------------------------------------------------------------------


def fig_training_curves(inp: ReportInput) -> Figure | None:
    models = [m for m in inp.results.get("models") or [] if m.get("history")]
    if not models:
        return None
    names = [m["name"] for m in models]
    fig = _figure(10, 3.2)
    axes = fig.subplots(1, 3)
    panels = (("train_loss", "train loss", 1), ("test_loss", "test loss", 1),
              ("test_accuracy", "test accuracy (%)", 100))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for m in models:
            epochs = [h["epoch"] for h in m["history"]]
            ys = [np.nan if h.get(key) is None else scale * h[key] for h in m["history"]]
            ax.plot(epochs, ys, marker="o", markersize=3, color=model_colour(names, m["name"]),
                    label=m["name"])
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(color="#eeeeee")
        if max(len(m["history"]) for m in models) <= 12:
            ax.set_xticks(sorted({h["epoch"] for m in models for h in m["history"]}))
    axes[0].legend(fontsize=8)
    return fig


# --- 3. latent statistics -------------------------------------------------------------------


def _latent_models(inp: ReportInput) -> dict[str, dict]:
    lat = inp.results.get("latent") or {}
    per = lat.get("models") or {}
    return {n: per[n] for n in inp.names if n in per and per[n].get("mean") is not None}


def fig_latent_dimensions(inp: ReportInput) -> Figure | None:
    per = _latent_models(inp)
    if not per:
        return None
    width = max(len(s["mean"]) for s in per.values())
    fig = _figure(max(6.5, 0.22 * width + 2), 1.7 * len(per) + 0.8)
    axes = fig.subplots(len(per), 1, squeeze=False, sharex=True, sharey=True)[:, 0]
    for ax, name in zip(axes, per, strict=True):
        s = per[name]
        mean = np.asarray(s["mean"], float)  # (d,)
        std = np.asarray(s.get("std") or np.full(mean.size, np.nan), float)  # (d,)
        x = np.arange(mean.size)
        colour = model_colour(inp.names, name)
        ax.bar(x - 0.2, mean, width=0.4, color=colour, label="mean")
        ax.bar(x + 0.2, std, width=0.4, color=colour, alpha=0.4, hatch="///",
               edgecolor="white", linewidth=0, label="std")
        dead = sorted(set(s.get("dead_unit_indices") or []))
        for d in dead:
            ax.axvspan(d - 0.5, d + 0.5, color="#f4c7c3", zorder=0)
        if dead:
            ax.plot(dead, [0] * len(dead), "x", color="#b00020", markersize=6, label="dead")
        ax.set_title(f"{name}: {mean.size} dims, {len(dead)} dead", fontsize=9, loc="left")
        ax.grid(axis="y", color="#eeeeee")
        ax.set_axisbelow(True)
        ax.legend(fontsize=7, loc="upper right", ncols=3)
    axes[-1].set_xlabel("latent dimension (dead units: zero on every test image, shaded)")
    return fig


def _spectrum(inp: ReportInput, name: str) -> np.ndarray | None:
    """PCA explained-variance ratios of a model, from results or else from its latents."""
    s = (inp.results.get("latent") or {}).get("models", {}).get(name) or {}
    if s.get("pca_explained_variance_ratio"):
        return np.asarray(s["pca_explained_variance_ratio"], float)
    if inp.latents is None or name not in inp.latents:
        return None
    z = inp.latents[name].astype(np.float64)
    zc = z - z.mean(0)
    lam = np.clip(np.linalg.eigvalsh(zc.T @ zc / len(z))[::-1], 0, None)  # (d,) descending
    return lam / lam.sum() if lam.sum() > 0 else None


def fig_pca_spectrum(inp: ReportInput) -> Figure | None:
    spectra = {n: _spectrum(inp, n) for n in inp.names}
    spectra = {n: s for n, s in spectra.items() if s is not None}
    if not spectra:
        return None
    per = (inp.results.get("latent") or {}).get("models", {})
    fig = _figure(9, 3.2)
    ax, cum = fig.subplots(1, 2)
    for name, s in spectra.items():
        k = np.arange(1, s.size + 1)
        pr = (per.get(name) or {}).get("participation_ratio")
        label = name if pr is None else f"{name} (participation ratio {pr:.1f})"
        colour = model_colour(inp.names, name)
        ax.plot(k, np.where(s > 0, s, np.nan), marker="o", markersize=2.5, color=colour,
                label=label)
        cum.plot(k, 100 * np.cumsum(s), color=colour, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("principal component")
    ax.set_title("explained variance ratio", fontsize=10)
    ax.legend(fontsize=8)
    cum.set_xlabel("principal components kept")
    cum.set_title("cumulative explained variance (%)", fontsize=10)
    cum.set_ylim(0, 102)
    for a in (ax, cum):
        a.grid(color="#eeeeee")
    return fig


def fig_centroid_distances(inp: ReportInput) -> Figure | None:
    per = (inp.results.get("latent") or {}).get("models", {})
    mats = {n: per[n]["centroid_distance_matrix"] for n in inp.names
            if (per.get(n) or {}).get("centroid_distance_matrix")}
    if not mats:
        return None
    rows, cols = _grid(len(mats), 3)
    fig = _figure(3.9 * cols, 3.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    classes = list(inp.classes)
    short = [c[:7] for c in classes]
    for ax, (name, m) in zip(axes, mats.items(), strict=False):
        # No numbers in the cells: 100 per model cost more to draw than they tell.
        im = heatmap(ax, m, short, short, fmt=None, cmap="magma_r")
        ax.set_title(f"{name}: distance between class centroids", fontsize=9)
        ax.tick_params(axis="x", labelrotation=90 if len(max(short, key=len)) > 2 else 0)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes[len(mats):]:
        ax.set_visible(False)
    return fig


# --- 4. 2-D views ---------------------------------------------------------------------------


def _pca_2d(z: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `idx` of z (n, d) on its first two principal axes (fitted on all rows), shape
    (m, 2), and the share of variance along each axis, shape (2,)."""
    zc = z.astype(np.float64) - z.mean(0)  # (n, d)
    lam, vecs = np.linalg.eigh(zc.T @ zc)  # ascending; (d,), (d, d)
    lam, vecs = np.clip(lam[::-1], 0, None), vecs[:, ::-1]
    axes = vecs[:, :2].T  # (k, d), k = min(2, d)
    # Fix the sign of each axis so that repeated reports draw the same picture.
    signs = np.sign(axes[np.arange(axes.shape[0]), np.abs(axes).argmax(1)])
    p = zc[idx] @ (axes * signs[:, None]).T  # (m, k)
    var = lam[:2] / lam.sum() if lam.sum() > 0 else np.zeros(min(2, lam.size))
    if p.shape[1] < 2:  # a one-dimensional latent space
        p = np.column_stack([p, np.zeros(len(p))])
    return p, np.pad(var, (0, 2 - var.size))


def _tsne_2d(z: np.ndarray, seed: int) -> np.ndarray:
    """Barnes-Hut t-SNE of z (m, d) to (m, 2), seeded, on one thread.

    One thread because OpenMP's busy waiting makes two threads on a busy 2-core machine about
    four times slower than one (28 s against 6 s for 1,500 points). Angle 0.8 rather than 0.5,
    perplexity 20 rather than 30 and 400 iterations rather than 1,000 take 1.0 s instead of
    3.0 s (scikit-learn's defaults) for 1,000 points of the default run, with the same ten
    clusters in the picture.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(20.0, max(2.0, (len(z) - 1) / 3.5))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=400, learning_rate="auto", angle=0.8)
    with threadpool_limits(limits=1):
        return tsne.fit_transform(z.astype(np.float32))


def sample_indices(n: int, m: int, seed: int = TSNE_SEED) -> np.ndarray:
    """A seeded, sorted subsample of m of n indices (all of them when n <= m)."""
    if n <= m:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def _view_models(inp: ReportInput) -> list[str]:
    if inp.latents is None or inp.labels is None:
        return []
    return [n for n in inp.names if n in inp.latents][:MAX_VIEW_MODELS]


def tsne_embeddings(inp: ReportInput) -> dict[str, np.ndarray | None]:
    """t-SNE of each viewed model's subsample, name -> (m, 2); None with under 5 points."""
    idx = sample_indices(len(inp.labels), TSNE_POINTS)
    out = {}
    for name in _view_models(inp):
        t0 = time.perf_counter()
        out[name] = _tsne_2d(inp.latents[name][idx], TSNE_SEED) if len(idx) >= 5 else None
        log.debug("t-SNE of %s: %.2f s", name, time.perf_counter() - t0)
    return out


def fig_latent_views(inp: ReportInput, embeddings: Future | None = None) -> Figure | None:
    names = _view_models(inp)
    if not names:
        return None
    tsne = embeddings.result() if embeddings is not None else tsne_embeddings(inp)
    n = len(inp.labels)
    view_idx = sample_indices(n, VIEW_POINTS)
    tsne_idx = sample_indices(n, TSNE_POINTS)
    fig = _figure(2.9 * len(names) + 1.3, 5.9)
    axes = fig.subplots(2, len(names), squeeze=False)
    colours = np.array([to_rgba(CLASS_COLOURS[c % 10]) for c in range(10)])
    for col, name in enumerate(names):
        p, var = _pca_2d(inp.latents[name], view_idx)
        t = tsne[name]
        panels = ((axes[0, col], p, view_idx,
                   f"{name} \u00b7 PCA ({100 * var[0]:.0f}% + {100 * var[1]:.0f}% var.)"),
                  (axes[1, col], t, tsne_idx, f"{name} \u00b7 t-SNE ({len(tsne_idx)} points)"))
        for ax, xy, idx, title in panels:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            for spine in ax.spines.values():
                spine.set_color("#999999")
            if xy is None:
                continue
            ax.scatter(xy[:, 0], xy[:, 1], s=3, c=colours[inp.labels[idx] % 10], alpha=0.75,
                       linewidths=0, rasterized=True)
    handles = [Line2D([], [], marker="o", ls="", color=CLASS_COLOURS[c], label=label)
               for c, label in enumerate(inp.classes)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class",
               frameon=False, markerscale=1.2)
    return fig


# --- 5. similarity --------------------------------------------------------------------------


def _measures(inp: ReportInput) -> list[str]:
    sim = inp.results.get("similarity") or {}
    values = sim.get("values") or {}
    return [m for m in sim.get("measures", list(values)) if m in values]


def _measure_range(name: str, values) -> tuple[float, float]:
    """A fixed colour range, so that 0.90 against 1.00 does not span the whole colour map.

    [0, 1] for similarities (wider if a value falls outside), [0, pi/2] for the angular
    Procrustes distance, [0, largest value] for any other distance.
    """
    m = _matrix(values)
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if name == "procrustes_distance":
        return 0.0, max(hi, np.pi / 2)
    if name.endswith("_distance"):
        return 0.0, max(hi, 1e-12)
    return min(0.0, lo), max(1.0, hi)


def fig_similarity_heatmaps(inp: ReportInput) -> Figure | None:
    measures = _measures(inp)
    if not measures:
        return None
    sim = inp.results["similarity"]
    names = sim["models"]
    rows, cols = _grid(len(measures), 4)
    side = max(2.6, 0.45 * len(names) + 1.6)
    fig = _figure(side * cols + 0.6, side * rows * 0.9 + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    # No colour bars: every cell prints its value, and 11 bars would double the drawing time.
    for ax, m in zip(axes, measures, strict=False):
        vmin, vmax = _measure_range(m, sim["values"][m])
        cmap = "cividis_r" if m.endswith("_distance") else "cividis"
        heatmap(ax, sim["values"][m], names, names, fmt="{:.2f}", cmap=cmap, vmin=vmin,
                vmax=vmax)
        ax.set_title(m, fontsize=9)
    for ax in axes[len(measures):]:
        ax.set_visible(False)
    return fig


def fig_similarity_vs_splice(inp: ReportInput) -> Figure | None:
    measures = _measures(inp)
    splice = inp.results.get("splice")
    if not measures or not splice:
        return None
    sim = inp.results["similarity"]
    snames, names = splice["models"], sim["models"]
    corr = sim.get("splice_correlation") or {}
    rows, cols = _grid(len(measures), 4)
    fig = _figure(2.8 * cols + 0.4, 2.5 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, m in zip(axes, measures, strict=False):
        xs, ys, labels = [], [], []
        for i, j, acc in off_diagonal(splice["accuracy"]):
            a, b = snames[i], snames[j]
            if a in names and b in names:
                v = sim["values"][m][names.index(a)][names.index(b)]
                if v is not None:
                    xs.append(v)
                    ys.append(100 * acc)
                    labels.append(f"{a}\u2192{b}")
        ax.scatter(xs, ys, s=18, color="#1b6ca8")
        if len(xs) <= 6:  # few pairs: name them
            for x, y, label in zip(xs, ys, labels, strict=True):
                ax.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points",
                            fontsize=7, color="#333333")
        rho = (corr.get(m) or {}).get("spearman")
        npairs = (corr.get(m) or {}).get("n_pairs", len(xs))
        sub = "" if rho is None else f"\n\u03c1 = {rho:+.2f} (n = {npairs})"
        ax.set_title(m + sub, fontsize=8.5)
        ax.locator_params(axis="x", nbins=4)  # fewer tick labels: faster, and less crowded
        ax.grid(color="#eeeeee")
        ax.axhline(100 * CHANCE, color="#888888", linestyle=":", linewidth=1)
    for ax in axes[len(measures):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r * cols].set_ylabel("splice accuracy (%)", fontsize=8)
    return fig


# --- 6. alignment ---------------------------------------------------------------------------


def _curve_pairs(curves: list[dict]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for c in curves:
        p = (c["encoder"], c["decoder"])
        if p not in pairs:
            pairs.append(p)
    return pairs


def _all_position(curves: list[dict], results: dict) -> float:
    """Where "all anchors" sits on the log axis: the number of anchors that "all" stood for
    (``n_anchors``, else the training set size), kept right of every other count."""
    numeric = [c["anchors"] for c in curves if c["anchors"] != "all"]
    top = max(numeric, default=1)
    counts = [c["n_anchors"] for c in curves if c["anchors"] == "all" and c.get("n_anchors")]
    n_all = max(counts) if counts else (results.get("config") or {}).get("train_samples")
    n_all = n_all or 60000
    return float(n_all if n_all > top else 2 * top)


def _draw_curves(ax, curves: list[dict], pair: tuple[str, str], methods: list[str],
                 all_x: float, results: dict, small: bool) -> None:
    enc, dec = pair
    for k, method in enumerate(methods):
        pts = [c for c in curves if (c["encoder"], c["decoder"]) == pair and c["method"] == method
               and c.get("accuracy_mean") is not None]
        if not pts:
            continue
        pts.sort(key=lambda c: all_x if c["anchors"] == "all" else c["anchors"])
        x = np.array([all_x if c["anchors"] == "all" else c["anchors"] for c in pts], float)
        y = 100 * np.array([c["accuracy_mean"] for c in pts])
        s = 100 * np.array([c.get("accuracy_std") or 0.0 for c in pts])
        colour = CLASS_COLOURS[k % 10]
        # Markers and dashes tell apart methods whose curves lie on top of each other.
        ax.plot(x, y, marker=METHOD_MARKERS[k % len(METHOD_MARKERS)],
                linestyle=("-", "--", "-.", ":")[(k // 2) % 4], markersize=2.5 if small else 5,
                markerfacecolor="none" if k % 2 else colour, color=colour, label=method)
        ax.fill_between(x, y - s, y + s, color=colour, alpha=0.18, linewidth=0)
    own = decoder_accuracy(results, dec)
    if own is not None:
        ax.axhline(100 * own, color="black", linestyle="--", linewidth=1,
                   label=f"decoder {dec}'s own")
    ax.axhline(100 * CHANCE, color="#888888", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_ylim(0, 102)
    ax.grid(color="#eeeeee")
    ticks = [t for t in (1, 10, 100, 1000, 10000) if t < all_x]
    ax.set_xticks([*ticks, all_x], [*map(str, ticks), "all"])
    ax.minorticks_off()
    ax.set_title(f"{enc}'s encoder \u2192 {dec}'s decoder", fontsize=8 if small else 10)


def _curve_methods(curves: list[dict]) -> list[str]:
    out: list[str] = []
    for c in curves:
        if c["method"] not in out:
            out.append(c["method"])
    return out


def fig_alignment_curve(inp: ReportInput) -> Figure | None:
    curves = (inp.results.get("alignment") or {}).get("curves") or []
    pairs = [p for p in _curve_pairs(curves) if p[0] != p[1]] or _curve_pairs(curves)
    if not pairs:
        return None
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    _draw_curves(ax, curves, pairs[0], _curve_methods(curves),
                 _all_position(curves, inp.results), inp.results, small=False)
    ax.set_xlabel("anchors (log scale)")
    ax.set_ylabel("spliced test accuracy (%)")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside right upper")
    return fig


def fig_alignment_grid(inp: ReportInput) -> Figure | None:
    curves = (inp.results.get("alignment") or {}).get("curves") or []
    pairs = [p for p in _curve_pairs(curves) if p[0] != p[1]]
    if len(pairs) < 2:
        return None
    rows, cols = _grid(len(pairs), 4)
    fig = _figure(2.6 * cols + 1.6, 2.2 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    methods, all_x = _curve_methods(curves), _all_position(curves, inp.results)
    for ax, pair in zip(axes, pairs, strict=False):
        _draw_curves(ax, curves, pair, methods, all_x, inp.results, small=True)
        ax.tick_params(labelsize=7)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True)
            if not lab.startswith("decoder ")]
    keep.append((Line2D([], [], color="black", ls="--", lw=1), "decoder's own"))
    fig.legend(*zip(*keep, strict=True), loc="outside right upper", fontsize=8)
    return fig


def fig_repaired(inp: ReportInput) -> Figure | None:
    rep = (inp.results.get("alignment") or {}).get("repaired") or {}
    methods = rep.get("methods") or {}
    if not methods:
        return None
    names = rep.get("models") or []
    panels = []
    splice = inp.results.get("splice")
    if splice and splice["models"] == names:
        panels.append(("raw splice", splice["accuracy"]))
    panels += list(methods.items())
    rows, cols = _grid(len(panels), 4)
    side = max(2.6, 0.45 * len(names) + 1.6)
    fig = _figure(side * cols + 0.8, side * rows * 0.9 + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    im = None
    for ax, (title, m) in zip(axes, panels, strict=False):
        im = heatmap(ax, m, names, names, vmin=0, vmax=100, scale=100,
                     fmt="{:.1f}" if len(names) <= 4 else "{:.0f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("decoder", fontsize=8)
        ax.set_ylabel("encoder", fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes[: len(panels)].tolist(), shrink=0.7, label="accuracy (%)")
    return fig


CONTROL_KINDS = (("real", "real encoder", "#1b6ca8"),
                 ("untrained_encoder", "untrained encoder", "#edae49"),
                 ("noise_inputs", "noise inputs", "#d1495b"))


def fig_controls(inp: ReportInput) -> Figure | None:
    ctl = (inp.results.get("alignment") or {}).get("controls") or {}
    kinds = [k for k in CONTROL_KINDS if ctl.get(k[0])]
    if not kinds:
        return None
    methods: list[str] = []
    for key, _, _ in kinds:
        methods += [m for m in ctl[key] if m not in methods]
    flagged = set(ctl.get("flagged") or [])
    fig = _figure(max(5.5, 0.9 * len(methods) + 2.5), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(kinds)
    x = np.arange(len(methods))
    for k, (key, label, colour) in enumerate(kinds):
        ys = [ctl[key].get(m) for m in methods]
        ys = [np.nan if v is None else 100 * v for v in ys]
        xs = x + (k - (len(kinds) - 1) / 2) * width
        ax.bar(xs, ys, width=width * 0.95, color=colour, label=label)
        for xi, yi in zip(xs, ys, strict=True):
            if np.isnan(yi):
                ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90,
                        color="#555555")
    _percent_axis(ax, 105)
    tilt = len(methods) > 5
    ax.set_xticks(x, [f"{m}\n(flagged)" if m in flagged else m for m in methods],
                  rotation=25 if tilt else 0, ha="right" if tilt else "center")
    for tick, m in zip(ax.get_xticklabels(), methods, strict=True):
        if m in flagged:
            tick.set_color("#b00020")
            tick.set_fontweight("bold")
    ax.set_ylabel("spliced test accuracy (%)")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside right upper")
    return fig


# --- all of them ----------------------------------------------------------------------------


FIGURES = (
    FigureSpec("accuracy", "headline", "Models and raw splices",
               "Test accuracy of every model with its own encoder (blue) and of every raw "
               "splice, encoder \u2192 decoder (red); the dotted line is chance.",
               fig_accuracy_bars),
    FigureSpec("splice_heatmap", "headline", "Splice matrix",
               "Test accuracy (%) of encoder (row) spliced onto decoder (column); the diagonal "
               "is each model on its own.", fig_splice_heatmap),
    FigureSpec("training_curves", "training", "Training curves",
               "Per epoch: training loss, test loss and test accuracy, one line per model.",
               fig_training_curves),
    FigureSpec("latent_dimensions", "latent", "Per-dimension statistics",
               "Mean (solid) and standard deviation (hatched) of each latent dimension over the "
               "test set; dead units (zero on every test image) are shaded.",
               fig_latent_dimensions),
    FigureSpec("pca_spectrum", "latent", "Variance spectrum",
               "Share of the latent variance along each principal component, and cumulated.",
               fig_pca_spectrum),
    FigureSpec("centroid_distances", "latent", "Class centroid distances",
               "Euclidean distance between the mean latents of every two classes.",
               fig_centroid_distances),
    FigureSpec("latent_views", "views", "Latent spaces in 2-D",
               f"Test latents coloured by class: PCA of all test points ({VIEW_POINTS} drawn) "
               f"and t-SNE of a seeded subsample of {TSNE_POINTS} (seed {TSNE_SEED}); the same "
               f"points and colours for every model.", fig_latent_views),
    FigureSpec("similarity_heatmaps", "similarity", "Similarity between models",
               "Each measure between every two models' test latents.",
               fig_similarity_heatmaps),
    FigureSpec("similarity_vs_splice", "similarity", "Similarity against splice accuracy",
               "Each off-diagonal pair: the measure (x) against the raw splice accuracy of "
               "that encoder on that decoder (y), with Spearman's \u03c1.",
               fig_similarity_vs_splice),
    FigureSpec("alignment_curve", "alignment", "Repair against anchors",
               "Spliced accuracy after each alignment method, by number of anchors (mean "
               "\u00b1 std over repeats); the dashed line is the decoder with its own encoder, "
               "the dotted line chance.", fig_alignment_curve),
    FigureSpec("alignment_grid", "alignment", "Repair against anchors, every pair",
               "The same curves for every encoder \u2192 decoder pair.", fig_alignment_grid),
    FigureSpec("repaired", "alignment", "Repaired splice matrices",
               "Spliced accuracy (%) of every encoder (row) on every decoder (column) after "
               "each method, beside the raw splice.", fig_repaired),
    FigureSpec("controls", "alignment", "Controls",
               "Spliced accuracy after alignment fitted on the real encoder, on an untrained "
               "encoder and on noise inputs; flagged methods are marked in red.", fig_controls),
)


def render(inp: ReportInput, out_dir: Path, specs=FIGURES) -> list[RenderedFigure]:
    """Draw every figure the run has data for; write PNG and SVG under `out_dir`.

    The t-SNE embeddings run in a worker thread while the other figures are drawn (much of
    scikit-learn's t-SNE releases the GIL), and the 2-D views are drawn last, from its result.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsne") as pool:
        wanted = any(s.draw is fig_latent_views for s in specs) and _view_models(inp)
        embeddings = pool.submit(tsne_embeddings, inp) if wanted else None
        order = sorted(range(len(specs)), key=lambda k: specs[k].draw is fig_latent_views)
        drawn = {k: _render_one(specs[k], inp, out_dir, embeddings) for k in order}
    return [drawn[k] for k in range(len(specs)) if drawn[k] is not None]


def _render_one(spec: FigureSpec, inp: ReportInput, out_dir: Path,
                embeddings: Future | None) -> RenderedFigure | None:
    t0 = time.perf_counter()
    fig = spec.draw(inp, embeddings) if spec.draw is fig_latent_views else spec.draw(inp)
    if fig is None:
        log.debug("figure %s left out: the run lacks its data", spec.name)
        return None
    png = _encode(fig, "png")
    fig.set_layout_engine("none")  # keep the layout the PNG computed; it is the slow part
    svg = _encode(fig, "svg")
    png_path = atomic_write_bytes(out_dir / f"{spec.name}.png", png)
    svg_path = atomic_write_bytes(out_dir / f"{spec.name}.svg", svg)
    log.debug("figure %s: %.2f s", spec.name, time.perf_counter() - t0)
    return RenderedFigure(spec.name, spec.section, spec.title, spec.caption, png, png_path,
                          svg_path)


def _encode(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes, without dates (the same figure gives the same bytes)."""
    buf = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    # SVG text stays text (searchable, and faster to write than glyph outlines).
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "stitchlab"}):
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    return buf.getvalue()
