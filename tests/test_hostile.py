"""Bad flags, bad config files, unwritable or full disks, diverging training.

Each must end in one line on stderr that names the problem, exit code 2, no traceback, and an
existing run directory left byte for byte as it was. The commands run in this process (through
`stitchlab.cli.main`), which is what lets the disk failures be simulated by patching.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from conftest import TINY_ARGS, snapshot
from stitchlab import pipeline
from stitchlab.checkpoints import save_checkpoint
from stitchlab.errors import OutputError
from stitchlab.fileio import atomic_write_json
from stitchlab.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["--seeds", "1", "2", "--epochs", "2", "--train-samples", "3000", "--test-samples",
         "1000", "--device", "cpu"]


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


BAD_FLAGS = [
    (["--epochs", "0"], "key 'epochs' must be positive, got 0"),
    (["--epochs", "-3"], "key 'epochs' must be positive, got -3"),
    (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["--batch-size", "0"], "key 'batch_size' must be positive, got 0"),
    (["--batch-size", "-256"], "key 'batch_size' must be positive, got -256"),
    (["--latent-dims", "0"], "key 'latent_dims' holds 0; widths must lie in 1..4096"),
    (["--latent-dim", "5000"], "key 'latent_dims' holds 5000"),
    (["--latent-dims", "8", "8"], "key 'latent_dims' repeats a width"),
    (["--latent-dim", "8", "--latent-dims", "8"], "give one or the other"),
    (["--seeds", "5", "5"], "key 'seeds' repeats 5; each seed may appear once"),
    (["--seeds", "-1"], "key 'seeds' holds -1"),
    (["--lr", "nan"], "key 'lr' must be a positive finite number, got nan"),
    (["--lr", "-1"], "key 'lr' must be a positive finite number, got -1.0"),
    (["--train-samples", "-1"], "key 'train_samples' must be zero or positive, got -1"),
    (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["--out", ""], "--out is empty; name a run directory"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_is_refused_and_the_run_is_untouched(flags, message, run_copy,
                                                      main_in_process):
    before = snapshot(run_copy)
    code, _, err = main_in_process("run", *TINY_ARGS, "--out", run_copy, *flags)
    assert_one_line_error(code, err, message)
    assert snapshot(run_copy) == before


BAD_TOML = [
    ("epoch = 3\n", "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("epochs = '3'\n", "key 'epochs' must be an integer, got '3'"),
    ("epochs = 0\n", "key 'epochs' must be positive, got 0"),
    ("seeds = [1, 1]\n", "key 'seeds' repeats 1"),
    ("seeds = 42\n", "key 'seeds' must be a list, got 42"),
    ("latent_dims = [-4]\n", "key 'latent_dims' holds -4"),
    ("batch_size = 2.5\n", "key 'batch_size' must be an integer, got 2.5"),
    ("[align]\nrepeats = 0\n", "key 'align.repeats' must be positive, got 0"),
    ("epochs = = 3\n", "not valid TOML"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("# " + "x" * (1 << 20) + "\n", "larger than 1048576 bytes"),
    (b"epochs = 3 \xff\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD_TOML, ids=[m for _, m in BAD_TOML])
def test_bad_config_file_is_refused_and_the_run_is_untouched(text, message, run_copy, tmp_path,
                                                             main_in_process):
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run_copy)
    code, _, err = main_in_process("run", "--config", path, "--out", run_copy)
    assert_one_line_error(code, err, message)
    assert str(path) in err
    assert snapshot(run_copy) == before


def test_config_that_is_not_a_file(tmp_path, main_in_process):
    code, _, err = main_in_process("run", "--config", tmp_path, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "is a directory, expected a TOML file")
    code, _, err = main_in_process("run", "--config", "/dev/zero", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "is not a regular file")
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_or_lies_under_one(tmp_path, main_in_process):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, _, err = main_in_process("run", *SMALL, "--out", target)
    assert_one_line_error(code, err, "is a file, not a directory; choose another --out")
    code, _, err = main_in_process("run", *SMALL, "--out", target / "run")
    assert_one_line_error(code, err, "cannot create the run directory (Not a directory)")
    assert target.read_text() == "keep me"


def test_more_samples_than_the_data_set_holds(tmp_path, main_in_process):
    code, _, err = main_in_process("run", *SMALL, "--train-samples", "70000", "--out",
                                   tmp_path / "r")
    assert_one_line_error(code, err, "'train_samples' is 70000 but mnist has only 60000 images")
    assert not (tmp_path / "r" / "config.toml").exists()


# --- unwritable and full disks --------------------------------------------------------------


def make_read_only(monkeypatch, root: Path) -> None:
    """Make the calls that create or change files under `root` fail as on a read-only mount.

    The tests run as root, for whom permission bits mean nothing (chmod cannot make a folder
    read-only), and mounting a read-only file system needs privileges a test should not use, so
    the os functions are patched to raise EROFS, which is what the kernel answers there.
    """
    root_text = str(root.resolve())

    def inside(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root_text)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "unlink", "replace", "rename")}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def open_(path, flags, *args, **kwargs):
        if inside(path) and flags & writing:
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
            refuse(path)
        return real["mkdir"](path, *args, **kwargs)

    def changing(name):
        def call(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real[name](path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    for name in ("unlink", "replace", "rename"):
        monkeypatch.setattr(os, name, changing(name))


def test_read_only_run_directory(run_copy, tmp_path, monkeypatch, main_in_process):
    before = snapshot(run_copy)
    make_read_only(monkeypatch, tmp_path)
    code, _, err = main_in_process("run", *TINY_ARGS, "--out", run_copy)
    assert_one_line_error(code, err, f"{run_copy / '.lock'}: cannot create the lock file "
                                     f"(Read-only file system); make the run directory writable")
    code, _, err = main_in_process("run", *SMALL, "--out", tmp_path / "new")
    assert_one_line_error(code, err, "cannot create the run directory (Read-only file system)")
    monkeypatch.undo()
    assert snapshot(run_copy) == before


def _disk_full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_stops_the_run_and_keeps_what_was_there(run_copy, monkeypatch,
                                                          main_in_process):
    before = snapshot(run_copy)
    log_before = before.pop("log.txt")
    monkeypatch.setattr(os, "fsync", _disk_full)  # where a full disk shows once data is flushed
    code, _, err = main_in_process("run", *TINY_ARGS, "--out", run_copy)
    assert_one_line_error(code, err, f"{run_copy / 'config.toml'}: cannot write (No space left "
                                     f"on device); free some space and run the same command")
    monkeypatch.undo()
    after = snapshot(run_copy)
    assert after.pop("log.txt").startswith(log_before)  # the log only grew
    assert after == before


@pytest.mark.parametrize("writer", ["checkpoint", "results"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(writer, tmp_path, monkeypatch):
    path = tmp_path / ("m.safetensors" if writer == "checkpoint" else "results.json")
    write = {
        "checkpoint": lambda: save_checkpoint(path, build_model(1, 8), {"seed": 1}),
        "results": lambda: atomic_write_json(path, {"schema": "x"}),
    }[writer]
    write()
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write()
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


# --- non-finite training --------------------------------------------------------------------


def test_diverging_training_stops_and_writes_no_nan(tmp_path, main_in_process):
    run_dir = tmp_path / "r"
    code, _, err = main_in_process("run", *SMALL, "--lr", "1e6", "--out", run_dir)
    assert_one_line_error(code, err, "model A, B diverged in epoch 1 (training loss is not "
                                     "finite); lower --lr (now 1000000.0) and run again")
    assert list((run_dir / "models").iterdir()) == []
    assert not (run_dir / "results.json").exists()
    for text in snapshot(run_dir).values():
        assert b"NaN" not in text and b"Infinity" not in text


def test_non_finite_weights_after_training_are_not_saved(tmp_path, monkeypatch,
                                                         main_in_process):
    real = pipeline.train_models

    def last_step_went_nan(*args, **kwargs):
        trained = real(*args, **kwargs)
        with torch.no_grad():
            trained[1].model.decoder.net[6].bias[0] = float("nan")
        return trained

    monkeypatch.setattr(pipeline, "train_models", last_step_went_nan)
    run_dir = tmp_path / "r"
    code, _, err = main_in_process("run", *SMALL, "--epochs", "1", "-q", "--out", run_dir)
    assert_one_line_error(code, err, "model B ended training with non-finite weights or test "
                                     "loss (the others are saved); lower --lr")
    assert [p.name for p in (run_dir / "models").iterdir()] == ["A.safetensors"]
    assert not (run_dir / "results.json").exists()


def test_diverging_retrain_keeps_the_earlier_models(run_copy, main_in_process):
    before = snapshot(run_copy)
    code, _, err = main_in_process("run", *TINY_ARGS, "--force", "--lr", "1e6",
                                   "--train-samples", "3000", "--out", run_copy)
    assert_one_line_error(code, err, "diverged in epoch 1")
    after = snapshot(run_copy)
    for name in ("results.json", "models/A.safetensors", "models/B.safetensors"):
        assert after[name] == before[name], name
