"""The README's commands work as written.

Every `astrom3 ...` line of the README's bash blocks must parse with today's command line (catches: a renamed
subcommand or flag left in the README). The data commands run for real here, with a small `-n` where the
README's is long (catches: a default that breaks a documented command, as NaN metadata under `--on-error fail`
once broke `astrom3 ingest synthetic -n 21440`). The training, sweep and collect commands of the paper section
run in tests/test_readme_paper.py, `import-weights` in tests/test_import_weights.py, `sbatch
slurm/pretrain.sh` in tests/test_slurm_jobs.py and the quick-start's `astrom3 demo` stages in
tests/test_reproducibility.py and tests/test_train.py.
"""

from __future__ import annotations

import csv
import gzip
import re
import shlex

import numpy as np
import pytest

from conftest import ROOT

from astrom3_hpc.cli import build_parser, main


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip().replace("$seed", "42")
            if line.startswith("astrom3 "):
                out.append(line)
    return out


COMMANDS = readme_commands()


def test_the_readme_shows_the_main_commands():
    """Catches the extraction silently finding nothing (then the tests below would pass on an empty list)."""
    shown = {shlex.split(c)[1] for c in COMMANDS}
    assert {"ingest", "info", "verify", "pretrain", "finetune", "import-weights", "collect", "sweep",
            "baseline"} <= shown, shown


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command):
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        assert e.code == 0, f"README command does not parse: {command}"
        return
    assert getattr(args, "func", None) is not None, f"README command selects no subcommand: {command}"


def _small(command: str, tmp) -> list[str]:
    """A README data command with a small -n and its data/ and runs/ paths under tmp."""
    argv = shlex.split(command)[1:]
    out = []
    for i, a in enumerate(argv):
        if i and argv[i - 1] in ("-n", "--n-objects"):
            a = "300"
        elif a.startswith(("data/", "runs/")) or a in ("points.csv.gz", "objects.csv"):
            a = str(tmp / a)
        out.append(a)
    return out + (["--no-progress"] if argv[0] == "ingest" else [])


def _write_survey(tmp) -> None:
    """points.csv.gz / objects.csv with the README's column names: 3 classes x 14 periodic stars."""
    rng = np.random.default_rng(0)
    with gzip.open(tmp / "points.csv.gz", "wt", newline="") as fp, open(tmp / "objects.csv", "w", newline="") as fo:
        wp, wo = csv.writer(fp), csv.writer(fo)
        wp.writerow(["id", "mjd", "mag", "magerr"])
        wo.writerow(["id", "class"])
        for k, (cls, period, amp) in enumerate([("Mira_like", 40.0, 0.8), ("delta_Sct", 0.07, 0.15),
                                                ("RR_ab", 0.55, 0.6)] * 14):
            oid = f"S{k:03d}"
            wo.writerow([oid, cls])
            t = np.sort(rng.uniform(0, 600, 120)) + 57000
            mag = 15 + amp * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.02, len(t))
            for ti, mi in zip(t, mag):
                wp.writerow([oid, f"{ti:.6f}", f"{mi:.4f}", "0.02"])


@pytest.mark.timeout(900)
def test_readme_data_commands_run_as_written(tmp_path, capsys):
    """ingest synthetic (both compressions), info, verify, ingest lightcurves and baseline, in README order."""
    (tmp_path / "data").mkdir()
    (tmp_path / "runs").mkdir()
    _write_survey(tmp_path)
    ran = []
    for command in COMMANDS:
        argv = shlex.split(command)[1:]
        runnable = (argv[:2] in (["ingest", "synthetic"], ["ingest", "lightcurves"])
                    or argv[0] in ("info", "verify", "baseline"))
        # The authors' layout runs in tests/test_readme_paper.py; a --help line only prints.
        if not runnable or "astrom3.zarr" in command or "--help" in argv:
            continue
        rc = main(_small(command, tmp_path))
        assert rc == 0, f"README command failed (rc {rc}): {command}\n{capsys.readouterr().err[-2000:]}"
        ran.append(argv[0] if argv[0] != "ingest" else f"ingest {argv[1]}")
    assert {"ingest synthetic", "info", "verify", "ingest lightcurves", "baseline"} <= set(ran), ran
    assert (tmp_path / "runs" / "baseline-s42" / "predictions.csv").is_file()
