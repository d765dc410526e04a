"""Run directories for the report tests: one tiny real run, and the same with every section.

The real run is 2 models, 3,000 training and 500 test images of MNIST, 1 epoch and a small
alignment sweep, every stage of `pipeline.run` (a few seconds). `add_synthetic_sections`
replaces its analysis and alignment sections with synthetic but well-formed ones that hold
what a real tiny run may not (a flagged method, missing values, skipped anchor counts). Both
are built once per test session, whichever module asks first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from stitchlab import config as cfg
from stitchlab import pipeline

MEASURES = ("linear_cka", "debiased_cka", "procrustes_distance", "rsa", "mutual_knn")
METHODS = ("procrustes", "affine", "ridge", "permutation")
ANCHORS = (1, 2, 5, 10, 20, 50, 100, 500, "all")

_built: dict[str, Path] = {}


def tiny_report_config() -> cfg.RunConfig:
    """2 models, 1 epoch on 3,000 images, a small alignment sweep: every stage in seconds."""
    return cfg.from_dict(dict(seeds=[42, 123], epochs=1, train_samples=3000, test_samples=500,
                              device="cpu",
                              align={"methods": ["procrustes", "affine"], "anchors": [5, 50, "all"],
                                     "repeats": 2, "repaired_anchors": 50}))


def real_run(root: Path) -> Path:
    """The tiny real run (its report written by `pipeline.run`'s last stage)."""
    if "real" not in _built:
        run_dir = root / "real"
        pipeline.run(tiny_report_config(), run_dir)
        _built["real"] = run_dir
    return _built["real"]


def full_run(root: Path) -> Path:
    """A copy of the real run whose results.json has every optional section."""
    if "full" not in _built:
        src = real_run(root)
        run_dir = root / "full"
        shutil.copytree(src, run_dir, ignore=shutil.ignore_patterns("report.*", "figures"))
        path = run_dir / "results.json"
        results = json.loads(path.read_text())
        add_synthetic_sections(results)
        path.write_text(json.dumps(results, indent=1))
        _built["full"] = run_dir
    return _built["full"]


def add_synthetic_sections(results: dict, seed: int = 0) -> dict:
    """Add latent descriptions, similarity and alignment sections to `results` in place."""
    rng = np.random.default_rng(seed)
    names = [m["name"] for m in results["models"]]
    n = len(names)
    own = {m["name"]: m["test_accuracy"] for m in results["models"]}

    # latent.models[name]: the keys of stitchlab.latent.describe.
    for stats in results["latent"]["models"].values():
        d = stats["n_dims"]
        lam = np.sort(rng.exponential(size=d))[::-1]
        cent = rng.uniform(2, 9, size=(10, 10))
        cent = (cent + cent.T) / 2
        np.fill_diagonal(cent, 0)
        stats.update({
            "variance": (np.asarray(stats["std"]) ** 2).tolist(),
            "pca_explained_variance_ratio": (lam / lam.sum()).tolist(),
            "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
            "silhouette": 0.21, "davies_bouldin": 1.7, "inter_intra_ratio": 1.3,
            "intrinsic_dimension_twonn": 9.4, "knn_accuracy": 0.93, "knn_k": 10,
            "centroid_distance_matrix": cent.tolist(),
        })

    # similarity: symmetric N x N per measure, ones (zeros for the distance) on the diagonal.
    values = {}
    for m in MEASURES:
        a = rng.uniform(0.3, 0.9, size=(n, n))
        a = (a + a.T) / 2
        np.fill_diagonal(a, 0.0 if m == "procrustes_distance" else 1.0)
        values[m] = a.tolist()
    results["similarity"] = {
        "measures": list(MEASURES), "models": names, "values": values,
        "splice_correlation": {m: {"spearman": float(rng.uniform(-1, 1)) if n > 2 else None,
                                   "n_pairs": n * (n - 1)} for m in MEASURES},
    }

    # alignment: saturating curves, repaired matrices, controls with one flagged method.
    curves = []
    for i, enc in enumerate(names):
        for j, dec in enumerate(names):
            if i == j:
                continue
            for k, method in enumerate(METHODS):
                for anchors in ANCHORS:
                    x = 60000 if anchors == "all" else anchors
                    acc = own[dec] * (1 - np.exp(-x / (5 + 10 * k))) + 0.1 * np.exp(-x / 5)
                    skipped = method == "permutation" and anchors == 1  # too few to fit
                    curves.append({"method": method, "encoder": enc, "decoder": dec,
                                   "anchors": anchors, "n_anchors": x,
                                   "accuracy_mean": None if skipped else float(acc),
                                   "accuracy_std": None if skipped else 0.02, "repeats": 5})
    repaired = {}
    for k, method in enumerate(METHODS):
        mat = [[own[dec] - (0 if i == j else 0.02 * (k + 1)) for j, dec in enumerate(names)]
               for i in range(n)]
        repaired[method] = mat
    results["alignment"] = {
        "curves": curves,
        "repaired": {"anchors": 100, "models": names, "methods": repaired},
        "controls": {
            "encoder": names[0], "decoder": names[1], "anchors": 100, "chance": 0.1,
            "real": {m: 0.95 - 0.02 * k for k, m in enumerate(METHODS)},
            "untrained_encoder": {m: None if m == "permutation" else
                                  0.12 + (0.5 if m == "ridge" else 0) for m in METHODS},
            "noise_inputs": {m: 0.1 for m in METHODS},
            "flagged": ["ridge"],
        },
    }
    return results


def synthetic_results(n_models: int = 3, epochs: int = 3, width: int = 8) -> dict:
    """A whole results dict for `n_models` models, no run behind it (no latents, no models)."""
    rng = np.random.default_rng(1)
    names = [chr(65 + i) for i in range(n_models)]
    models = []
    for k, name in enumerate(names):
        hist = [{"epoch": e + 1, "train_loss": 1 / (e + 1), "test_loss": 1.1 / (e + 1),
                 "test_accuracy": 0.9 + 0.02 * e / epochs, "seconds": 1.0}
                for e in range(epochs)]
        models.append({"name": name, "seed": k, "latent_dim": width, "dataset": "mnist",
                       "test_accuracy": hist[-1]["test_accuracy"] - 0.001 * k,
                       "test_loss": hist[-1]["test_loss"], "train_seconds": 3.0,
                       "history": hist, "checkpoint": f"models/{name}.safetensors"})
    acc = rng.uniform(0.01, 0.2, size=(n_models, n_models))
    for k, m in enumerate(models):
        acc[k, k] = m["test_accuracy"]
    latent = {}
    for k, name in enumerate(names):
        mean = rng.uniform(0, 3, size=width)
        dead = [k % width]
        mean[dead] = 0
        latent[name] = {"n_samples": 100, "n_dims": width, "mean": mean.tolist(),
                        "std": (mean / 2).tolist(), "min": [0.0] * width,
                        "max": (3 * mean).tolist(), "dead_units": 1, "dead_unit_indices": dead,
                        "centroid_distance_mean": 4.0}
    results = {
        "schema": "stitchlab.results/1",
        "config": tiny_report_config().to_dict(),
        "environment": {"python": "3.11", "torch": "2.13.0", "numpy": "2", "stitchlab": "0.1.0",
                        "device": "cpu", "torch_threads": 2, "cpu_count": 2,
                        "git_commit": None},
        "models": models,
        "splice": {"models": names, "accuracy": acc.tolist(), "loss": acc.tolist()},
        "latent": {"models": latent, "pairs": []},
        "timings": {"train": 9.0, "splice": 0.5},
    }
    return add_synthetic_sections(results)
