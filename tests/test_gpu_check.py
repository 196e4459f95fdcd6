"""benchmarks/gpu_check.sh --dry-run: the GPU check's items, on CPU with tiny sizes, all PASS (CI).

The same script and Python module run on a CUDA machine; only the sizes, the device and the venv differ."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dist_helpers import child_env

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["device", "store", "loader", "train bf16 eager", "loss vs CPU fp32 (bf16)", "train fp32 eager",
            "loss vs CPU fp32 (fp32)", "1-rank job (gloo)", "2-rank job (gloo)", "train fp32 compiled (aot_eager)"]


@pytest.mark.timeout(900)
def test_gpu_check_dry_run_passes_every_item(tmp_path):
    env = child_env()
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=850, cwd=ROOT)
    lines = [line for line in r.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    launches = sorted(tmp_path.glob("job-*rank/launch-*.log"))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + "".join(
        f"\n--- {p.relative_to(tmp_path)} (end) ---\n{p.read_text()[-3000:]}" for p in launches)
    # Each launch's whole output is kept: a rank that dies by a signal at exit says why only there.
    assert [p.relative_to(tmp_path).as_posix() for p in launches] == [
        f"job-{w}rank/launch-{s}.log" for w in (1, 2) for s in ("resumed", "stopped")]
    assert all("finished: " in (tmp_path / f"job-{w}rank/launch-resumed.log").read_text() for w in (1, 2))
    items = {line.split(" ", 1)[1].split(":", 1)[0]: line.split(" ", 1)[0] for line in lines}
    for name in EXPECTED:
        assert items.get(name) == "PASS", (name, lines)
    assert not [line for line in lines if line.startswith("FAIL")]
    assert any(line.startswith("best samples/s: ") for line in r.stdout.splitlines())


@pytest.mark.parametrize("args", [["--out"], ["--out", "--dry-run"], ["--dry-run", "--out"], ["--out="]])
def test_gpu_check_out_without_a_directory_is_a_usage_error(args, tmp_path):
    """--out with no value (or the next option in its place) stops with one line and exit 2 before anything runs;
    exit 1 means an item failed, and --dry-run is never taken as the folder."""
    env = child_env()
    # Had it got past the arguments, echo would print the command instead of running the check or making a venv.
    env["PYTHON"] = env["GPU_PYTHON"] = "/bin/echo"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "gpu_check.sh: --out needs a directory", (r.stdout, r.stderr)
    assert r.stdout == "" and not list(tmp_path.iterdir())


@pytest.mark.timeout(300)
def test_gpu_step_runs_on_cpu(tmp_path):
    """benchmarks/gpu_step.py --cpu: the reference and an engine execution time their steps and report the ratio,
    so the script the next GPU run starts with has run somewhere."""
    import json
    import sys

    env = child_env()
    out = tmp_path / "gpu_step.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--cpu", "--batch", "4",
                        "--steps", "1", "--warmup", "1", "--only", "reference", "engine-bf16", "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = {x["mode"]: x for x in json.loads(out.read_text())["results"]}
    assert set(res) == {"reference", "engine-bf16"} and all(x["step_s"] > 0 for x in res.values()), res
    assert "FAILED" not in r.stdout and "x ref" in r.stdout.splitlines()[-1], r.stdout


def test_gpu_check_dry_run_without_torch_is_one_line(tmp_path):
    """An interpreter that cannot import torch (a checkout without .venv falls back to python3) stops with one FAIL
    line naming the missing module, not with gpu_check.py's traceback."""
    shim = tmp_path / "python"
    shim.write_text('#!/bin/sh\nexec python3 -S "$@"\n')  # -S: no site-packages, so no torch
    shim.chmod(0o755)
    env = child_env()
    env["PYTHON"] = str(shim)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "o")],
                       env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == [f"FAIL python: {shim} cannot run the check (ModuleNotFoundError: No module named "
                                     f"'torch'): make the project's .venv or set PYTHON"], r.stdout
    assert not (tmp_path / "o").exists()
