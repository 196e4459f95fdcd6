"""`astrom3 demo` run again into the same --out: a resume of the same demo, or refused before anything is written.

The stages (pretraining, fine-tuning, collect) are replaced by stand-ins: what is tested is which stages a rerun
starts and what it writes to the sweep's manifest, which the demo decides before starting any of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import astrom3_hpc.app.demo as demo
from astrom3_hpc.cli import main

TEST_YAML = Path(__file__).resolve().parents[1] / "configs" / "test.yaml"


def _fake_pretraining(cmd: list[str]) -> None:
    """What a finished pretraining leaves that the demo reads: metrics.json, and the identity.json the job writes
    for its config, store and world size."""
    from astrom3_hpc.core.config import store_overrides
    from astrom3_hpc.data.store import Store
    from astrom3_hpc.train.fingerprint import run_identity, write_identity
    from astrom3_hpc.train.jobs import pretrain_config

    flags = dict(zip(cmd[5::2], cmd[6::2]))  # torchrun --standalone --nproc_per_node N jobs/pretrain.py --k v ...
    cfg = pretrain_config(flags["--config"], store_overrides(flags["--store"]) + [f"data.seed={flags['--seed']}"])
    run_dir = Path(flags["--run-dir"])
    run_dir.mkdir(parents=True)
    write_identity(run_dir, run_identity(cfg, Store(flags["--store"]), int(cmd[3]), kind="pretrain"))
    (run_dir / "metrics.json").write_text("{}")


@pytest.fixture
def stages(monkeypatch) -> list[str]:
    """The stages the demo started, by name; each pretraining leaves a finished run."""
    started: list[str] = []

    def run(cmd: list[str], what: str) -> None:
        started.append(what)
        if what.startswith("pretrain seed"):
            _fake_pretraining(cmd)

    monkeypatch.setattr(demo, "_run", run)
    monkeypatch.setattr(demo, "_fine_tune_side_by_side", lambda sw, astrom3, at_once: started.append("fine-tune"))
    monkeypatch.setattr(demo, "_print_margin", lambda sw: None)
    monkeypatch.setattr("astrom3_hpc.results.collect.collect", lambda sweep_dir, stream: {})
    return started


def _error(capsys) -> str:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("astrom3 demo: error: ")][0]


def test_demo_rerun_resumes_the_same_demo_and_refuses_other_settings_before_writing(tiny_store, tmp_path, stages,
                                                                                    capsys):
    """Catches a rerun with another config rewriting the manifest (it then named the new config while the
    pretraining it skipped as finished was the old config's; a new fine-tune config made every finished task read
    as missing) and a finished pretraining counted as done whatever settings it was trained with."""
    pt_a, pt_b, ft_b = (tmp_path / f"{n}.yaml" for n in ("pt_a", "pt_b", "ft_b"))
    pt_a.write_text(f"base: {TEST_YAML}\n")
    pt_b.write_text(f"base: {TEST_YAML}\noptim: {{lr: 0.003}}\n")
    ft_b.write_text(f"base: {TEST_YAML}\ntrain: {{epochs: 1}}\n")
    out = tmp_path / "dm"
    manifest = out / "manifest.json"

    def run_demo(*extra: str, pretrain: Path = pt_a, finetune: Path = pt_a, seeds=("42",)) -> int:
        return main(["demo", "--out", str(out), "--store", str(tiny_store), "-n", "640", "--ranks", "1",
                     "--modes", "photo", "--subsets", "full", "--seeds", *seeds, "--pretrain-config", str(pretrain),
                     "--finetune-config", str(finetune), *extra])

    assert run_demo() == 0 and stages == ["pretrain seed 42", "fine-tune"]
    written = manifest.read_text()
    for flag, key, other in (("--pretrain-config", "pretrain", pt_b), ("--finetune-config", "finetune", ft_b)):
        assert run_demo(**{key: other}) == 6
        err = _error(capsys)
        assert f"{flag} '{pt_a}' in manifest.json, '{other}' now" in err and "another --out" in err
        assert manifest.read_text() == written and len(stages) == 2
    assert run_demo() == 0 and stages[2:] == ["fine-tune"]  # the same demo: pretraining stays done
    assert manifest.read_text() == written
    # The same manifest, but not the pretraining this demo would start: another world size, an edited config.
    assert run_demo("--ranks", "2") == 6
    assert "world_size (--ranks): 1 in the run dir, 2 now" in _error(capsys)
    pt_a.write_text(f"base: {TEST_YAML}\noptim: {{lr: 0.002}}\n")
    assert run_demo() == 6
    assert "holds a finished pretraining other than this demo's (optim.lr: 0.001 in the run dir, 0.002 now)" in \
        _error(capsys)
    pt_a.write_text(f"base: {TEST_YAML}\n")
    assert len(stages) == 3 and manifest.read_text() == written
    # More seeds extend the sweep (the finished seed stands); fewer would leave its runs out of the manifest.
    assert run_demo(seeds=("42", "0")) == 0 and stages[3:] == ["pretrain seed 0", "fine-tune"]
    assert sorted({t["seed"] for t in json.loads(manifest.read_text())["tasks"]}) == [0, 42]
    assert run_demo(seeds=("42",)) == 6
    assert "--seeds 42 0 in manifest.json, 42 now" in _error(capsys)
