"""Two identical runs are the same run: a 2-rank pretraining with the demo's settings, twice, bit for bit.

The demo (`astrom3 demo`) trains with `train.deterministic: false` under torchrun with 2 ranks on CPU; its
numbers can only be quoted if a rerun on the same machine reproduces them. (Across machines they need not:
see README, "Demo".)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train import run_job, steps, weights


def _epochs(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


@pytest.mark.timeout(600)
def test_paper_pretraining_trains_the_same_however_much_it_validates(tiny_store, tmp_path):
    """Catches pretraining's validation drawing the paper preset's attention-key samples from the training random
    stream: how many validation batches ran then changed the next epoch's training (and a validation's numbers
    depended on what ran before it). Seeded per batch, as fine-tuning's evaluation is, it moves nothing."""
    from test_train import final_module

    runs = {}
    for n in (1, 3):
        runs[n] = tmp_path / f"val{n}"
        run_job("pretrain", runs[n], tiny_store, sets=["model.preset=paper", "train.epochs=2",
                                                       "train.max_steps_per_epoch=2", "train.batch_size=16",
                                                       f"train.eval_max_batches={n}"])
    a, b = runs[1], runs[3]
    assert [s["loss"] for s in steps(a)] == [s["loss"] for s in steps(b)]
    wa, wb = final_module(a), final_module(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.timeout(900)
def test_two_identical_two_rank_runs_are_bitwise_equal(tiny_store, tmp_path):
    """Catches any source of run-to-run nondeterminism in the demo's pretraining path: unseeded ProbSparse
    sampling or dropout, a rank seed taken from the clock or the pid, batches whose order depends on timing,
    a thread count taken from the caller's environment, non-deterministic kernels."""
    sets = ["train.deterministic=false", "train.epochs=2", "train.max_steps_per_epoch=3"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run_job("pretrain", run, tiny_store, world=2, launcher="torchrun", sets=sets)
    a, b = runs
    assert [s["loss"] for s in steps(a)] == [s["loss"] for s in steps(b)]
    assert _epochs(a) == _epochs(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in runs)
    for m in (ma, mb):
        for k in [k for k in m if "seconds" in k or k.endswith("_s") or k in ("finished", "started")]:
            m.pop(k)
    assert ma == mb


def test_demo_runs_every_stage_with_one_thread_whatever_the_shell_says(monkeypatch):
    """Catches the demo inheriting the caller's OMP_NUM_THREADS: a different thread count gives different bits
    (2 threads instead of 1 changed 53 of 56 weight tensors after 12 pretraining steps of configs/demo.yaml)
    and, through ProbSparse's top-k query selection, different accuracies."""
    from astrom3_hpc.app.demo import _env

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    env = _env()
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"


def test_demo_stops_the_other_fine_tunes_when_one_fails(tmp_path):
    """A failing fine-tune raised at once and left its siblings running: they wrote on after the demo had exited,
    and a rerun started a second process on a run directory one of them still held."""
    import os
    import types

    import pytest

    from astrom3_hpc.app.demo import _fine_tune_side_by_side

    script = tmp_path / "fake-astrom3"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = fail ] && sleep 1 && exit 3\necho $$ > {tmp_path}/slow.pid\n"
                      "exec sleep 300\n")
    script.chmod(0o755)
    tasks = [types.SimpleNamespace(name="slow"), types.SimpleNamespace(name="fail")]
    sw = types.SimpleNamespace(missing=lambda: list(tasks), task_argv=lambda t: [t.name])
    with pytest.raises(RuntimeError, match="fine-tuning task fail failed"):
        _fine_tune_side_by_side(sw, str(script), at_once=2)
    pid = int((tmp_path / "slow.pid").read_text())
    with pytest.raises(ProcessLookupError):  # terminated and reaped before the error reached the caller
        os.kill(pid, 0)


def test_demo_errors_are_one_line_and_a_bad_config_builds_nothing(tiny_store, tmp_path, capsys):
    """Catches a missing demo config found only at the pretraining stage (after the store and the sweep manifest
    naming it were written) and a failed stage ending in the demo's own RuntimeError traceback (exit 1)."""
    from astrom3_hpc.cli import main

    out, store = tmp_path / "demo", tmp_path / "s.zarr"
    assert main(["demo", "--out", str(out), "--store", str(store), "--pretrain-config", "nonexist.yaml"]) == 2
    assert "nonexist.yaml does not exist" in capsys.readouterr().err
    assert not out.exists() and not store.exists()
    # A pretraining config the pretraining refuses (exit 2 in its process): one line naming the stage, exit 1.
    bad = tmp_path / "pre.yaml"
    bad.write_text(f"base: {Path(__file__).resolve().parents[1] / 'configs' / 'test.yaml'}\n"
                   "data: {subset: sub10}\n")
    assert main(["demo", "--out", str(out), "--store", str(tiny_store), "-n", "640", "--seeds", "42",
                 "--pretrain-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "astrom3 demo: error: pretrain seed 42 failed with exit code" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert Path(manifest["root"]).is_absolute() and manifest["pretrain_config"] == str(bad)


def test_demo_outside_a_checkout_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    """Catches the demo of an installed wheel (no configs/ or jobs/ beside the package) failing on a config path
    inside site-packages, and with configs given, on torchrun's "can't open file" after building the store."""
    from astrom3_hpc.cli import main

    monkeypatch.setenv("ASTROM3_ROOT", str(tmp_path / "not-a-checkout"))
    out, store = tmp_path / "demo", tmp_path / "s.zarr"
    assert main(["demo", "--out", str(out), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has no jobs/pretrain.py: set ASTROM3_ROOT to the astrom3-hpc checkout (astrom3 demo "
                        "starts its pretraining from jobs/ and reads its configs from configs/)") and "\n" not in err
    assert not out.exists() and not store.exists()


def test_demo_prints_one_margin_line_per_test_set(tmp_path, capsys):
    """At subset full the sub-X and the full test set are one: its margin line was printed twice."""
    import types

    from astrom3_hpc.app.demo import _print_margin

    tasks = []
    for subset in ("full", "sub10"):
        for init, acc in (("clip", 0.8), ("scratch", 0.7)):
            t = types.SimpleNamespace(mode="photo", subset=subset, init=init, name=f"{subset}-{init}")
            (tmp_path / t.name).mkdir()
            rep = {"accuracy": acc, "n": 40}
            (tmp_path / t.name / "metrics.json").write_text(json.dumps({"test": rep, "test_full": rep}))
            tasks.append(t)
    _print_margin(types.SimpleNamespace(tasks=tasks, run_dir=lambda t: tmp_path / t.name))
    lines = capsys.readouterr().out.splitlines()
    assert sorted(ln.split(" (")[0] for ln in lines) == ["photo full, full test set", "photo sub10, full test set",
                                                         "photo sub10, sub10 test set"]


def test_deterministic_kernels_are_switched_off_again_by_a_job_without_them():
    """Catches set_deterministic acting only to switch on: after one train.deterministic job, every later job in
    the process (a notebook, the debug executor's sweep) ran deterministic kernels it had not asked for."""
    from astrom3_hpc.train.engine import set_deterministic

    before = torch.are_deterministic_algorithms_enabled()
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
