"""Config input the loader must refuse: one line naming the file or override and the key, exit 2 from the CLI,
before a run directory exists."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

from astrom3_hpc.cli import main
from astrom3_hpc.core.config import ConfigError, load_config

TEST_CFG = str(ROOT / "configs/test.yaml")


def refused(tmp_path, capsys, argv: list[str], message: str, command: str = "pretrain") -> None:
    """`astrom3 COMMAND ... ARGV` ends with exit 2 and one line holding `message`; no run directory is made."""
    run = tmp_path / "run"
    assert main([command, "--run-dir", str(run), "--store", str(tmp_path / "s.zarr"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not run.exists()


# ---------------------------------------------------------------------------------------------- repeated keys

def test_a_section_given_twice_in_a_config_file_is_refused(tmp_path, capsys):
    """Catches the second `train:` section silently replacing the first (its epochs and batch size fell back to
    the defaults)."""
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("train:\n  epochs: 3\n  batch_size: 32\noptim:\n  lr: 0.001\ntrain:\n  log_every_steps: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert str(e.value) == f"{cfg}: key 'train' appears twice (lines 1 and 6)"
    refused(tmp_path, capsys, ["--config", str(cfg)], f"error: {cfg}: key 'train' appears twice (lines 1 and 6)")


def test_a_key_given_twice_in_a_section_a_base_file_or_an_override_is_refused(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.01, lr: 0.02}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: key 'lr' appears twice \(line 1\)$"):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(ConfigError, match=r"^override 'train=\{epochs: 3, epochs: 4\}': key 'epochs' appears twice"):
        load_config(TEST_CFG, ["train={epochs: 3, epochs: 4}"])


def test_a_cell_given_twice_in_a_cells_table_is_refused(tmp_path, capsys):
    cells = tmp_path / "cells.yaml"
    cells.write_text("cells:\n  photo:\n    full:\n      train: {epochs: 3}\n    full:\n      train: {epochs: 4}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {TEST_CFG}\ncells: cells.yaml\n")
    with pytest.raises(ConfigError, match=f"^{cells}: key 'full' appears twice \\(lines 3 and 5\\)$"):
        load_config(cfg)
    refused(tmp_path, capsys, ["--config", str(cfg), "--mode", "photo"], f"{cells}: key 'full' appears twice",
            command="finetune")



def test_merge_keys_override_without_counting_as_repeats(tmp_path):
    """Catches the repeated-key check refusing a valid merge: building a mapping that merges an anchor rewrote the
    anchored mapping in place (its own `<<` flattened into it), and its override of a merged key then read as a
    repeat when the anchor itself was built ("key 'lr' appears twice (lines 3 and 10)")."""
    from astrom3_hpc.core.config import cell_values

    cells = tmp_path / "cells.yaml"
    cells.write_text("base_optim: &base {lr: 0.001, grad_clip: 5.0}\n"
                     "library:\n  photo:\n    full:\n      v2:\n        optim: &v2\n          <<: *base\n"
                     "          lr: 0.0029\n"
                     "cells:\n  photo:\n    full:\n      optim:\n        <<: *v2\n      train: {epochs: 1}\n")
    assert cell_values(cells, "photo", "full") == {"optim": {"lr": 0.0029, "grad_clip": 5.0}, "train": {"epochs": 1}}
    # A key given twice beside a merge is still one key too many; '2' and 2 are two keys.
    cells.write_text("a: &a {x: 1}\ncells:\n  photo:\n    full: {<<: *a, train: {}, train: {}}\n  2: {}\n  '2': {}\n")
    with pytest.raises(ConfigError, match="key 'train' appears twice \\(line 4\\)$"):
        cell_values(cells, "photo", "full")


# ---------------------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("override, message", [
    ("optim.lr=.inf", "config key 'optim.lr' must be a finite number, got inf"),
    ("optim.lr=infinity", "config key 'optim.lr' must be a finite number, got 'infinity'"),
    ("optim.weight_decay=.nan", "config key 'optim.weight_decay' must be a finite number, got nan"),
    ("train.ema_epochs=.inf", "config key 'train.ema_epochs' must be a finite number, got inf"),
    ("model.logit_scale_max=.inf", "config key 'model.logit_scale_max' must be a finite number, got inf"),
    ("optim.betas=[0.9, -.inf]", "config key 'optim.betas' must be a finite number, got -inf"),
    ("finetune.label_smoothing=.nan", "config key 'finetune.label_smoothing' must be a finite number, got nan"),
    ("optim.weight_decay=-1", "config key 'optim.weight_decay' must be >= 0, got -1.0"),
])
def test_non_finite_and_negative_numbers_are_refused(override, message, tmp_path, capsys):
    """Catches train.ema_epochs=.inf (an average that never moves off the initial weights: exit 0 with chance
    metrics), optim.lr=.inf (a non-finite loss blamed on the data) and a negative weight decay (torch's error,
    after the run directory was made) passing the config's checks."""
    with pytest.raises(ConfigError) as e:
        load_config(TEST_CFG, [override])
    assert str(e.value) == f"{TEST_CFG}: {message}"
    refused(tmp_path, capsys, ["--config", TEST_CFG, "--set", override], f"error: {TEST_CFG}: {message}")


def test_finite_numbers_in_any_spelling_still_load():
    cfg = load_config(TEST_CFG, ["optim.lr=1e-3", "optim.weight_decay=0", "train.ema_epochs=2"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.ema_epochs) == (1e-3, 0.0, 2.0)


# ---------------------------------------------------------------------------------------------- modalities

def test_an_unknown_modality_is_refused_at_load(tmp_path, capsys):
    """Catches model.modalities=[photo, photometry] passing validation: the run dir was made, then the model build
    died with a KeyError traceback (exit 1), and `sweep create` wrote a manifest whose every job would fail."""
    message = "config key 'model.modalities' must be drawn from photo, spectra, meta, got 'photometry'"
    with pytest.raises(ConfigError) as e:
        load_config(TEST_CFG, ["model.modalities=[photo, photometry]"])
    assert str(e.value) == f"{TEST_CFG}: {message}"
    refused(tmp_path, capsys, ["--config", TEST_CFG, "--set", "model.modalities=[photo, photometry]"],
            f"error: {TEST_CFG}: {message}")
    sw = tmp_path / "sw"
    assert main(["sweep", "create", str(sw), "--store", str(tmp_path / "s.zarr"), "--config", TEST_CFG, "--modes",
                 "photo", "--subsets", "full", "--seeds", "42", "--set", "model.modalities=[photo, foo]"]) == 2
    err = capsys.readouterr().err
    assert "config key 'model.modalities' must be drawn from photo, spectra, meta, got 'foo'" in err, err
    assert not (sw / "manifest.json").exists()
    assert load_config(TEST_CFG, ["model.modalities=[meta, photo]"]).model.modalities == ["meta", "photo"]


# ---------------------------------------------------------------------------------------------- --set values

@pytest.mark.parametrize("override, problem", [
    ("name=[1", "expected ',' or ']', but got '<stream end>'"),
    ("name=*x", "found undefined alias 'x'"),
    ("name='unterminated", "found unexpected end of stream"),
    ("finetune.init=@runs/x", "found character '@' that cannot start any token"),
])
def test_a_set_value_that_is_not_yaml_is_one_line(override, problem, tmp_path, capsys):
    """Catches a yaml.YAMLError (not a ValueError) ending `--set 'name=[1'` with a traceback and exit 1."""
    key = override.split("=")[0]
    message = f"override '{override}': not a valid YAML value ({problem}); quote it ({key}='...')"
    with pytest.raises(ConfigError) as e:
        load_config(TEST_CFG, [override])
    assert str(e.value) == message
    refused(tmp_path, capsys, ["--config", TEST_CFG, "--set", override], f"error: {message}", command="finetune")
    sw = tmp_path / "sw"
    assert main(["sweep", "create", str(sw), "--store", str(tmp_path / "s.zarr"), "--modes", "photo", "--subsets",
                 "full", "--seeds", "42", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert f"error: {message}" in err and len(err.splitlines()) == 1, err
    assert not (sw / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------- structure

PAPER_FT = str(ROOT / "configs/paper_finetune.yaml")  # has a `cells:` table


@pytest.mark.parametrize("files, config, overrides, message", [
    ({}, TEST_CFG, ["train=4", "train.epochs=3"],
     "override 'train.epochs=3': train was set to 4 by an earlier override, not a mapping of keys"),
    ({"c.yaml": "train:\n  foo: 1\n  2: 3\n"}, "c.yaml", [], "{d}/c.yaml: train: unknown key(s) [2, 'foo']; allowed:"),
    ({"c.yaml": "base: 3\n"}, "c.yaml", [], "{d}/c.yaml: base: expected the path of one config file, got 3"),
    ({"c.yaml": "base: [a.yaml]\n"}, "c.yaml", [],
     "{d}/c.yaml: base: expected the path of one config file, got ['a.yaml']"),
    ({}, PAPER_FT, ["finetune=3"], f"{PAPER_FT}: finetune: expected a mapping, got 3"),
    ({}, PAPER_FT, ["finetune.mode=[a]"], f"{PAPER_FT}: config key 'finetune.mode' must be a string, got ['a']"),
    ({}, PAPER_FT, ["data.subset=10"], f"{PAPER_FT}: config key 'data.subset' must be a string, got 10"),
    # YAML 1.1 read these as 40 and 60 without a word; an empty value as null (an unset shell variable).
    ({"c.yaml": "train:\n  epochs: 050\n"}, "c.yaml", [],
     "{d}/c.yaml: '050' (line 2) reads as 40 in YAML 1.1 (octal): write 50 without leading zeros, or quote it"),
    ({}, TEST_CFG, ["train.max_steps_per_epoch=1:00"], "override 'train.max_steps_per_epoch=1:00': '1:00' (line 1) "
                                                        "reads as 60 in YAML 1.1 (base 60): write it as one number"),
    ({}, PAPER_FT, ["cells="], "override 'cells=' gives no value; write cells=null to unset it"),
    ({"c.yaml": "trian: {}\n"}, "c.yaml", [], "{d}/c.yaml: unknown key(s) ['trian']; allowed:"),
    ({"c.yaml": "train:\n#  epochs: 3\n"}, "c.yaml", [], "{d}/c.yaml: train: the section is empty"),
    # A misspelt table or mode was never read: CLIP fine-tunes ran the from-scratch values.
    ({"t.yaml": "cells: {photo: {full: {}}}\nclip_cell: {photo: {full: {optim: {lr: 0.5}}}}\n",
      "c.yaml": "cells: t.yaml\n"}, "c.yaml", [], "{d}/t.yaml: top-level key 'clip_cell' is not read: did you mean "
                                                   "'clip_cells'?"),
    ({"t.yaml": "cells: {photo: {full: {}}, phot: {full: {}}}\n", "c.yaml": "cells: t.yaml\n"}, "c.yaml", [],
     "{d}/t.yaml: cells: unknown mode 'phot' (modes: photo, spectra, meta, all)"),
    ({"t.yaml": "cells: {photo: {full: {}, sub20: {}}}\n", "c.yaml": "cells: t.yaml\n"}, "c.yaml", [],
     "{d}/t.yaml: cells: photo: unknown subset(s) ['sub20']"),
    ({"t.yaml": "cells: {photo: {full: {optim: {lrr: 1}}}}\n", "c.yaml": "cells: t.yaml\n"}, "c.yaml", [],
     "{d}/t.yaml: cell photo/full: optim: unknown key(s) ['lrr']"),
])
def test_a_malformed_config_structure_is_one_line(files, config, overrides, message, tmp_path, capsys):
    """Catches TypeError / AttributeError tracebacks (exit 1) where an override indexes into a scalar, unknown keys
    of mixed types are sorted, `base:` is not a path, or the cells lookup meets a scalar or a list."""
    d = tmp_path / "cfg"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    config = str(d / config) if files else config
    message = message.format(d=d)
    with pytest.raises(ConfigError) as e:
        load_config(config, overrides)
    assert str(e.value).startswith(message), str(e.value)
    refused(tmp_path, capsys, ["--config", config, "--set", *overrides], f"error: {message}", command="finetune")


def test_a_whole_section_override_merges_with_earlier_keys_of_it_and_a_non_utf8_file_is_named(tmp_path):
    cfg = load_config(TEST_CFG, ["train.epochs=3", "train={batch_size: 64}"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (3, 64)  # the earlier train.epochs=3 was dropped
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"^{latin}: not UTF-8 text \\(byte 0xe9 at offset 9\\)"):
        load_config(latin)


def test_a_pretraining_runs_model_section_is_typed_and_named_when_wrong(tmp_path):
    """Catches `ModelConfig(**config.yaml's model)`: a key another version wrote, or a value of the wrong type,
    was a TypeError traceback (exit 1) in every fine-tune from that run, and in `sweep status`."""
    import dataclasses

    from astrom3_hpc.core.config import ModelConfig
    from astrom3_hpc.train.finetune import pretrained_architecture

    source = tmp_path / "pre" / "config.yaml"
    recorded = dataclasses.asdict(ModelConfig(embed_dim=64, lc_dropout=0.5))
    own = ModelConfig(lc_dropout=0.1)
    arch = pretrained_architecture(recorded, own, source)
    assert (arch.embed_dim, arch.lc_dropout) == (64, 0.1)  # the run's architecture, the fine-tune's dropouts
    for model, message in [({**recorded, "old_key": 1}, "model: unknown key(s) ['old_key']"),
                           ({**recorded, "embed_dim": "64"}, "config key 'model.embed_dim' must be an integer"),
                           (None, "model: expected a mapping, got None")]:
        with pytest.raises(ConfigError) as e:
            pretrained_architecture(model, own, source)
        assert str(e.value).startswith(f"{source}: {message}"), str(e.value)


@pytest.mark.parametrize("override, message", [
    ("train.threads=5000", "config key 'train.threads' must be in 0..1024"),  # torch: SIGSEGV, no message
    ("train.model_seed=99999999999999999999", "config key 'train.model_seed' must be in 0..4294967279 or null"),
    ("train.model_seed=-1", "config key 'train.model_seed' must be in 0..4294967279 or null"),
    ("data.store=''", "config key 'data.store' must name a store"),  # read the working directory
    ("model.periodic_views=[fold_full, fold_full]", "config key 'model.periodic_views' must name each view once"),
    ("model.periodic_views=[]", "config key 'model.periodic_views' must name each view once, at least one")])
def test_values_out_of_what_runs_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=f"^{TEST_CFG}: {re.escape(message)}"):
        load_config(TEST_CFG, [override])
