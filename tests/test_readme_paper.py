"""The README's "Reproducing the paper with the authors' data" commands, run as written on a small copy of the
authors' layout (tests/fixtures_raw.py) with published splits for several seeds and subsets. Only sizes shrink
(tiny models, one short epoch, two seeds, one cell) and `sweep submit` becomes the local task runner."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.data.store import Store
from astrom3_hpc.orchestration.sweep import Sweep
from dist_helpers import child_env
from fixtures_raw import write_astrom3_raw_layout, write_split_files

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEEDS = ("42",)  # one seed keeps the test at 1 pretraining + 2 fine-tuning runs
MODEL = ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.d_ff=32", "model.embed_dim=32",
         "model.spec_channels=[4,4,4,4]", "model.meta_hidden=32"]
TRAIN = ["train.epochs=1", "train.batch_size=8", "train.max_steps_per_epoch=2", "data.buffer_chunks=1"]
LAYOUT = ["--chunk-objects", "8", "--table-chunk", "32", "--lc-chunk", "2048", "--no-progress"]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    sec = text[text.index("## Reproducing the paper with the authors' data"):]
    block = re.search(r"```bash\n(.*?)```", sec, re.S).group(1)
    return [ln.strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{shlex.join(argv)}\n{r.stderr[-3000:]}"
    return r


def astrom3(line: str, root: Path, extra: list[str] | None = None) -> list[str]:
    argv = shlex.split(line.replace("/data/AstroM3Dataset", str(root)))
    assert argv[0] == "astrom3", line
    argv = [str(BIN / "astrom3")] + [str(REPO / a) if a.startswith("configs/") else a for a in argv[1:]]
    return argv + (extra or [])


@pytest.mark.timeout(1200)
def test_readme_paper_commands_on_the_authors_layout(tmp_path):
    lay = write_astrom3_raw_layout(tmp_path / "AstroM3Dataset", n_objects=100, seed=11, with_nan_meta=False)
    rng = np.random.default_rng(1)
    full42 = {s: [o["object_id"] for o in lay["objects"] if o["split"] == s] for s in ("train", "val", "test")}
    perm = rng.permutation([o["object_id"] for o in lay["objects"]]).tolist()
    full0 = {"val": perm[:10], "test": perm[10:20], "train": perm[20:]}
    published = {("full", 0): full0,
                 ("sub10", 42): {k: v[: max(2, len(v) // 3)] for k, v in full42.items()},
                 ("sub10", 0): {k: v[: max(2, len(v) // 3)] for k, v in full0.items()}}
    for (subset, seed), parts in published.items():
        write_split_files(lay, subset, seed, parts)
    published[("full", 42)] = full42
    cmds = readme_commands()
    work = tmp_path / "work"
    work.mkdir()
    it = iter(cmds)
    for line in it:
        if line.startswith("astrom3 ingest"):
            run(astrom3(line, lay["root"], LAYOUT), work)
            store = Store(work / "data" / "astrom3.zarr")
            for (subset, seed), parts in published.items():
                for split, ids in parts.items():
                    got = set(store.root["object_id"][:][store.split(seed, subset, split)].tolist())
                    assert got == set(ids), (subset, seed, split)
        elif line.startswith("astrom3 info"):
            out = run(astrom3(line, lay["root"]), work).stdout
            rows = {tuple(ln.split()[:2]): ln for ln in out.splitlines()}
            assert "published" in rows[("0", "sub10")] and "generated" in rows[("0", "sub25")]
        elif line.startswith("for seed in"):
            body = next(it)
            assert next(it) == "done"
            for seed in SEEDS:
                run(astrom3(body.replace("$seed", seed), lay["root"], ["--set", *MODEL, *TRAIN]), work)
        elif line.startswith("astrom3 sweep create"):
            # The pretraining above was shrunk on its command line: the manifest says so too, or its CLIP tasks
            # would be refused as made from a pretraining of other settings.
            run(astrom3(line, lay["root"], ["--seeds", ",".join(SEEDS), "--modes", "photo", "--subsets", "sub10",
                                            "--set", *MODEL, *TRAIN, "--pretrain-set", *MODEL, *TRAIN]), work)
        elif line.startswith("astrom3 sweep submit"):
            sw = Sweep.load(work / "runs" / "paper")
            assert all(sw.pretrain_dir(int(s)).joinpath("metrics.json").exists() for s in SEEDS)
            for t in sw.tasks:  # no SLURM here: what each array task runs
                run([sys.executable, str(REPO / "jobs" / "sweep_task.py"), str(sw.root), str(t.index)], work)
        elif line.startswith("astrom3 collect"):
            run(astrom3(line, lay["root"]), work)
        else:
            raise AssertionError(f"the test does not know the README command {line!r}")
    res = json.loads((work / "runs" / "paper" / "results" / "results.json").read_text())
    assert res["summary"]["complete"] == 2 and res["summary"]["failed"] == 0
    clip, scratch = sorted(res["cell_hparams"], key=lambda c: c["inits"])
    for cell, init in ((clip, "clip"), (scratch, "scratch")):
        assert (cell["mode"], cell["subset"], cell["inits"], cell["n_runs"]) == ("photo", "sub10", [init], 1)
        # The published photometry/sub10 values, except the sizes this test shrank on the command line.
        assert (cell["warmup_epochs"], cell["grad_clip"], cell["epochs"], cell["batch_size"]) == (10, 5.0, 1, 8)
    assert scratch["lr"] == 0.00012927149363744576 and scratch["dropout"] == [0.09225591774389948]
    assert clip["lr"] == 0.00032096870443854236 and clip["dropout"] == [0.19592857206605097]  # the -clip config
    md = (work / "runs" / "paper" / "results" / "results.md").read_text()
    assert "## Fine-tuning values per cell" in md and "| photometry | sub10 | scratch | 1 | 0.000129 |" in md
    assert "| photometry | sub10 | clip | 1 | 0.000321 |" in md
