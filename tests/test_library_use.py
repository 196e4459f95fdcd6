"""The package used as a library (a notebook, a script): importing it leaves the calling process as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_importing_the_training_modules_leaves_the_environment_alone():
    """Catches train/engine.py putting the venv first on PATH and setting DeepSpeed's variables at import, which
    `embed`, `predict` and every notebook that loads a model pay, with every later subprocess inheriting it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_EXTENSIONS_DIR", "DS_ACCELERATOR")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    code = ("import json, os; keys = ('PATH', 'TORCH_EXTENSIONS_DIR', 'DS_ACCELERATOR'); "
            "before = {k: os.environ.get(k) for k in keys}; "
            "import astrom3_hpc.train.finetune, astrom3_hpc.train.pretrain, astrom3_hpc.science.embed; "
            "from astrom3_hpc.train.engine import deepspeed_environment; "
            "after = {k: os.environ.get(k) for k in keys}; deepspeed_environment(); "
            "print(json.dumps([before, after, {k: os.environ.get(k) for k in keys}]))")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    before, after, engine = json.loads(r.stdout.splitlines()[-1])
    assert after == before
    # What building an engine sets (its PATH: tests/test_device.py): the venv's op cache, the CPU accelerator.
    assert engine["TORCH_EXTENSIONS_DIR"] and engine["DS_ACCELERATOR"] == "cpu"


def test_verbose_is_the_suites_debug_lines_on_rank_0_only():
    """Catches -v setting the root logger to DEBUG on every rank: a hundred lines of zarr's and numcodecs'
    internals per epoch from each rank, none saying which."""
    code = ("import logging; from astrom3_hpc.train.command import run_command; "
            "run_command('x', lambda: print(logging.getLogger().level, "
            "logging.getLogger('astrom3').getEffectiveLevel()), verbose=True)")
    seen = {}
    for rank in ("0", "1"):
        env = {**os.environ, "RANK": rank, "WORLD_SIZE": "2", "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": "29999"}
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        seen[rank] = r.stdout.split()
    assert seen == {"0": ["20", "10"], "1": ["20", "20"]}
