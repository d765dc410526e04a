"""The report: every figure a real, non-blank PNG; one offline HTML page; Markdown links.

Runs on a tiny real run (`report_fixture.real_run`, written by `pipeline.run` itself), on the
same run with every optional section added, and on synthetic results of 3 models.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import run_cli
from report_fixture import full_run, real_run, synthetic_results
from stitchlab.errors import StitchlabError
from stitchlab.report import pct, write_report
from stitchlab.report.reading import reading

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {
    "accuracy", "splice_heatmap", "training_curves", "latent_dimensions", "pca_spectrum",
    "centroid_distances", "latent_views", "similarity_heatmaps", "similarity_vs_splice",
    "alignment_curve", "alignment_grid", "repaired", "controls",
}


@pytest.fixture(scope="session")
def report_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="session")
def real(report_root) -> Path:
    return real_run(report_root)


@pytest.fixture(scope="session")
def full(report_root) -> Path:
    run_dir = full_run(report_root)
    write_report(run_dir)
    return run_dir


def check_png(path: Path) -> None:
    """A PNG by signature, decodable, of sensible size, and not a blank canvas."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    img = imread(path)  # (h, w, 3 or 4), floats in [0, 1]
    h, w = img.shape[:2]
    assert 200 <= w <= 4000 and 150 <= h <= 4000, (path, img.shape)
    rgb = img[..., :3]
    assert rgb.std() > 0.05, (path, rgb.std())
    q = np.round(rgb * 255).astype(np.uint32)  # (h, w, 3)
    colours = np.unique(q[..., 0] << 16 | q[..., 1] << 8 | q[..., 2])
    assert colours.size > 20, (path, colours.size)


def stems(run_dir: Path, ext: str) -> set[str]:
    return {p.stem for p in (run_dir / "figures").glob(f"*.{ext}")}


@pytest.mark.slow
def test_pipeline_run_writes_the_report_of_every_stage(real):
    assert stems(real, "png") == ALL_FIGURES
    assert stems(real, "svg") == ALL_FIGURES
    for p in (real / "figures").glob("*.png"):
        check_png(p)
    results = json.loads((real / "results.json").read_text())
    assert results["timings"]["report"] > 0
    page = (real / "report.html").read_text()
    for section in ("similarity", "alignment", "views"):
        assert f'<section id="{section}">' in page, section
    acc = results["alignment"]["repaired"]["methods"]["procrustes"][0][1]
    assert f"{100 * acc:.2f}%" in page  # the repaired table: min or max of the two pairs


@pytest.mark.slow
def test_full_run_draws_every_figure(full):
    assert stems(full, "png") == ALL_FIGURES
    for p in (full / "figures").glob("*.png"):
        check_png(p)
    for p in (full / "figures").glob("*.svg"):
        assert p.read_text().lstrip().startswith("<?xml") and "</svg>" in p.read_text()[-200:]


@pytest.mark.slow
def test_html_is_self_contained_and_embeds_every_figure(full):
    page = (full / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page)
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(srcs) == len(ALL_FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    for section in ("summary", "training", "latent", "views", "similarity", "alignment",
                    "setup"):
        assert f'<section id="{section}">' in page, section


@pytest.mark.slow
def test_headline_table_holds_the_run_numbers(full):
    results = json.loads((full / "results.json").read_text())
    page = (full / "report.html").read_text()
    for m in results["models"]:
        cell = f'<td class="accuracy" data-model="{m["name"]}">{100 * m["test_accuracy"]:.2f}%'
        assert cell in page
    sp = results["splice"]
    for i, enc in enumerate(sp["models"]):
        for j, dec in enumerate(sp["models"]):
            want = f'data-encoder="{enc}" data-decoder="{dec}">{100 * sp["accuracy"][i][j]:.2f}%'
            assert want in page


@pytest.mark.slow
def test_markdown_links_existing_pngs(full):
    md = (full / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(link).stem for link in links} == ALL_FIGURES
    for link in links:
        assert (full / link).is_file(), link
    assert "| encoder \\ decoder |" in md
    acc = json.loads((full / "results.json").read_text())["models"][0]["test_accuracy"]
    assert f"{100 * acc:.2f}%" in md


def test_missing_sections_are_left_out_and_missing_latents_said_so(tmp_path):
    results = synthetic_results(3)
    del results["similarity"], results["alignment"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    rep = write_report(tmp_path)  # no config.toml, no checkpoints: the run cannot be reopened
    assert rep.sections == ["summary", "training", "latent", "setup"]
    assert stems(tmp_path, "png") == {"accuracy", "splice_heatmap", "training_curves",
                                      "latent_dimensions", "pca_spectrum", "centroid_distances"}
    page = (tmp_path / "report.html").read_text()
    for gone in ("similarity", "alignment", "views", "controls"):
        assert f'id="{gone}' not in page, gone
    assert "2-D latent views are left out" in page
    md = (tmp_path / "report.md").read_text()
    assert "## Similarity" not in md and "## Repair" not in md


def test_three_models_without_latents_draw_every_other_figure(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(synthetic_results(3)))
    rep = write_report(tmp_path, with_latents=False)
    assert {p.stem for p in rep.figures} == ALL_FIGURES - {"latent_views"}
    for p in rep.figures:
        check_png(p)
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="splice-accuracy') == 9
    assert 'class="flagged"' in page
    assert "Controls (A&#x27;s encoder \u2192 B&#x27;s decoder, 100 anchors)" in page


def test_reading_paragraph_names_the_numbers():
    results = synthetic_results(2)
    text = " ".join(reading(results))
    acc = results["splice"]["accuracy"]
    assert f"A's encoder with B's decoder scores {pct(acc[0][1], 1)}" in text
    assert "after procrustes on 100 anchors" in text
    assert "The controls flag ridge" in text
    assert "12.0% to 62.0% when fitted on an untrained encoder" in text
    three = " ".join(reading(synthetic_results(4)))
    assert "The 12 raw splices score between" in three


def test_pct_formats_fractions_and_missing_values():
    assert pct(0.90819) == "90.82%"
    assert pct(0.003, 1) == "0.3%"
    assert pct(None) == "n/a" and pct(float("nan")) == "n/a"


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StitchlabError, match="no such run directory"):
        write_report(tmp_path / "absent")
    with pytest.raises(StitchlabError, match="no results file"):
        write_report(tmp_path)


@pytest.mark.slow
def test_cli_report_rewrites_the_report(real, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(real, run_dir, ignore=shutil.ignore_patterns("figures", "report.*"))
    results = json.loads((run_dir / "results.json").read_text())
    del results["similarity"], results["alignment"]  # fewer figures: a faster test
    (run_dir / "results.json").write_text(json.dumps(results))
    proc = run_cli("report", str(run_dir), "--no-views")
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
    assert stems(run_dir, "png") == {"accuracy", "splice_heatmap", "training_curves",
                                     "latent_dimensions", "pca_spectrum", "centroid_distances"}


def test_cli_report_on_a_missing_directory_exits_2(tmp_path, main_in_process):
    code, _, err = main_in_process("report", tmp_path / "nope")
    assert code == 2
    assert "no such run directory" in err and "Traceback" not in err
