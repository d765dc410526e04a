"""Figures and a self-contained report of a run: RUN/figures/*.png|svg, report.html, report.md.

``stitchlab report RUN`` (and the last stage of ``stitchlab run``) calls `write_report`. On the
default run (2 models, 10,000 test images, every section, 13 figures) it took 8.4 to 11.4 s on
a shared 2-core machine under a load of 2.9 to 3.4, of which 2 s are the two t-SNE embeddings
(run beside the other figures); the whole ``time stitchlab report runs/default`` took 11 to
17 s, Python start-up and the imports of torch, matplotlib and scikit-learn included. Sections
for stages the run lacks (similarity, alignment, ...) are left out, not shown empty.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write_text
from . import document, figures, html, markdown
from .reading import ReportInput, gather, pct

log = logging.getLogger(__name__)

__all__ = ["Report", "ReportInput", "gather", "pct", "write_report"]


@dataclass
class Report:
    """What `write_report` wrote."""

    html: Path  # RUN/report.html
    markdown: Path  # RUN/report.md
    figures: list[Path]  # RUN/figures/NAME.png, in report order (each has a .svg beside it)
    sections: list[str]  # ids of the sections shown
    seconds: float


def write_report(source, out_dir: str | os.PathLike | None = None,
                 with_latents: bool = True) -> Report:
    """Draw the figures of a run and write its HTML and Markdown reports.

    Parameters
    ----------
    source : pipeline.Context or path-like
        A live context (its test latents are used as they are) or a run directory (its
        results.json is read, and its latents are recomputed from the checkpoints and data).
    out_dir : path-like, optional
        Where to write; the run directory by default.
    with_latents : bool, default True
        False leaves out the figures that need the latents (the 2-D views), skipping the
        reopening of a run directory.

    Returns
    -------
    Report
        The paths written, the sections shown and the seconds taken.

    Raises
    ------
    StitchlabError
        When `source` is not a run directory or its results.json is missing or invalid.

    Examples
    --------
    >>> report = write_report("runs/default")  # doctest: +SKIP
    >>> report.html.name
    'report.html'
    """
    t0 = time.perf_counter()

    # 1. Inputs: results, and latents where there are any.
    inp = gather(source, with_latents=with_latents)
    out = Path(out_dir) if out_dir is not None else inp.run_dir

    # 2. Figures, then the document that places them.
    rendered = figures.render(inp, out / "figures")
    sections = document.build(inp, rendered)
    title = f"stitchlab report: {inp.run_dir.name or inp.run_dir}"
    meta = _meta(inp)

    # 3. The two formats.
    html_path = atomic_write_text(out / "report.html", html.render(sections, title, meta))
    md_path = atomic_write_text(out / "report.md", markdown.render(sections, title, meta))
    seconds = time.perf_counter() - t0
    log.info("report: %d figures, %s and %s in %.1f s", len(rendered), html_path, md_path,
             seconds)
    return Report(html_path, md_path, [f.png_path for f in rendered], [s.id for s in sections],
                  seconds)


def _meta(inp: ReportInput) -> str:
    env = inp.results.get("environment") or {}
    cfg = inp.results.get("config") or {}
    parts = [f"data set {cfg.get('dataset', '?')}",
             f"{len(inp.names)} model{'s' if len(inp.names) != 1 else ''}"]
    if cfg.get("epochs"):
        parts.append(f"{cfg['epochs']} epochs")
    if env.get("stitchlab"):
        parts.append(f"stitchlab {env['stitchlab']}")
    if env.get("git_commit"):
        parts.append(f"commit {str(env['git_commit'])[:10]}")
    if env.get("device"):
        parts.append(f"device {env['device']}")
    return " \u00b7 ".join(parts)
