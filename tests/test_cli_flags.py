"""Flags of the training and sweep commands: what a user types reaches the config as typed."""

from __future__ import annotations

import pytest

from astrom3_hpc.cli import build_parser


@pytest.mark.parametrize("argv", [["finetune", "--run-dir", "r"], ["pretrain", "--run-dir", "r"],
                                  ["sweep", "create", "sw", "--store", "s.zarr"],
                                  ["launch", "pretrain", "--run-dir", "r"]])
def test_every_set_flag_applies(argv):
    """Catches `--set a=1 --set b=2` keeping only the last --set's list (argparse's default for nargs="*")."""
    args = build_parser().parse_args([*argv, "--set", "train.epochs=3", "--set", "optim.lr=0.01", "train.seed=5"])
    assert args.set == ["train.epochs=3", "optim.lr=0.01", "train.seed=5"]
    if argv[0] == "sweep":
        args = build_parser().parse_args([*argv, "--pretrain-set", "train.epochs=3", "--pretrain-set", "x=1"])
        assert args.pretrain_set == ["train.epochs=3", "x=1"]
    assert build_parser().parse_args(argv).set == []  # the default list is not shared between parses
