"""Interrupted runs resume to the numbers of an uninterrupted one; same config, same numbers.

The run has two widths (8 and 16), so training is two batched passes of two models each, and
"between models" means between those two passes. Stopping between two checkpoints of one pass
would leave the other model to be retrained alone; `test_a_model_trains_the_same_alone_or_in_a
_batch` shows that gives the same numbers too.
"""

from __future__ import annotations

import ast
import copy
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import cli_env, snapshot
from stitchlab import cli, pipeline, training
from stitchlab.checkpoints import load_checkpoint, read_checkpoint
from stitchlab.results import read_results

ARGS = ["--config", str(Path(__file__).parent / "small_align.toml"), "--seeds", "1", "2",
        "--latent-dims", "8", "16", "--epochs", "3", "--train-samples", "3000",
        "--test-samples", "500", "--device", "cpu"]
MODELS = ("A8", "B8", "A16", "B16")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numbers(results: dict) -> dict:
    """A results dict without what may change from run to run: timings and the environment."""
    r = copy.deepcopy(results)
    r.pop("environment")
    r.pop("timings")
    for m in r["models"]:
        m.pop("train_seconds")
        for row in m["history"]:
            row.pop("seconds")
    return r


def assert_same_weights(dir_a: Path, dir_b: Path) -> None:
    for name in MODELS:
        a, _ = read_checkpoint(dir_a / "models" / f"{name}.safetensors")
        b, _ = read_checkpoint(dir_b / "models" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def config():
    return cli.config_from_args(cli.build_parser().parse_args(["run", *ARGS]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_torch_thread) -> Path:
    """An uninterrupted run of ARGS, in this process."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    pipeline.run(config(), run_dir)
    return run_dir


# --- determinism ----------------------------------------------------------------------------


def test_same_config_gives_identical_numbers_and_force_retrains(tmp_path):
    # Bit for bit across processes and with four models is shown by the interruption test
    # below; this one is small, and checks that --force really trains again.
    config = cli.config_from_args(cli.build_parser().parse_args([
        "run", "--seeds", "5", "--latent-dim", "8", "--epochs", "1", "--train-samples", "2000",
        "--test-samples", "500", "--device", "cpu"]))
    run_dir = tmp_path / "run"
    first = numbers(pipeline.run(config, run_dir).results)
    weights = read_checkpoint(run_dir / "models" / "A.safetensors")[0]
    mtime = (run_dir / "models" / "A.safetensors").stat().st_mtime_ns
    again = numbers(pipeline.run(config, run_dir, force=True).results)
    assert (run_dir / "models" / "A.safetensors").stat().st_mtime_ns != mtime
    assert again == first
    retrained = read_checkpoint(run_dir / "models" / "A.safetensors")[0]
    assert all(torch.equal(weights[k], retrained[k]) for k in weights)


def test_a_model_trains_the_same_alone_or_in_a_batch():
    torch.manual_seed(0)
    x, y = torch.randn(600, 784), torch.randint(0, 10, (600,))
    s = training.TrainSettings(epochs=2, batch_size=128)
    pair = training.train_models([1, 2], ["A", "B"], x, y, x[:200], y[:200], 8, s)
    alone = training.train_models([2], ["B"], x, y, x[:200], y[:200], 8, s)
    a, b = pair[1].model.state_dict(), alone[0].model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in pair[1].history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in alone[0].history]


# --- interruptions --------------------------------------------------------------------------

# Run before `stitchlab.cli.main` where the process must stop at an exact point: it kills itself
# with SIGKILL once results.json's temporary holds the splice table, before the rename.
DIE_WHILE_WRITING_SPLICE_RESULTS = """
import json, os, signal
_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("results.json") and "splice" in json.load(open(src)):
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
"""


class Run:
    """`stitchlab run ARGS --out RUN` in a subprocess whose stderr lines are watched."""

    def __init__(self, run_dir: Path, *extra: str, prelude: str | None = None):
        if prelude is None:
            cmd = [sys.executable, "-m", "stitchlab"]
        else:
            cmd = [sys.executable, "-c",
                   prelude + "\nimport sys\nfrom stitchlab.cli import main\nsys.exit(main())"]
        self.proc = subprocess.Popen([*cmd, "run", *ARGS, *extra, "--out", str(run_dir)],
                                     env=cli_env(threads=1), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited before {text!r}: {self.stderr}"
                continue
            self.stderr.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout} s: {self.stderr}")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        time.sleep(0.1)  # let the reader thread drain the pipe
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        self.proc.stdout.close()
        return code, "".join(self.stderr)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited before {path} appeared"
        assert time.monotonic() < end, f"no {path} within {timeout} s"
        time.sleep(0.01)


def temporaries(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.tmp"))


def checkpoints(run_dir: Path) -> list[str]:
    """Names of the checkpoints present, each loaded to prove it is whole."""
    names = sorted(p.stem for p in (run_dir / "models").glob("*.safetensors"))
    for n in names:
        load_checkpoint(run_dir / "models" / f"{n}.safetensors")
    return names


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_numbers(reference, tmp_path):
    run_dir = tmp_path / "run"

    # 1. SIGKILL while the first pass (A8, B8) trains: nothing kept, nothing partial.
    run = Run(run_dir)
    run.wait_for_line("epoch   1/3")
    run.proc.kill()
    code, err = run.finish()
    assert code == -signal.SIGKILL, err
    assert checkpoints(run_dir) == [] and not (run_dir / "results.json").exists()
    assert (run_dir / ".lock").exists()  # left by the killed process, held by nobody

    # 2. SIGKILL once the first pass is saved, while the second trains.
    run = Run(run_dir)
    wait_for_file(run_dir / "models" / "B8.safetensors", run.proc)
    run.proc.kill()
    code, err = run.finish()
    assert code == -signal.SIGKILL, err
    assert "train   A8" in err  # the stale lock did not stop it
    assert checkpoints(run_dir) == ["A8", "B8"]

    # 3. SIGKILL in the splice stage, between writing results.json's temporary and renaming it.
    run = Run(run_dir, prelude=DIE_WHILE_WRITING_SPLICE_RESULTS)
    code, err = run.finish()
    assert code == -signal.SIGKILL, err
    assert "train   A8" not in err and "train  A16" in err  # A8, B8 were reused, not retrained
    assert checkpoints(run_dir) == sorted(MODELS)
    assert "splice" not in read_results(run_dir / "results.json")  # the train stage's version
    assert [p.name.startswith(".results.json.") for p in temporaries(run_dir)] == [True]

    # 4. Resume to the end: the numbers and weights of the run that was never interrupted.
    run = Run(run_dir)
    code, err = run.finish()
    assert code == 0, err
    assert "train " not in err
    assert numbers(read_results(run_dir / "results.json")) == numbers(
        read_results(reference / "results.json"))
    assert_same_weights(run_dir, reference)
    assert temporaries(run_dir) == [] and not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_exit_143_and_keeps_what_finished(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = snapshot(run_dir)
    run = Run(run_dir, "--force")
    run.wait_for_line("epoch   1/3")
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 143, err
    last = err.strip().splitlines()[-1]
    assert last == (f"stitchlab run: interrupted by SIGTERM; finished models are kept in "
                    f"{run_dir}; run the same command again to resume")
    after = snapshot(run_dir)
    assert after.pop("log.txt").startswith(before.pop("log.txt"))
    assert after == before  # the retrain had finished nothing, so nothing changed
    assert temporaries(run_dir) == [] and not (run_dir / ".lock").exists()


def test_ctrl_c_in_a_later_stage_exits_130_and_keeps_what_finished(
        reference, tmp_path, monkeypatch, main_in_process):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "results.json").unlink()

    def interrupted(ctx):
        raise KeyboardInterrupt  # what Python's SIGINT handler raises

    monkeypatch.setattr(pipeline, "latent_stats", interrupted)
    code, _, err = main_in_process("run", *ARGS, "--out", run_dir)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        f"stitchlab run: interrupted by SIGINT; finished models are kept in {run_dir}; "
        f"run the same command again to resume")
    results = read_results(run_dir / "results.json")
    assert "splice" in results and "latent" not in results
    assert temporaries(run_dir) == [] and not (run_dir / ".lock").exists()


# Calls that write a file other than through stitchlab.fileio's atomic writers: method names
# that write whatever their receiver, and module functions that do (module -> names).
WRITING_METHODS = {"write_text", "write_bytes", "savefig"}
WRITING_FUNCTIONS = {"torch": {"save"}, "np": {"save", "savez", "savetxt"},
                     "json": {"dump"}, "pickle": {"dump"},
                     "shutil": {"copy", "copy2", "copyfile", "copytree", "move"}}
ALLOWED_DIRECT_WRITES = {
    "fileio.py": "the atomic writers themselves",
    "data.py": "download() writes its own temporary, checks its SHA-256, then renames it",
    "figures.py": "report figures savefig into an in-memory buffer, then atomic_write_bytes",
}


def _direct_writes(tree: ast.AST) -> list[int]:
    """Line numbers of calls in `tree` that write files directly."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        if name in WRITING_METHODS or name in WRITING_FUNCTIONS.get(owner, ()):
            lines.append(node.lineno)
        elif name in ("open", "fdopen"):
            modes = node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(isinstance(m, ast.Constant) and set(str(m.value)) & set("wax+")
                   for m in modes):
                lines.append(node.lineno)
    return lines


def test_every_output_is_written_atomically_through_fileio():
    src = Path(pipeline.__file__).parent
    for path in sorted(src.rglob("*.py")):
        if path.name in ALLOWED_DIRECT_WRITES:
            continue
        for number in _direct_writes(ast.parse(path.read_text())):
            raise AssertionError(
                f"{path.relative_to(src)}:{number} writes a file directly; use "
                f"stitchlab.fileio.atomic_write_* so an interruption cannot leave it half-written")


def test_differing_config_stops_before_writing_anything(reference, tmp_path, main_in_process):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = snapshot(run_dir)
    args = list(ARGS)
    args[args.index("--epochs") + 1] = "4"
    code, _, err = main_in_process("run", *args, "--lr", "0.002", "--out", run_dir)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "epochs: 3 -> 4, lr: 0.001 -> 0.002" in err
    assert "pass --force to retrain, or choose another --out" in err
    assert snapshot(run_dir) == before
