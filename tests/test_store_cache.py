"""The store's cache of derived arrays (data/store_cache.py) under concurrency: jobs take turns on a lock file so an
array is computed once, and per-object work is shared out over worker processes (core/processes.py) with the
same result as in one process. Real stores, real processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from conftest import build_synthetic_store
from dist_helpers import child_env, wait_for

from astrom3_hpc.core.processes import map_in_processes
from astrom3_hpc.data import lc_features, store_cache
from astrom3_hpc.data.store import Store

# A job that computes the store's "demo" array, recording each computation in a marker file and finishing it only
# once the test has created the file "go" beside the marker.
JOB = """
import logging, pathlib, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from astrom3_hpc.data import store_cache
from astrom3_hpc.data.store import Store

def compute():
    marker = pathlib.Path(sys.argv[2])
    with open(marker, "a") as f:
        f.write("computed\\n")
    deadline = time.monotonic() + 120
    while not (marker.parent / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return np.arange(6, dtype=np.float32).reshape(2, 3)

print(store_cache.cached(Store(sys.argv[1]), "demo", 1, (2, 3), compute, "demo array").sum())
"""


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """48 synthetic objects: no stored period search, so each object's features start with a Lomb-Scargle search."""
    return build_synthetic_store(tmp_path_factory.mktemp("cache") / "s.zarr", n=48)


def test_concurrent_jobs_compute_a_cached_array_once(small_store, tmp_path):
    marker = tmp_path / "computed.txt"
    cmd = [sys.executable, "-c", JOB, str(small_store), str(marker)]
    logs = [tmp_path / "first.err", tmp_path / "second.err"]
    with open(logs[0], "w") as err0, open(logs[1], "w") as err1:
        first = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=err0, text=True)
        wait_for(marker.exists, "computation by the first job", [first])  # it holds the lock now
        second = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=err1, text=True)
        waiting = "another process is computing the demo array; waiting for it"
        wait_for(lambda: waiting in logs[1].read_text(), "wait by the second job", [first, second])
        (tmp_path / "go").touch()
        outs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [log.read_text() for log in logs]
    assert [o.strip() for o in outs] == ["15.0", "15.0"]
    assert marker.read_text() == "computed\n"  # the second job read the first one's array
    cache = small_store / store_cache.CACHE_DIR
    assert sorted(p.name for p in cache.iterdir()) == [".demo.lock", store_cache.cache_path(
        Store(small_store), "demo", 1).name]


def test_per_object_work_in_processes_equals_one_process(small_store, monkeypatch, caplog):
    s = Store(small_store)
    rows = np.arange(s.n_objects)
    features = partial(lc_features.store_features, period_source="ls")
    alone = store_cache.per_object(s, rows, features, 1, "features")
    monkeypatch.setattr(store_cache, "PARALLEL_AFTER_S", 0.0)  # 48 objects would not pay for the workers
    with caplog.at_level(logging.INFO, logger="astrom3"):
        shared = store_cache.per_object(s, rows, features, 2, "features")
    assert "features of 32 more objects in 2 processes" in caplog.text
    assert shared.dtype == np.float32 and np.isfinite(shared).all()
    np.testing.assert_array_equal(shared, alone)
    np.testing.assert_allclose(alone[20:24], lc_features.store_features(s, rows[20:24]), rtol=1e-6)


def test_a_failure_in_a_worker_is_the_callers_error():
    with pytest.raises(ValueError, match="invalid literal for int"):
        map_in_processes(int, [("1",), ("one",), ("3",)], 2)
    done = []
    assert map_in_processes(int, [("1",), ("2",)], 2, done.append) == [1, 2] and sorted(done) == [0, 1]


def test_store_cache_benchmark_compares_one_process_with_several(small_store, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import store_cache as bench  # benchmarks/store_cache.py

    assert bench.main([str(small_store), "--rows", "20", "--workers", "2", "--only", "folds"]) == 0
    out = capsys.readouterr().out
    assert "store " in out and "20 objects, period search computed here, 2 workers" in out
    assert "folds " in out and " 2 processes " in out and "identical: True" in out


def _signalled(signum: int) -> int:
    """Sends this worker the signal a batch system sends every process of a job step, then answers."""
    os.kill(os.getpid(), signum)
    time.sleep(0.2)
    return os.getpid()


def test_workers_outlive_the_signals_the_job_itself_answers():
    """SLURM sends --signal=USR1@90 and preemption's SIGTERM to every process of the step: the job's own process
    checkpoints and exits 75 to be requeued, which a worker killed by the signal (a broken pool) would turn into a
    failed task."""
    from astrom3_hpc.core.signals import JOB_SIGNALS

    pids = map_in_processes(_signalled, [(int(s),) for s in JOB_SIGNALS], 2)
    assert len(pids) == 3 and os.getpid() not in pids


def _slow_piece(folder: str, i: int) -> int:
    (Path(folder) / f"started-{i}").touch()
    time.sleep(60)
    (Path(folder) / f"finished-{i}").touch()
    return i


def test_a_job_signal_during_a_map_stops_it_and_ends_the_running_pieces(tmp_path):
    """A job with nothing to checkpoint (`astrom3 baseline`) stops at once on a job signal: the pieces its workers
    are computing are lost either way, so they are ended, not waited for (a minute here)."""
    import signal
    import threading

    from astrom3_hpc.core.signals import Stopped, stopped_by

    def signal_once_two_pieces_run():
        while len(list(tmp_path.glob("started-*"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)  # to this process: Python runs the handler in the main thread

    before = signal.getsignal(signal.SIGUSR1)
    threading.Thread(target=signal_once_two_pieces_run, daemon=True).start()
    with pytest.raises(Stopped) as stop, stopped_by("the map"):
        map_in_processes(_slow_piece, [(str(tmp_path), i) for i in range(4)], 2)
    assert stop.value.exit_code == 75 and "the map stopped by SIGUSR1" in str(stop.value)
    # The two running pieces were ended (waiting would have let them finish), the other two never started.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started-0", "started-1"]
    assert signal.getsignal(signal.SIGUSR1) == before
