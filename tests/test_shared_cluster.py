"""Shared clusters (issue 12): results readable by colleagues, interrupted builds leave nothing behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astrom3_hpc.core.atomic import atomic_dir, write_json
from astrom3_hpc.cli import main
from dist_helpers import child_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    def set_(mask):
        os.umask(mask)
    old = os.umask(0o022)
    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == file_mode
    with atomic_dir(tmp_path / "out") as d:
        (d / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == dir_mode


def test_replacing_a_directory_survives_a_leftover_trash_of_the_same_pid(tmp_path):
    """The old directory was moved to .NAME.old-<pid>; one left behind (an rmtree that NFS silly-renames kept from
    emptying) under a pid reused by a later job made the move fail, and the finished build was thrown away."""
    import os

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "v").write_text("old")
    stale = tmp_path / f".out.old-{os.getpid()}"
    stale.mkdir()
    (stale / ".nfs0001").write_text("held open elsewhere")
    with atomic_dir(tmp_path / "out", overwrite=True) as d:
        (d / "v").write_text("new")
    assert (tmp_path / "out" / "v").read_text() == "new" and (stale / ".nfs0001").exists()


def _ingest(out: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "astrom3_hpc.cli", "ingest", "synthetic", "-n", str(n),
                             "--out", str(out), "--chunk-objects", "16", "--on-error", "skip", "--no-progress"],
                            env=child_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, children inherit that, and
    # Python then installs no KeyboardInterrupt handler: the ingest would rightly run on through Ctrl-C. The test
    # is about what the ingest does on SIGINT, so the child gets the default however the suite was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_temp(out: Path, p: subprocess.Popen) -> Path:
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        tmps = list(out.parent.glob(f".{out.name}.tmp-*"))
        if tmps and any((tmps[0] / "spec" / "c").glob("*")):
            return tmps[0]
        time.sleep(0.05)
    raise AssertionError(f"no temporary store appeared (exit {p.poll()})")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_ingest_removes_its_temporary_store_and_ends_quietly(tmp_path, sig, code):
    out = tmp_path / "s.zarr"
    p = _ingest(out, 20000)
    _wait_for_temp(out, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_clean_store_temp_removes_leftovers_only(tmp_path, tiny_store, capsys):
    out = tmp_path / "s.zarr"
    (tmp_path / ".s.zarr.tmp-1234abcd" / "spec").mkdir(parents=True)
    (tmp_path / ".s.zarr.old-99").mkdir()
    (tmp_path / ".other.zarr.tmp-1").mkdir()
    out.mkdir()
    assert main(["clean-store-temp", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zarr.tmp-1", "s.zarr"]
    assert ".s.zarr.tmp-1234abcd" in capsys.readouterr().out
