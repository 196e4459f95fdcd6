"""The store's cache of derived arrays (data/store_cache.py) under concurrency: jobs take turns on a lock file so an
array is computed once, and per-object work is shared out over worker processes (core/processes.py) with the
same result as in one process. Real stores, real processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from conftest import build_synthetic_store
from dist_helpers import child_env

from astrom3_hpc.core.processes import map_in_processes
from astrom3_hpc.data import lc_features, store_cache
from astrom3_hpc.data.store import Store

# A job that computes the store's "demo" array slowly, recording each computation in a marker file.
JOB = """
import logging, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from astrom3_hpc.data import store_cache
from astrom3_hpc.data.store import Store

def compute():
    with open(sys.argv[2], "a") as f:
        f.write("computed\\n")
    time.sleep(3)
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
    first = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():  # the first job holds the lock and is computing
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    assert out.strip() == second.stdout.strip() == "15.0"
    assert marker.read_text() == "computed\n"  # the second job read the first one's array
    assert "another process is computing the demo array; waiting for it" in second.stderr
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
