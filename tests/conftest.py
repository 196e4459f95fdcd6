"""Shared fixtures. Real components only: stores are built by the real ingestion from the real generator."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from astrom3_hpc.core.interpreter import interpreter_first

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

# What a process building an engine sets (train/engine.py deepspeed_environment), for the whole session: tests
# that start DeepSpeed in this process without building an engine must find the same op cache and ninja.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
os.environ["PATH"] = interpreter_first(os.environ.get("PATH", ""))
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _find_realdata() -> Path:
    """The shared real survey samples: $ASTROM3_REALDATA, else shared/realdata beside the checkout (where CI puts
    it), else the developers' /work/shared/realdata."""
    candidates = [os.environ.get("ASTROM3_REALDATA"), ROOT.parent / "shared" / "realdata", "/work/shared/realdata"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return ROOT.parent / "shared" / "realdata"


REALDATA = _find_realdata()

SMALL_LAYOUT = dict(chunk_objects=16, table_chunk=64, lc_chunk=4096)


def build_synthetic_store(path: Path, n: int = 640, seed: int = 0, error_channel: str = "ivar", **kw) -> Path:
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource

    src = SyntheticSource(n, seed=seed, **kw)
    ingest(src, path, IngestOptions(on_error="skip", progress=False, layout_kw=SMALL_LAYOUT,
                                    error_channel=error_channel))
    return path


def built_before_checksums(store: Path) -> None:
    """Make a store look built before checksums: no table, and no record of one in its attributes (a table the
    attributes record and that is gone is damage, not an older store)."""
    import json

    (store / "checksums.json").unlink()
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"]["checksums"]
    (store / "zarr.json").write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """640 synthetic objects, small chunks so that several ranks and chunks are exercised."""
    return build_synthetic_store(tmp_path_factory.mktemp("store") / "tiny.zarr")


@pytest.fixture(scope="session")
def pretrained_2rank(tiny_store, tmp_path_factory) -> Path:
    """A finished 2-rank torchrun pretraining of the tiny store (configs/test.yaml), shared by every module that
    needs a pretraining run: tests copy it before writing into it (each such run costs about 15 s of CI)."""
    from test_train import run_job

    run = tmp_path_factory.mktemp("pre") / "run"
    run_job("pretrain", run, tiny_store, world=2, launcher="torchrun")
    return run


@pytest.fixture(scope="module")
def feat_store(tmp_path_factory) -> Path:
    """A light-curve store of three arbitrary classes with its split files, one per test module; tests that write
    its caches take a private copy (lightcurve_tables.private_copy)."""
    from lightcurve_tables import lc_store

    return lc_store(tmp_path_factory.mktemp("feat"))


# The real single-node and multi-host SLURM clusters (started on first use; under CI=true a cluster that
# cannot start fails the test instead of skipping it).
from slurm_cluster import slurm_cluster, slurm_multihost_cluster  # noqa: E402,F401
