"""One writer per run directory: a held lock refuses others, a dead holder's lock is taken over.

That a SIGKILLed run's lock does not block the next run is also shown, on a real run, by
test_resume.py::test_interrupted_run_resumes_to_the_uninterrupted_numbers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from conftest import TINY_ARGS, run_cli, snapshot
from stitchlab.errors import RunDirInUse
from stitchlab.runlock import RunLock


@pytest.mark.slow
def test_a_second_process_is_refused_while_a_run_holds_the_lock(run_copy, main_in_process):
    with RunLock(run_copy):
        before = snapshot(run_copy)
        proc = run_cli("run", *TINY_ARGS, "--out", run_copy)  # another process
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert f"in use by another stitchlab process (pid {os.getpid()} on host" in lines[0]
        assert "wait for it to finish or stop it" in lines[0]
        # The stage commands that write into RUN take the same lock.
        for argv in (["train", *TINY_ARGS, "--out", run_copy], ["splice", run_copy],
                     ["analyze", run_copy], ["align", run_copy]):
            code, _, err = main_in_process(*argv)
            assert code == 2 and "in use by another stitchlab process" in err, err
        assert snapshot(run_copy) == before
    assert not (run_copy / ".lock").exists()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_the_lock_of_a_process_that_died_is_taken_over(tmp_path, caplog):
    stale = {"pid": _dead_pid(), "host": "crashed-host", "started": "2020-01-01T00:00:00"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    with caplog.at_level(logging.INFO, logger="stitchlab"), RunLock(tmp_path):
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] and info["started"]
    assert f"pid {stale['pid']} on host crashed-host" in caplog.text
    assert "no longer running" in caplog.text
    assert not (tmp_path / ".lock").exists()


def test_the_lock_is_released_on_every_way_out(tmp_path):
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), RunLock(tmp_path):
            with pytest.raises(RunDirInUse, match="in use by another stitchlab process"):
                RunLock(tmp_path).acquire()
            raise exc
        assert not (tmp_path / ".lock").exists()
        RunLock(tmp_path).acquire().release()  # free again
