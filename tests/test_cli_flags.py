"""Flags of the training and sweep commands: what a user types reaches the config as typed."""

from __future__ import annotations

import pytest

from conftest import ROOT

from astrom3_hpc.cli import _overrides, build_parser, cmd_pretrain
from astrom3_hpc.core.config import load_config
from astrom3_hpc.train import jobs

TEST_CFG = str(ROOT / "configs/test.yaml")


@pytest.mark.parametrize("path", ["2024", "field: a.zarr", "yes", "[b].zarr"])
def test_store_flag_takes_any_path_verbatim(path, monkeypatch):
    """Catches --store going through --set's YAML, which reads these as a number, a mapping, true, a list."""
    for cmd in ("finetune", "pretrain"):
        args = build_parser().parse_args([cmd, "--run-dir", "r", "--store", path, "--set", "data.store=other"])
        assert load_config(TEST_CFG, _overrides(args)).data.store == path
    seen = {}

    def run_pretrain(cfg, run_dir, **kw) -> int:  # the config the command resolved, without training
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(jobs, "run_pretrain", run_pretrain)
    args = build_parser().parse_args(["pretrain", "--config", TEST_CFG, "--run-dir", "r",
                                      "--store", path, "--seed", "66"])
    assert cmd_pretrain(args) == 0 and (seen["cfg"].data.store, seen["cfg"].data.seed) == (path, 66)


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


def test_a_sweep_passes_any_store_path_to_its_jobs(tmp_path, monkeypatch):
    """Catches the sweep's store reaching its tasks through YAML (`/x/field: a.zarr` is a mapping there)."""
    from astrom3_hpc.orchestration.submission import create_sweep

    store = tmp_path / "field: a.zarr"
    sw = create_sweep(tmp_path / "sw", seeds=[42], modes=["photo"], subsets=["full"], store=str(store),
                      finetune_config=TEST_CFG, pretrain_config=TEST_CFG, pretrain_sets=["train.epochs=2"])
    assert {sw.task_config(t).data.store for t in sw.tasks} == {str(store)}
    assert load_config(TEST_CFG, sw.pretrain_overrides(42)).data.store == str(store)
    seen = {}

    def run(cfg, run_dir, **kw) -> int:  # the config the command resolved, without training
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(jobs, "run_finetune", run)
    monkeypatch.setattr(jobs, "run_pretrain", run)
    args = build_parser().parse_args(sw.task_argv(sw.tasks[0]))
    assert args.func(args) == 0 and seen["cfg"].data.store == str(store)
    # The pretraining command a sweep's sbatch script and the demo run: the config of pretrain_overrides.
    args = build_parser().parse_args(sw.pretrain_argv(42))
    assert args.func(args) == 0
    assert seen["cfg"].to_dict() == load_config(TEST_CFG, sw.pretrain_overrides(42)).to_dict()


def test_an_init_directory_of_any_name_reaches_the_config(tmp_path):
    """Catches --init going through YAML: a pretraining run under `runs/field: a/` read as a mapping."""
    from astrom3_hpc.train.jobs import finetune_config

    init = str(tmp_path / "field: a" / "pretrain" / "s42")
    args = build_parser().parse_args(["finetune", "--run-dir", "r", "--init", init, "--seed", "42"])
    cfg = finetune_config(TEST_CFG, _overrides(args), seed=args.seed, init=args.init)
    assert cfg.finetune.init == init and cfg.data.seed == 42


def test_a_set_value_yaml_reads_as_another_type_says_to_quote_it():
    from astrom3_hpc.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"'data.store' must be a string, got 2024: YAML read the value as a number; "
                                          r"quote it \(data.store='...'\)"):
        load_config(TEST_CFG, ["data.store=2024"])
    assert load_config(TEST_CFG, ["data.store='2024'"]).data.store == "2024"


def test_floats_in_scientific_notation_and_sizes_below_one(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string, which a float key refused; n_heads 0 divided by zero in the
    validation itself, and negative sizes passed it."""
    from astrom3_hpc.core.config import ConfigError

    assert load_config(TEST_CFG, ["optim.lr=1e-3", "optim.weight_decay=5E-5"]).optim.lr == 1e-3
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 2e-4\n")
    assert load_config(str(tmp_path / "c.yaml")).optim.lr == 2e-4
    with pytest.raises(ConfigError, match="'optim.lr' must be a number, got 'fast'"):
        load_config(TEST_CFG, ["optim.lr=fast"])
    for key, value in (("model.n_heads", 0), ("model.n_heads", -4), ("model.d_model", 0), ("model.meta_hidden", 0)):
        with pytest.raises(ConfigError, match=f"{key.split('.')[0]}.(n_heads|d_model)"):
            load_config(TEST_CFG, [f"{key}={value}"])


def test_list_flags_of_the_science_tools_add_up():
    p = build_parser()
    a = p.parse_args(["search", "run", "--query", "1", "2", "--query", "3", "--target", "photo", "--target", "meta"])
    assert a.query == ["1", "2", "3"] and a.target == ["photo", "meta"]
    assert p.parse_args(["embed", "run", "--splits", "val", "--splits", "test"]).splits == ["val", "test"]
    assert p.parse_args(["search", "run"]).target is None  # unset: the command's default (all)


def test_an_option_of_another_source_is_an_error_and_builds_nothing(tmp_path, capsys):
    """Catches an ingest option the chosen source does not read going unused (`-n 30` to ztf-vsx built all 439
    objects, `--points` to synthetic a synthetic store): each source parses only its own options, and one of
    another source is named with the sources that take it."""
    from astrom3_hpc.cli import main

    out = tmp_path / "s.zarr"
    usage = [(["synthetic", "-n", "50", "--points", "p.csv"], "--points is an option of `ingest lightcurves`, "
                                                               "not of `ingest synthetic`"),
             (["ztf-vsx", "--root", str(tmp_path), "-n", "30"], "-n is an option of `ingest synthetic`, not of"),
             (["lightcurves", "--root", str(tmp_path)],
              "--root is an option of `ingest astrom3-raw / ztf-vsx / stripe82 / lamost`"),
             (["synthetic", "--catalogue=train=a.csv"], "--catalogue is an option of `ingest astrom3-raw`"),
             (["ztf-vsx", "--meta-nan", "skip"], "--meta-nan is an option of `ingest synthetic / astrom3-raw`"),
             (["ztf-vsx"], "the following arguments are required: --root"),
             (["lightcurves", "--points", "p.csv"], "the following arguments are required: --objects")]
    for argv, message in usage:
        with pytest.raises(SystemExit) as e:
            main(["ingest", *argv, "--out", str(out), "--no-progress"])
        assert e.value.code == 2 and message in capsys.readouterr().err, argv
        assert not out.exists() and list(tmp_path.iterdir()) == [], argv
    assert main(["ingest", "astrom3-raw", "--root", str(tmp_path), "--catalogue", "a.csv", "--out", str(out)]) == 2
    assert "--catalogue takes SPLIT=CSV" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_each_source_lists_only_its_own_options(capsys):
    """`astrom3 ingest lightcurves --help` listed every source's options (146 lines); each source now shows the
    shared ones and its own, and the source's own come first."""
    from astrom3_hpc.cli import main

    helps = {}
    for source in ("synthetic", "astrom3-raw", "ztf-vsx", "stripe82", "lamost", "lightcurves"):
        with pytest.raises(SystemExit):
            main(["ingest", source, "--help"])
        helps[source] = capsys.readouterr().out
        assert "--out" in helps[source] and "--compression" in helps[source], source
    assert "--points" in helps["lightcurves"] and "--points" not in helps["synthetic"]
    assert "--n-objects" in helps["synthetic"] and "--n-objects" not in helps["ztf-vsx"]
    assert "ztf_vsx_objects.csv" in helps["ztf-vsx"] and "--root" not in helps["lightcurves"]
    assert "--meta-nan" in helps["astrom3-raw"] and "--meta-nan" not in helps["stripe82"]
    assert "--error-channel" in helps["lamost"] and "--error-channel" not in helps["lightcurves"]
    assert helps["lightcurves"].index("--points") < helps["lightcurves"].index("--out")
    assert helps["ztf-vsx"].index("--root") < helps["ztf-vsx"].index("--out")


def test_sweep_submit_on_an_existing_manifest_names_every_flag_it_ignores(tmp_path, capsys):
    """Catches --set and --pretrain-set dropped without a word when the manifest exists (the grid, config and
    store flags were named in the note; the overrides silently did not reach the jobs)."""
    from astrom3_hpc.orchestration.sweep import Sweep, make_tasks

    sw = Sweep(tmp_path / "sw", make_tasks(seeds=(42,), modes=("photo",), subsets=("full",), inits=("scratch",)))
    sw.save()
    args = build_parser().parse_args(["sweep", "submit", str(sw.root), "--store", "x.zarr", "--set", "train.epochs=3",
                                      "--pretrain-set", "train.epochs=2", "--dry-run"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "exists; ignoring --store, --set, --pretrain-set" in err
    assert Sweep.load(sw.root).sets == []


def test_pretraining_on_a_label_fraction_is_refused(tiny_store, tmp_path, capsys):
    """Catches `astrom3 pretrain --set data.subset=sub50` training on half the train split (and validating on half
    the validation split) while fine-tunes took it as the seed's encoder; the spec pretrains on the full split."""
    from astrom3_hpc.cli import main

    run = tmp_path / "run"
    assert main(["pretrain", "--config", TEST_CFG, "--store", str(tiny_store), "--run-dir", str(run),
                 "--set", "data.subset=sub50"]) == 2
    assert "data.subset=sub50: pretraining always uses the full train split" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("grid, message", [(["--seeds", "42,42"], "--seeds lists 42 twice"),
                                           (["--seeds", "42", "--modes", "photo,spectra", "--modes", "photo"],
                                            "--modes lists photo twice"),
                                           (["--seeds", "42", "--subsets", "full, full"], "--subsets lists full twice"),
                                           (["--seeds", "42", "--inits", "clip,scratch,clip"],
                                            "--inits lists clip twice")])
def test_a_sweep_grid_value_given_twice_is_refused(grid, message, tmp_path, capsys):
    """Catches `--seeds 42,42` writing each task twice: two array tasks training into one run directory."""
    from astrom3_hpc.cli import main

    sw = tmp_path / "sw"
    argv = ["sweep", "create", str(sw), "--store", str(tmp_path / "s.zarr"), "--config", TEST_CFG]
    if "--modes" not in grid:
        argv += ["--modes", "photo"]
    if "--subsets" not in grid:
        argv += ["--subsets", "full"]
    assert main([*argv, *grid]) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and len(err.strip().splitlines()) == 1, err
    assert not sw.exists()


@pytest.mark.parametrize("argv", [["inspect", "s.zarr", "--batch-size", "{v}"],
                                  ["inspect", "s.zarr", "--batches", "{v}"],
                                  ["predict", "run", "--store", "s", "--out", "o", "--batch-size", "{v}"],
                                  ["predict", "run", "--store", "s", "--out", "o", "--threads", "{v}"],
                                  ["baseline", "s.zarr", "--out", "o", "--threads", "{v}"],
                                  ["evaluate-embeddings", "run", "--batch-size", "{v}"],
                                  ["embed", "run", "--batch-size", "{v}"],
                                  ["pretrain", "--run-dir", "r", "--stop-after-steps", "{v}"],
                                  ["sweep", "submit", "sw", "--parallel", "{v}"],
                                  ["sweep", "submit", "sw", "--cpus-per-task", "{v}"],
                                  ["launch", "sweep", "sw", "--finetune-time", "{v}"],
                                  ["launch", "pretrain", "--run-dir", "r", "--tasks-per-node", "{v}"]])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_count_option_below_one_is_refused_naming_it(argv, value, capsys):
    """Catches `inspect --batch-size 0` (a ZeroDivisionError traceback), `--batch-size -5` (nothing read, exit 0)
    and `predict --batch-size 0` (range()'s error, not naming the option)."""
    from astrom3_hpc.cli import main

    argv = [a.format(v=value) for a in argv]
    option = argv[-2]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {option}: must be an integer >= 1, got {value}" in err, err
    assert build_parser().parse_args([*argv[:-1], "3"]).__dict__[option.lstrip("-").replace("-", "_")] == 3


def test_json_on_stdout_writes_class_names_as_written_where_stdout_can_hold_them(monkeypatch, capsys):
    import io
    import sys

    from astrom3_hpc.cli.runner import print_json

    print_json({"class_counts": {"\u03b4 Sct": 3}}, None, "summary")
    assert capsys.readouterr().out == 'summary: {"class_counts": {"\u03b4 Sct": 3}}\n'
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    print_json({"class": "\u03b4 Sct"}, None)  # a job whose locale is not UTF-8: escapes, no UnicodeEncodeError
    ascii_out.seek(0)
    assert ascii_out.read() == '{"class": "\\u03b4 Sct"}\n'


@pytest.mark.parametrize("sets, message", [(["train.epoch=3"], "train: unknown key(s) ['epoch']"),
                                           (["data.subset=sub10"], "data.subset=sub10: pretraining always uses")])
def test_launch_pretrain_refuses_a_bad_config_before_submitting(sets, message, tmp_path, capsys):
    """Catches `launch pretrain --set train.epoch=3` printing "submitted" and exit 0: on SLURM the job waited in
    the queue to fail with exit 2."""
    from astrom3_hpc.cli import main

    folder = tmp_path / "jobs"
    assert main(["launch", "pretrain", "--run-dir", str(tmp_path / "r"), "--config", TEST_CFG, "--cluster", "local",
                 "--folder", str(folder), "--set", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not folder.exists(), err
