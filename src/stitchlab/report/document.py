"""The report's content, independent of its format: sections of paragraphs, tables and figures.

`build` decides what the report says; `html` and `markdown` only decide how it looks, so both
files carry the same numbers. A section whose stage the run lacks is not built at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .figures import RenderedFigure
from .reading import ReportInput, anchors_label, num, off_diagonal, pct, reading


@dataclass
class Cell:
    text: str
    attrs: dict[str, str] = field(default_factory=dict)  # HTML attributes (class, data-*)
    header: bool = False  # a row header (<th>)


@dataclass
class Table:
    id: str
    caption: str
    head: list[str]
    rows: list[list[Cell]]


@dataclass
class Section:
    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[RenderedFigure] = field(default_factory=list)


def _row(*cells) -> list[Cell]:
    return [c if isinstance(c, Cell) else Cell(str(c)) for c in cells]


def build(inp: ReportInput, figures: list[RenderedFigure]) -> list[Section]:
    """The report's sections in reading order, each holding its figures."""
    r = inp.results
    sections = [_summary(inp)]
    if r.get("models"):
        sections.append(Section("training", "Training"))
    if r.get("latent"):
        sections.append(_latent(inp))
    if any(f.section == "views" for f in figures):
        sections.append(Section("views", "Latent spaces in 2-D", [
            "PCA keeps the two directions of largest variance, so distances along them are "
            "true to scale; t-SNE keeps neighbourhoods, not distances. Axes differ from model "
            "to model: a rotation or reflection between two pictures is exactly what a raw "
            "splice cannot undo."]))
    if (r.get("similarity") or {}).get("values"):
        sections.append(_similarity(inp))
    if r.get("alignment"):
        sections.append(_alignment(inp))
    sections.append(_setup(inp))

    # Each figure goes to its section; a figure without a built section is shown in none.
    by_id = {s.id: s for s in sections}
    for f in figures:
        target = by_id.get("summary" if f.section == "headline" else f.section)
        if target is not None:
            target.figures.append(f)
    return [s for s in sections if s.paragraphs or s.tables or s.figures]


# --- sections -------------------------------------------------------------------------------


def _summary(inp: ReportInput) -> Section:
    r = inp.results
    sec = Section("summary", "Summary", [" ".join(reading(r))] if reading(r) else [])
    sec.paragraphs += inp.notes
    models = r.get("models") or []
    if models:
        rows = [[Cell(m["name"], {"class": "model-name"}, header=True), Cell(str(m["seed"])),
                 Cell(str(m["latent_dim"])),
                 Cell(pct(m["test_accuracy"]), {"class": "accuracy", "data-model": m["name"]}),
                 Cell(num(m.get("test_loss"), 4))]
                for m in models]
        sec.tables.append(Table("headline-models", "Each model on its own (test set)",
                                ["model", "seed", "latent width", "test accuracy", "test loss"],
                                rows))
    splice = r.get("splice")
    if splice:
        names = splice["models"]
        rows = []
        for i, enc in enumerate(names):
            cells = [Cell(enc, {"class": "encoder-name"}, header=True)]
            for j, dec in enumerate(names):
                cls = "splice-accuracy own" if i == j else "splice-accuracy"
                cells.append(Cell(pct(splice["accuracy"][i][j]),
                                  {"class": cls, "data-encoder": enc, "data-decoder": dec}))
            rows.append(cells)
        sec.tables.append(Table("headline-splice",
                                "Raw splice accuracy: encoder (row) with decoder (column)",
                                ["encoder \\ decoder", *names], rows))
    return sec


# (key in latent.models[name], column title, decimals; -1 for a percentage)
LATENT_COLUMNS = (
    ("n_dims", "dims", 0), ("dead_units", "dead units", 0),
    ("participation_ratio", "participation ratio", 2),
    ("intrinsic_dimension_twonn", "TwoNN dimension", 2),
    ("knn_accuracy", "k-NN accuracy", -1), ("silhouette", "silhouette", 3),
    ("davies_bouldin", "Davies-Bouldin", 3), ("inter_intra_ratio", "inter/intra", 2),
    ("centroid_distance_mean", "mean centroid distance", 2),
)


def _latent(inp: ReportInput) -> Section:
    per = (inp.results.get("latent") or {}).get("models") or {}
    names = [n for n in inp.names if n in per]
    sec = Section("latent", "Latent statistics")
    cols = [c for c in LATENT_COLUMNS if any(per[n].get(c[0]) is not None for n in names)]
    if names and cols:
        rows = []
        for n in names:
            cells = [Cell(n, header=True)]
            for key, _, decimals in cols:
                v = per[n].get(key)
                text = pct(v, 1) if decimals < 0 else num(v, decimals)
                cells.append(Cell(text))
            rows.append(cells)
        sec.tables.append(Table("latent-summary", "Test latents of each model",
                                ["model", *[c[1] for c in cols]], rows))
    pairs = (inp.results.get("latent") or {}).get("pairs") or []
    if pairs:
        rows = [_row(Cell(f"{p['a']}, {p['b']}", header=True), num(p.get("mean_cosine")),
                     num(p.get("mean_l2"))) for p in pairs]
        sec.tables.append(Table("latent-pairs", "Mean latent vectors of two models",
                                ["pair", "cosine", "L2 distance"], rows))
    return sec


def _similarity(inp: ReportInput) -> Section:
    sim = inp.results["similarity"]
    corr = sim.get("splice_correlation") or {}
    rows = []
    for m in sim.get("measures", list(sim["values"])):
        if m not in sim["values"]:
            continue
        vals = [v for _, _, v in off_diagonal(sim["values"][m])]
        c = corr.get(m) or {}
        rho = c.get("spearman")
        rows.append(_row(Cell(m, header=True), num(float(np.mean(vals))) if vals else "n/a",
                         "n/a" if rho is None else f"{rho:+.2f}", str(c.get("n_pairs", "n/a"))))
    return Section("similarity", "Similarity of the latent spaces", [
        "Every measure is computed on the test latents of two models (the same images). "
        "Spearman's \u03c1 ranks the measure against raw splice accuracy over encoder \u2260 "
        "decoder pairs; a distance that explains the failure has a negative \u03c1."],
        [Table("similarity-table", "Similarity measures", ["measure", "mean between models",
                                                             "Spearman vs splice", "pairs"],
               rows)])


def _alignment(inp: ReportInput) -> Section:
    al = inp.results["alignment"]
    sec = Section("alignment", "Repair by alignment")
    rep = al.get("repaired") or {}
    if rep.get("methods"):
        rows = []
        for m, mat in rep["methods"].items():
            vals = [v for _, _, v in off_diagonal(mat)]
            rows.append(_row(Cell(m, header=True),
                             pct(float(np.mean(vals))) if vals else "n/a",
                             pct(min(vals)) if vals else "n/a",
                             pct(max(vals)) if vals else "n/a"))
        sec.tables.append(Table(
            "repaired-table",
            f"Repaired splices on {anchors_label(rep.get('anchors'))} anchors "
            f"(encoder \u2260 decoder)", ["method", "mean", "min", "max"], rows))
    ctl = al.get("controls") or {}
    kinds = [k for k in ("real", "untrained_encoder", "noise_inputs") if ctl.get(k)]
    if kinds:
        flagged = set(ctl.get("flagged") or [])
        methods: list[str] = []
        for k in kinds:
            methods += [m for m in ctl[k] if m not in methods]
        rows = [_row(Cell(m, header=True), *[pct(ctl[k].get(m)) for k in kinds],
                     Cell("yes" if m in flagged else "", {"class": "flagged"} if m in flagged
                          else {}))
                for m in methods]
        where = ""
        if ctl.get("encoder") and ctl.get("decoder"):
            where = f" ({ctl['encoder']}'s encoder \u2192 {ctl['decoder']}'s decoder"
            where += f", {ctl['anchors']} anchors)" if ctl.get("anchors") else ")"
        sec.tables.append(Table("controls-table", f"Controls{where}", ["method", *[
            k.replace("_", " ") for k in kinds], "flagged"], rows))
    return sec


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            out.append((prefix + k, ", ".join(map(str, v))))
        else:
            out.append((prefix + k, "" if v is None else str(v)))
    return out


def _setup(inp: ReportInput) -> Section:
    r = inp.results
    sec = Section("setup", "Configuration and environment")
    for key, tid, caption in (("config", "config-table", "Configuration"),
                              ("environment", "environment-table", "Environment")):
        if r.get(key):
            sec.tables.append(Table(tid, caption, ["key", "value"],
                                    [_row(Cell(k, header=True), v) for k, v in _flatten(r[key])]))
    if r.get("timings"):
        rows = [_row(Cell(k, header=True), f"{v:.2f}") for k, v in r["timings"].items()
                if isinstance(v, int | float)]
        sec.tables.append(Table("timings-table", "Time per stage", ["stage", "seconds"], rows))
    return sec
