"""Seed ensembles: `train.model_seed` changes the initial weights and nothing else; `astrom3 ensemble` averages
the members' class probabilities into a run directory `collect` reads. Real fine-tune jobs on a real store."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcurve_tables import lc_store
from test_train import run_job

from astrom3_hpc.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paired_bootstrap as pb  # noqa: E402

TINY = ("model.preset=periodic", "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.d_ff=32",
        "train.epochs=2", "train.batch_size=8")


def _probs(run, name="predictions.csv"):
    with open(run / name, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    store = lc_store(d / "tables")
    runs = []
    for seed in (1, 2):
        run = d / f"m{seed}"
        run_job("finetune", run, store, sets=(*TINY, f"train.model_seed={seed}"),
                extra=("--mode", "photo", "--init", "scratch"))
        runs.append(run)
    return store, runs


@pytest.mark.timeout(600)
def test_model_seed_changes_weights_and_the_ensemble_averages(members, tmp_path):
    store, (a, b) = members
    wa = torch.load(a / "best_model.pt", weights_only=False)["state_dict"]
    wb = torch.load(b / "best_model.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # other initial weights
    ra, pa = _probs(a)
    rb, pb = _probs(b)
    assert [r["row"] for r in ra] == [r["row"] for r in rb]  # same split: same test objects
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 0
    re_, pe = _probs(out)
    np.testing.assert_allclose(pe, (pa + pb) / 2, atol=2e-6)
    names = [k[2:] for k in re_[0] if k.startswith("p_")]
    assert [r["predicted_class"] for r in re_] == [names[i] for i in pe.argmax(1)]
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"] == "ensemble" and len(m["members"]) == 2 and m["test"]["n"] == len(re_)
    assert (out / "confusion_test.png").stat().st_size > 1000
    # The validation split is averaged too: the kept model's validation predictions, scored as training scored
    # them, so options (the ensemble among them) are chosen without looking at test.
    val_rows, va = _probs(a, "predictions_val.csv")
    _, vb = _probs(b, "predictions_val.csv")
    ma = json.loads((a / "metrics.json").read_text())
    assert ma["val"]["n"] == len(val_rows) > 0 and not {r["row"] for r in val_rows} & {r["row"] for r in ra}
    assert ma["val"]["macro_f1"] == pytest.approx(ma["best_val"]["macro_f1"])
    _, ve = _probs(out, "predictions_val.csv")
    np.testing.assert_allclose(ve, (va + vb) / 2, atol=2e-6)
    assert m["val"]["n"] == len(val_rows) and m["members"][0]["val_macro_f1"] == ma["val"]["macro_f1"]
    # collect lists it beside its members.
    from astrom3_hpc.cli.results import main as collect_main

    assert collect_main([str(tmp_path), "--out", str(tmp_path / "res")]) == 0


def test_ensemble_refuses_members_of_different_test_sets(members, tmp_path, capsys):
    _, (a, b) = members
    odd = tmp_path / "odd"
    odd.mkdir()
    text = (b / "predictions.csv").read_text().splitlines()
    (odd / "predictions.csv").write_text("\n".join(text[:-1]) + "\n")  # one object fewer
    assert main(["ensemble", str(a), str(odd), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "other objects or truth" in err and str(odd) in err and "Traceback" not in err
    assert not (tmp_path / "e" / "metrics.json").exists()
    assert main(["ensemble", str(a), "--out", str(tmp_path / "e1")]) == 2


def test_ensemble_refuses_one_network_twice_under_two_paths(members, tmp_path, capsys):
    """Catches `ensemble A A_copy` (a copied run dir, or a rerun of A's config.yaml) written as a two-member seed
    ensemble that scored exactly as A alone."""
    import shutil

    _, (a, b) = members
    copy = Path(shutil.copytree(a, tmp_path / "copy"))
    assert main(["ensemble", str(a), str(copy), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"{a} and {copy}: the same network twice" in err and "train.model_seed" in err
    assert not (tmp_path / "e").exists()
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e")]) == 0  # other weight seeds


def test_ensemble_of_runs_without_validation_predictions_has_no_val(members, tmp_path, caplog):
    import shutil

    _, (a, b) = members
    old = tmp_path / "old"  # a run from before predictions_val.csv was written
    shutil.copytree(b, old)
    (old / "predictions_val.csv").unlink()
    out = tmp_path / "e"
    assert main(["ensemble", str(a), str(old), "--out", str(out)]) == 0
    assert "val" not in json.loads((out / "metrics.json").read_text()) and not (out / "predictions_val.csv").exists()
    assert f"no validation predictions in {old}" in caplog.text


def test_paired_bootstrap_compares_two_runs_on_the_same_test_set(members, tmp_path, capsys):
    _, (a, b) = members
    # A run against itself resampled: every draw gives 0, so the interval is [0, 0] and A >= B always.
    assert pb.main(["--a", str(a), "--b", str(a), "--resamples", "20"]) == 0
    assert "[+0.0, +0.0]; A >= B in 100 % of 20 resamples" in capsys.readouterr().out
    # Against the other member: the observed difference is that of the runs' own test macro-F1.
    fa, fb = (json.loads((r / "metrics.json").read_text())["test"]["macro_f1"] for r in (a, b))
    assert pb.main(["--a", str(a), "--b", str(b), "--resamples", "20"]) == 0
    assert f"{(fa - fb) * 100:+.1f} points" in capsys.readouterr().out
    # The same pairs listed in another order (collect sorts by seed) resample alike: the same interval.
    two = pb.main(["--a", str(a), str(b), "--b", str(b), str(a), "--resamples", "50"]), capsys.readouterr().out
    assert pb.main(["--a", str(b), str(a), "--b", str(a), str(b), "--resamples", "50"]) == 0 == two[0]
    assert capsys.readouterr().out == two[1]
    va, vb = (json.loads((r / "metrics.json").read_text())["val"]["macro_f1"] for r in (a, b))
    assert pb.main(["--a", str(a), "--b", str(b), "--resamples", "20", "--split", "val"]) == 0
    assert f"val macro-F1 A - B: {(va - vb) * 100:+.1f} points" in capsys.readouterr().out
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "predictions.csv").write_text("\n".join((b / "predictions.csv").read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(SystemExit) as stop:  # one line naming the file, exit 2 (a traceback before)
        pb.main(["--a", str(a), "--b", str(odd)])
    assert stop.value.code == 2 and "other objects or truth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pb.main(["--a", str(a), str(b), "--b", str(a)])



def test_paired_bootstrap_interval_is_the_central_95_percent_of_the_resampled_differences():
    """Catches a 90 % interval (5-95th percentiles) reported as the 95 % one: two rows looked apart that the
    test set's noise does not tell apart. Every object is of class 0, A is always right and B says class 1 on 15
    of 60: a draw holding K of those has macro-F1(A) - macro-F1(B) = 1 - 2(n - K)/(2n - K) = K/(2n - K)."""
    from astrom3_hpc.results.bootstrap import paired_bootstrap

    n, resamples, seed = 60, 1000, 3
    y = np.zeros(n, dtype=int)
    b = np.where(np.arange(n) < 15, 1, 0)
    out = paired_bootstrap([(["x", "z"], y, y.copy(), b)], resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)  # one pair: one draw of n indices per resample, in order
    k = np.array([(b[rng.integers(0, n, n)] == 1).sum() for _ in range(resamples)])
    diffs = k / (2 * n - k)
    assert out["observed"] == pytest.approx(15 / (2 * n - 15))
    assert (out["low"], out["high"]) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert out["share_ahead"] == 1.0 and out["resamples"] == resamples and out["objects"] == n

@pytest.mark.timeout(600)
def test_subset_averaging_reproduces_the_run_and_refuses_runs_without_subsets(members, tmp_path, capsys):
    import subset_averaging as sa

    store, (plain, _) = members
    run = tmp_path / "resampled"
    run_job("finetune", run, store, sets=(*TINY, "data.lc_fold_resamples=2", "data.lc_feature_resampling=true"),
            extra=("--mode", "photo", "--init", "scratch"))
    assert sa.main([str(run)]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    # The whole-curve variant is the run's own evaluation: the same macro-F1 and loss from the saved weights.
    for split in ("val", "test"):
        assert f"{split} whole {100 * m[split]['macro_f1']:.1f}/{m[split]['loss']:.3f}" in out
        assert f"{split} half_half" in out and f"{split} subsets" in out
    with pytest.raises(SystemExit, match="not trained with fold resampling"):
        sa.main([str(plain)])


def test_members_start_from_the_weights_of_their_seeds_and_average_their_probabilities():
    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.model import build_classifier
    from astrom3_hpc.model.members import Members, build_members, class_probabilities, log_probabilities

    def build():
        return build_classifier(ModelConfig(preset="periodic", d_model=16, n_layers=1, n_heads=2, d_ff=32), "photo", 4)

    torch.manual_seed(7)
    model = build_members(build, 3, seed=7)
    assert isinstance(model, Members) and sorted(model.encoders) == ["0.photo", "1.photo", "2.photo"]
    for k, member in enumerate(model.members):  # member k: what a run with train.model_seed=7+k starts from
        torch.manual_seed(7 + k)
        alone = build().state_dict()
        assert all(torch.equal(alone[key], v) for key, v in member.state_dict().items())
    torch.manual_seed(7)
    assert isinstance(build_members(build, 1, seed=7), type(build()))
    logits = torch.randn(3, 5, 4) * 30  # confident members that disagree: some class probabilities underflow
    mean = torch.softmax(logits, -1).mean(0)
    torch.testing.assert_close(class_probabilities(logits), mean)
    torch.testing.assert_close(log_probabilities(logits).exp(), mean)
    assert torch.isfinite(log_probabilities(logits)).all()
    torch.testing.assert_close(log_probabilities(logits[0]), torch.log_softmax(logits[0], -1))


def test_members_under_zero_with_a_clip_are_refused_by_name():
    """Catches members clipped together: under ZeRO DeepSpeed clips every parameter by one norm, so one member's
    large gradient would shrink the others' steps, unlike the separate runs members stand for."""
    from astrom3_hpc.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'finetune.members' above 1 needs train.zero_stage 0"):
        load_config(None, ["finetune.members=3", "train.zero_stage=1"])
    for ok in (["finetune.members=3", "train.zero_stage=1", "optim.grad_clip=0"], ["train.zero_stage=2"],
               ["finetune.members=3"]):
        load_config(None, ok)


@pytest.mark.timeout(600)
def test_members_train_in_one_run_that_predict_and_collect_read(members, tmp_path, capsys):
    """finetune.members=2: one run, two classifiers from the seeds of the two member runs above, its predictions
    and validation loss those of their mean probabilities; `astrom3 predict` rebuilds the same model."""
    store, _ = members
    run = tmp_path / "runs" / "joint"
    run_job("finetune", run, store, sets=(*TINY, "train.model_seed=1", "finetune.members=2"),
            extra=("--mode", "photo", "--init", "scratch"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["weight_seeds"] == [1, 2] and m["init"] == "scratch"
    assert ", 2 members, best epoch" in (run / "train.log").read_text()
    w = torch.load(run / "best_model.pt", weights_only=False)["state_dict"]
    assert {k.split(".")[:2] == ["members", "0"] or k.split(".")[:2] == ["members", "1"] for k in w} == {True}
    assert any(not torch.equal(w[k], w[k.replace("members.0.", "members.1.", 1)]) for k in w if ".0." in k)
    rows, p = _probs(run, "predictions_val.csv")
    names = [k[2:] for k in rows[0] if k.startswith("p_")]
    truth = np.array([names.index(r["true_class"]) for r in rows])
    # The kept epoch's validation loss is the log loss of the members' mean probability (printed to 6 digits).
    assert m["val"]["loss"] == pytest.approx(-np.log(p[np.arange(len(p)), truth]).mean(), rel=1e-4)
    assert [r["predicted_class"] for r in rows] == [names[i] for i in p.argmax(1)]
    out = tmp_path / "again"
    assert main(["predict", str(run), "--store", str(store), "--out", str(out)]) == 0
    capsys.readouterr()
    test_rows, pt = _probs(run)
    again = {r["row"]: r for r in _probs(out)[0]}
    np.testing.assert_allclose([[float(again[r["row"]][f"p_{c}"]) for c in names] for r in test_rows], pt,
                               atol=2e-6)
    from astrom3_hpc.cli.results import main as collect_main

    assert collect_main([str(tmp_path / "runs"), "--out", str(tmp_path / "res")]) == 0
    assert "| photo | full | scratch | 1 |" in (tmp_path / "res" / "results.md").read_text()


@pytest.mark.timeout(600)
def test_an_ensemble_of_sub_x_runs_reports_their_full_test_set(members, tmp_path, capsys):
    """metrics.json's test_full is the full test set beside a sub-X run's own; the ensemble wrote its sub-X report
    there too, so collect's full-test-set tables showed the subset's numbers for every sub-X ensemble."""
    import shutil

    store, _ = members
    net, bl = tmp_path / "net", tmp_path / "bl"
    assert main(["baseline", str(store), "--seed", "42", "--subset", "sub50", "--out", str(bl)]) == 0
    # The second member: the same run with other probabilities (the ensemble reads only its files): each object's
    # probabilities shifted by one class, so the mean differs from both members.
    shutil.copytree(bl, net)
    for name in ("predictions.csv", "predictions_test_full.csv"):
        with open(net / name, newline="") as f:
            rows = list(csv.DictReader(f))
        cols = [c for c in rows[0] if c.startswith("p_")]
        for r in rows:
            vals = [r[c] for c in cols]
            r.update(zip(cols, vals[1:] + vals[:1]))
        with open(net / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    out = tmp_path / "ens"
    assert main(["ensemble", str(net), str(bl), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows, p_net = _probs(net, "predictions_test_full.csv")
    _, p_bl = _probs(bl, "predictions_test_full.csv")
    assert m["test_full"]["n"] == len(rows) > m["test"]["n"]
    _, p_ens = _probs(out, "predictions_test_full.csv")
    np.testing.assert_allclose(p_ens, (p_net + p_bl) / 2, atol=2e-6)
    assert m["test_full_accuracy"] == m["test_full"]["accuracy"] and (out / "confusion_test_full.png").exists()
    old = tmp_path / "old"  # a sub-X member without its full test set's predictions: refused by name
    shutil.copytree(bl, old)
    (old / "predictions_test_full.csv").unlink()
    capsys.readouterr()
    assert main(["ensemble", str(net), str(old), "--out", str(tmp_path / "e2")]) == 2
    assert f"{old / 'predictions_test_full.csv'}: missing" in capsys.readouterr().err
    assert not (tmp_path / "e2").exists()


def test_ensemble_refuses_an_out_that_would_overwrite_a_run_and_predict_refuses_a_cycle(members, tmp_path, capsys):
    """Catches `ensemble --out MEMBER`: it replaced the member's predictions and metrics (exit 0), and `predict` of
    that self-listing ensemble then recursed until RecursionError."""
    import hashlib
    import shutil

    store, (a, b) = members
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in a.iterdir() if p.is_file()}
    assert main(["ensemble", str(a), str(b), "--out", str(a)]) == 2
    err = capsys.readouterr().err
    assert f"--out {a}: is member {a}; writing the ensemble there would overwrite that run" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in a.iterdir() if p.is_file()} == before
    other = tmp_path / "other"  # a run that is not a member: overwritten just the same
    shutil.copytree(b, other)
    assert main(["ensemble", str(a), str(b), "--out", str(other)]) == 2
    assert f"--out {other}: holds a 'finetune' run (init 'scratch'), not an ensemble" in capsys.readouterr().err
    assert (other / "best_model.pt").exists() and "ensemble" not in (other / "metrics.json").read_text()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "notes")]) == 2
    assert "holds no ensemble and is not empty" in capsys.readouterr().err
    ens = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), "--out", str(ens)]) == 0
    # A member of a member ensemble: the new ensemble would stand on itself.
    assert main(["ensemble", str(ens), str(other), "--out", str(a)]) == 2
    assert f"--out {a}: is member {a}" not in (err := capsys.readouterr().err)
    assert f"--out {a}: is a member of member {ens} (an ensemble)" in err
    # An ensemble that lists itself (written by the versions without the refusal) is refused by predict by name.
    m = json.loads((ens / "metrics.json").read_text())
    m["members"].append({"run": str(ens.resolve())})
    (ens / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert main(["predict", str(ens), "--store", str(store), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{ens}: ensemble member {ens.resolve()} is the ensemble itself (a cycle)" in err
    assert "Traceback" not in err and "RecursionError" not in err


def test_an_ensemble_rewritten_into_its_out_keeps_no_file_of_the_earlier_one(members, tmp_path, capsys):
    """Catches a rerun into an existing --out leaving the earlier ensemble's predictions_val.csv: the new one has no
    validation predictions, and a later ensemble of it averaged the stale ones of other members."""
    import shutil

    _, (a, b) = members
    old = tmp_path / "old"  # a member without validation predictions
    shutil.copytree(b, old)
    (old / "predictions_val.csv").unlink()
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 0
    assert (out / "predictions_val.csv").exists()
    assert main(["ensemble", str(a), str(old), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion_test.png", "metrics.json", "predictions.csv"]
    assert "val" not in json.loads((out / "metrics.json").read_text())
    nested = tmp_path / "nested"
    assert main(["ensemble", str(out), str(b), "--out", str(nested)]) == 0
    assert not (nested / "predictions_val.csv").exists()
    assert "val" not in json.loads((nested / "metrics.json").read_text())
    # What else a user put in an earlier ensemble is not deleted with it: refused by name.
    (out / "new_field").mkdir()
    capsys.readouterr()
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 2
    assert f"--out {out}: the earlier ensemble there also holds new_field, which rewriting it would delete" in \
        capsys.readouterr().err
    assert (out / "new_field").is_dir() and not (out / "predictions_val.csv").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_ensemble_of_predict_outputs_is_refused_by_name(members, tmp_path, capsys):
    """Catches `ensemble` of two `astrom3 predict` outputs failing with the bare "'' is not in list"."""
    store, (a, b) = members
    outs = [tmp_path / "pa", tmp_path / "pb"]
    for run, out in zip((a, b), outs):
        assert main(["predict", str(run), "--store", str(store), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["ensemble", *map(str, outs), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"{outs[0]}: a 'predict' output, not a fine-tune, baseline or ensemble run" in err
    assert "is not in list" not in err and not (tmp_path / "e").exists()
