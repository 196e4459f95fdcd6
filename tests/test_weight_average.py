"""train.ema_epochs: an exponential moving average of the weights judges validation and becomes the best model;
it is part of the checkpoint, so a stopped and resumed run equals one that ran through."""

from __future__ import annotations

import json

import pytest
import torch

from test_train import epochs, run_job, weights
from astrom3_hpc.core.config import ConfigError, load_config
from astrom3_hpc.train.weight_average import WeightAverage


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_the_average_follows_the_weights_with_a_horizon_in_epochs():
    model = _model()
    avg = WeightAverage(model, horizon_epochs=2, steps_per_epoch=5)
    assert avg.decay == pytest.approx(0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    avg.update(model)
    # One step moves the average a tenth of the way; untouched entries stay where they were.
    assert torch.allclose(avg.shadow["0.weight"], start["0.weight"] + 0.1)
    assert torch.equal(avg.shadow["0.bias"], start["0.bias"])
    # The integer step counter of batch norm is not averaged.
    assert "1.num_batches_tracked" not in avg.shadow


def test_swapping_in_restores_the_trained_weights_even_on_error():
    model = _model()
    avg = WeightAverage(model, 1, 1)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    avg.shadow["0.weight"].fill_(7.0)
    with pytest.raises(RuntimeError):
        with avg.swapped_in(model):
            assert torch.all(model[0].weight == 7.0)
            raise RuntimeError("validation failed")
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k


def test_state_round_trips_and_a_foreign_state_is_refused():
    model = _model()
    a, b = WeightAverage(model, 1, 4), WeightAverage(model, 1, 4)
    a.shadow["0.bias"].fill_(3.0)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.shadow["0.bias"], a.shadow["0.bias"])
    with pytest.raises(KeyError, match="0.weight"):
        b.load_state_dict({"0.bias": a.shadow["0.bias"]})


def test_a_negative_horizon_is_refused_by_name():
    with pytest.raises(ConfigError, match="train.ema_epochs"):
        load_config(None, ["train.ema_epochs=-1"])


@pytest.mark.timeout(600)
def test_finetuning_with_an_average_keeps_it_and_resumes_exactly(tiny_store, tmp_path):
    args = ["--mode", "photo", "--seed", "42", "--init", "scratch"]
    sets = ["train.ema_epochs=0.5", "train.epochs=3"]
    through = tmp_path / "through"
    run_job("finetune", through, tiny_store, sets=sets, extra=args)
    stopped = tmp_path / "stopped"
    r = run_job("finetune", stopped, tiny_store, sets=sets, extra=[*args, "--stop-after-steps", "6"], check=False)
    assert r.returncode == 75, r.stderr[-3000:]
    run_job("finetune", stopped, tiny_store, sets=sets, extra=args)
    assert epochs(stopped) == epochs(through)
    a, b = weights(stopped), weights(through)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The kept weights are the average, not the trained weights of the best epoch: without the average the
    # same run keeps other weights and validates differently.
    plain = tmp_path / "plain"
    run_job("finetune", plain, tiny_store, sets=["train.epochs=3"], extra=args)
    best = json.loads((through / "metrics.json").read_text())["best_val"]["epoch"]
    same_epoch = [r for r in epochs(plain) if r["epoch"] == best][0]
    assert same_epoch["val_loss"] != [r for r in epochs(through) if r["epoch"] == best][0]["val_loss"]
