"""A crash at any point of a config write leaves either the old or the new file, never a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exposure_guard import atomicio
from exposure_guard.atomicio import _SimulatedCrash, atomic_write
from exposure_guard.qts.config import ConfigDocument
from tests.support.paths import SRC

OLD = b"[UPnP_Global]\nEnable = TRUE\n" + b"# padding\n" * 2000
NEW = ConfigDocument(OLD).with_value("UPnP_Global", "Enable", "FALSE")


@pytest.mark.parametrize("step", ["tmp-created", "written", "fsynced", "renamed"])
def test_killed_between_every_step(tmp_path: Path, step: str):
    target = tmp_path / "upnpc.conf"
    target.write_bytes(OLD)
    with pytest.raises(_SimulatedCrash):
        atomic_write(target, NEW, _crash_after=step)
    content = target.read_bytes()
    assert content in (OLD, NEW)
    assert content == (NEW if step == "renamed" else OLD)
    # a later successful write cleans up and succeeds despite the leftover temp file
    atomic_write(target, NEW)
    assert target.read_bytes() == NEW


def test_failure_while_writing_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / "upnpc.conf"
    target.write_bytes(OLD)

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomicio.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, NEW)
    assert target.read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["upnpc.conf"]


WRITER = """
import sys
from exposure_guard.atomicio import atomic_write
old, new = open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'rb').read()
print('ready', flush=True)
i = 0
while True:
    atomic_write(sys.argv[1], new if i % 2 else old)
    i += 1
"""


def test_sigkill_at_random_points_never_leaves_a_torn_file(tmp_path: Path, rng):
    """A real process rewriting the file in a loop, killed with SIGKILL 25 times at random moments."""
    target = tmp_path / "upnpc.conf"
    old_file, new_file = tmp_path / "old", tmp_path / "new"
    old_file.write_bytes(OLD)
    new_file.write_bytes(NEW)
    target.write_bytes(OLD)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    for kill in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(old_file), str(new_file)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert target.read_bytes() in (OLD, NEW), "torn file after kill %d; %s" % (kill, rng.replay)
