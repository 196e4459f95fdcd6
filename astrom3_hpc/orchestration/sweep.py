"""Sweeps: the paper's grid of fine-tuning tasks as a manifest file, one run directory per task.

    <sweep>/manifest.json           tasks + how to run them (config, store, overrides), written atomically
    <sweep>/pretrain/s<seed>/       one pretraining run per split seed
    <sweep>/runs/<mode>-<subset>-s<seed>-<init>/   one run per task: a fine-tune, or with init "baseline" the
                                    classical light-curve classifier (`astrom3 baseline`) on the same split
    <sweep>/logs/                   scheduler output

A task is done when its run directory holds a metrics.json that the collector counts (train.metrics_file: it
parses, describes the task, reports finite scores) of a run with the task's settings and, for a CLIP task, its
seed's pretraining was made with the sweep's pretraining settings: `sweep status`, `--resume-missing`, the array
task and `astrom3 collect` all ask `Sweep.result`.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.atomic import write_json
from ..core.config import store_overrides
from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from ..train.fingerprint import (IDENTITY, INIT_WEIGHTS, SWEEP_MANIFEST, RunMismatchError, init_weights_changed,
                                 read_identity, settings_differences)
from ..train.metrics_file import MODES, BadMetrics, read_metrics

INITS = ("clip", "scratch")
# Settings of how a pretraining ran, not of what it trained (an exact resume still compares them).
HOW_IT_RAN = ("train.threads", "train.device", "train.precision", "train.compile", "train.compile_backend",
              "train.tf32", "train.cudnn_benchmark", "train.deterministic", "train.zero_stage", "train.kernels")
# A task that fits the classical light-curve baseline on the task's split instead of fine-tuning (mode photo only):
# a light-curve sweep then carries the score its networks have to beat, and `collect` tables both.
BASELINE = "baseline"
MANIFEST = SWEEP_MANIFEST


@dataclass
class Task:
    index: int
    mode: str
    subset: str
    seed: int
    init: str  # "clip" (from pretrain_dir), "scratch" or "baseline"
    run_dir: str  # relative to the sweep directory
    # The task's resolved fine-tuning values (cell_hparams of its config), recorded when the sweep is created.
    hparams: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


def _recorded_differences(run: Path, config: Callable[[], Any], ours: str) -> list[str]:
    """How `config()` differs from the settings the finished run in `run` recorded; [] where it cannot be told:
    not finished, older than identity.json, or a config file moved or edited since (the run stands)."""
    if not (run / "metrics.json").exists() or not (run / IDENTITY).exists():
        return []
    try:
        cfg = config()
    except (OSError, ValueError, KeyError, TypeError):
        return []
    try:
        return settings_differences(run, cfg, ours=ours) or []
    except RunMismatchError as e:  # a damaged identity.json: the run cannot be told to be the one asked for
        return [str(e)]


@functools.lru_cache(maxsize=64)
def _weights_sha256(path: str, mtime_ns: int, size: int) -> str:
    """Once per pretraining's weights file as it is now: status and collect ask for every CLIP task."""
    from ..train.checkpoint import weights_digest

    return weights_digest(path)


@dataclass
class Sweep:
    root: Path
    tasks: list[Task]
    finetune_config: str | None = None
    pretrain_config: str | None = None
    store: str | None = None
    sets: list[str] = field(default_factory=list)  # overrides applied to every fine-tuning task
    pretrain_sets: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({t.seed for t in self.tasks})

    def pretrain_dir(self, seed: int) -> Path:
        return self.root / "pretrain" / f"s{seed}"

    def run_dir(self, task: Task) -> Path:
        return self.root / task.run_dir

    def done(self, task: Task) -> bool:
        """The task's run finished, with the task's settings: `result` counts it."""
        if not (self.run_dir(task) / "metrics.json").exists():
            return False
        try:
            self.result(task)
        except BadMetrics:
            return False
        return True

    def result(self, task: Task) -> dict[str, Any]:
        """The task's metrics.json where it counts as the task's result, else BadMetrics saying why not: the file
        does not read as a result, is another task's, is a run of other settings (other_settings), or a CLIP
        task's pretraining was made with other settings than the sweep's (pretrain_other_settings)."""
        m = read_metrics(self.run_dir(task) / "metrics.json")
        got, want = (m["mode"], m["subset"], m["seed"], m["init"]), (task.mode, task.subset, task.seed, task.init)
        if got != want:
            raise BadMetrics(f"metrics.json is for {'/'.join(map(str, got))}, the task is {'/'.join(map(str, want))}")
        other = self.other_settings(task)
        if other:
            raise BadMetrics("a finished run of other settings than the task's (" + "; ".join(other) + ")")
        if task.init == "clip" and self.pretrain_other_settings(task.seed):  # the pretraining's entry lists them
            raise BadMetrics(f"fine-tuned from pretrain/s{task.seed}, a pretraining of other settings than the "
                             f"sweep's manifest")
        return m

    def other_settings(self, task: Task) -> list[str]:
        """How the finished run in the task's directory differs from the task ([] where it is the task's run, or
        where that cannot be told: a baseline task, see _recorded_differences). A sweep created again with other
        --set values over the same runs counted them as done, and collect averaged them in."""
        if task.init == BASELINE:
            return []

        def config():
            cfg = self.task_config(task)
            if task.init == "clip":  # it trained its pretraining's architecture
                from ..train.finetune import pretrained_architecture
                from ..train.rundir import read_run_config

                pre = self.pretrain_dir(task.seed)
                cfg.model = pretrained_architecture(read_run_config(pre).get("model"), cfg.model, pre / "config.yaml")
            return cfg

        diff = _recorded_differences(self.run_dir(task), config, "in the sweep's task")
        # Which pretraining a CLIP task starts from is the task's seed (metrics.json's init and seed are checked);
        # the path the job was given may be relative to wherever it ran.
        diff = [x for x in diff if not x.startswith("finetune.init:")]
        return diff + self._other_init_weights(task) if task.init == "clip" else diff

    def _other_init_weights(self, task: Task) -> list[str]:
        """[the line] where the task's finished run started from other weights than its seed's pretraining now
        holds: that pretraining was moved aside and run again (by hand or as the sweep's job) after it."""
        from ..train.checkpoint import BEST_MODEL

        run, best = self.run_dir(task), self.pretrain_dir(task.seed) / BEST_MODEL
        try:
            then = (read_identity(run) or {}).get(INIT_WEIGHTS) if (run / "metrics.json").exists() else None
            stat = best.stat()
        except (OSError, RunMismatchError):  # no pretraining to compare with; a damaged identity.json says itself
            return []
        if then is None:  # a fine-tune older than the record
            return []
        now = _weights_sha256(str(best), stat.st_mtime_ns, stat.st_size)
        return [] if now == then else [init_weights_changed(then, now, f"in {self.pretrain_dir(task.seed)}")]

    def pretrain_other_settings(self, seed: int) -> list[str]:
        """How the finished pretraining in pretrain/s<seed> differs from the one the manifest asks for
        (pretrain_overrides); [] where it does not, or where that cannot be told (_recorded_differences). A
        manifest created again with other --pretrain-set values over finished runs counted that pretraining, and
        the CLIP runs made from it, as done."""
        from ..train.jobs import pretrain_config

        diff = _recorded_differences(
            self.pretrain_dir(seed), lambda: pretrain_config(self.pretrain_config, self.pretrain_overrides(seed)),
            "in the sweep's manifest")
        # How it ran is not which pretraining it is: one made by hand on a GPU (device, bf16, compile) or with
        # --set train.threads=16 is the manifest's, and hours of it were refused with every CLIP run made from it.
        return [x for x in diff if x.split(":", 1)[0] not in HOW_IT_RAN]

    def pretrain_done(self, seed: int) -> bool:
        """pretrain/s<seed> holds a finished pretraining (a metrics.json the collector counts) of the manifest's
        settings. A damaged metrics.json is not done: the pretraining job, submitted again, resumes from its last
        checkpoint and writes it anew."""
        p = self.pretrain_dir(seed) / "metrics.json"
        if not p.exists():
            return False
        try:
            read_metrics(p, kind="pretrain")
        except BadMetrics:
            return False
        return not self.pretrain_other_settings(seed)

    def missing(self) -> list[Task]:
        return [t for t in self.tasks if not self.done(t)]

    def task_sets(self) -> list[str]:
        """The overrides every fine-tuning task gets: the sweep's store, then its --set values."""
        return store_overrides(self.store) + list(self.sets)

    def task_init(self, task: Task) -> str:
        return str(self.pretrain_dir(task.seed)) if task.init == "clip" else "scratch"

    def task_argv(self, task: Task) -> list[str]:
        """Arguments of `astrom3 finetune` (or `astrom3 baseline`) for one task (what the demo runs; run_task
        builds the same config)."""
        if task.init == BASELINE:
            return ["baseline", self.task_config(task).data.store, "--seed", str(task.seed), "--subset",
                    task.subset, "--out", str(self.run_dir(task))]
        argv = ["finetune", "--run-dir", str(self.run_dir(task)), "--mode", task.mode, "--subset", task.subset,
                "--seed", str(task.seed), "--init", self.task_init(task)]
        if self.finetune_config:
            argv += ["--config", self.finetune_config]
        if self.store:
            argv += ["--store", self.store]
        if self.sets:
            argv += ["--set", *self.sets]
        return argv

    def task_config(self, task: Task):
        """The RunConfig `astrom3 finetune` builds from `task_argv(task)` (a baseline task: the sweep's store and
        sets). A CLIP task's init directory need not exist yet (the sweep is being created), but it is named:
        a cells table gives fine-tuning from a pretraining its own values."""
        from ..train.jobs import finetune_config

        init = None if task.init == BASELINE else self.task_init(task)
        return finetune_config(self.finetune_config, self.task_sets(), mode=task.mode, subset=task.subset,
                               seed=task.seed, init=init)

    def pretrain_overrides(self, seed: int) -> list[str]:
        """The overrides of seed `seed`'s pretraining: the sweep's store, the seed, then its --pretrain-set values."""
        return store_overrides(self.store) + [f"data.seed={seed}"] + list(self.pretrain_sets)

    def pretrain_argv(self, seed: int) -> list[str]:
        """Arguments of `astrom3 pretrain` for seed `seed` (the config `pretrain_overrides` gives)."""
        argv = ["pretrain", "--run-dir", str(self.pretrain_dir(seed))]
        if self.pretrain_config:
            argv += ["--config", self.pretrain_config]
        if self.store:
            argv += ["--store", self.store]
        argv += ["--seed", str(seed)]
        return argv + (["--set", *self.pretrain_sets] if self.pretrain_sets else [])

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        d = asdict(self)
        d["root"] = str(self.root)
        write_json(self.root / MANIFEST, d)

    @classmethod
    def load(cls, root: str | Path) -> "Sweep":
        root = Path(root)
        p = root / MANIFEST
        if not p.exists():
            raise FileNotFoundError(f"{root} is not a sweep directory (no {MANIFEST})")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            d["root"] = root  # the directory may have moved since it was written
            d["tasks"] = [Task(**t) for t in d["tasks"]]
            return cls(**d)
        except (ValueError, TypeError, KeyError) as e:  # JSON, UTF-8, a list or a task of other keys
            raise ValueError(f"{p} is damaged ({type(e).__name__}: {e}): restore it, or move it aside and create "
                             f"the sweep again with the same grid (runs finished under runs/ count as done)") from None


_DROPOUT_OF = {"photo": ("lc_dropout",), "spectra": ("spec_dropout",), "meta": ("meta_dropout",),
               "all": ("lc_dropout", "spec_dropout", "meta_dropout")}
HPARAM_KEYS = ("lr", "beta1", "beta2", "weight_decay", "dropout", "plateau_factor", "plateau_patience",
               "warmup_epochs", "grad_clip", "epochs", "batch_size", "early_stop_patience")


def cell_hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """The per-cell fine-tuning values of a resolved config (a RunConfig dict or a run's config.yaml): what
    configs/finetune_cells.yaml sets. `dropout` lists the dropouts of the encoders the mode uses; grad_clip 0 is off."""
    o, t, m = cfg["optim"], cfg["train"], cfg["model"]
    mode = cfg["finetune"]["mode"]
    return {"lr": o["lr"], "beta1": o["betas"][0], "beta2": o["betas"][1], "weight_decay": o["weight_decay"],
            "dropout": [m[k] for k in _DROPOUT_OF[mode]], "plateau_factor": o["plateau_factor"],
            "plateau_patience": o["plateau_patience"], "warmup_epochs": o["warmup_epochs"],
            "grad_clip": o["grad_clip"], "epochs": t["epochs"], "batch_size": t["batch_size"],
            "early_stop_patience": t["early_stop_patience"], "cells": cfg.get("cells")}


def make_tasks(seeds=SPLIT_SEEDS, modes=MODES, subsets=tuple(SUBSET_FACTORS), inits=INITS) -> list[Task]:
    """The grid seed x mode x subset x init, ordered by seed so each seed's tasks form one array block; init
    "baseline" only with mode photo (the classical baseline reads light curves alone). A value given twice is
    refused (ValueError naming the option): its tasks would train into one run directory at the same time."""
    for option, values in (("--seeds", seeds), ("--modes", modes), ("--subsets", subsets), ("--inits", inits)):
        repeated = [v for i, v in enumerate(values) if v in tuple(values)[:i]]
        if repeated:
            raise ValueError(f"{option} lists {repeated[0]} twice: each value names one task directory")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {MODES}")
    for s in subsets:
        if s not in SUBSET_FACTORS:
            raise ValueError(f"unknown subset {s!r}; choose from {list(SUBSET_FACTORS)}")
    for i in inits:
        if i not in (*INITS, BASELINE):
            raise ValueError(f"unknown init {i!r}; choose from {(*INITS, BASELINE)}")
    if BASELINE in inits and "photo" not in modes:
        raise ValueError(f"init {BASELINE!r} is the classical light-curve classifier: it needs mode photo among "
                         f"the modes (got {list(modes)})")
    tasks = []
    for seed in seeds:
        if seed not in SPLIT_SEEDS:
            raise ValueError(f"unknown split seed {seed}; choose from {SPLIT_SEEDS}")
        for mode in modes:
            for subset in subsets:
                for init in inits:
                    if init == BASELINE and mode != "photo":
                        continue
                    tasks.append(Task(len(tasks), mode, subset, seed, init,
                                      f"runs/{mode}-{subset}-s{seed}-{init}"))
    return tasks


def run_task(sweep_dir: str | Path, index: int) -> int:
    """Run task `index` of a sweep in this process (what each array task does): `astrom3 finetune` (or
    `astrom3 baseline`) with the task's flags, through the same library calls, so the same config, log format and
    exit codes (0 done, 75 preempted after a checkpoint, 2 bad input)."""
    from ..train.command import run_command
    from ..train.jobs import run_finetune

    sw = Sweep.load(sweep_dir)
    if not 0 <= index < len(sw.tasks):
        raise IndexError(f"sweep {sweep_dir} has tasks 0..{len(sw.tasks) - 1}, not {index}")
    task = sw.tasks[index]
    if task.init == BASELINE:
        return run_command("baseline", lambda: _run_baseline_task(sw, task))
    return run_command("finetune", lambda: run_finetune(sw.task_config(task), str(sw.run_dir(task))),
                       fail_fast=True)


def _run_baseline_task(sw: Sweep, task: Task) -> None:
    from ..train.baseline import run_baseline
    from ..train.engine import cpu_threads

    cfg = sw.task_config(task)
    # The array task's cores (or train.threads where the sweep sets it) go to gradient boosting's OpenMP threads.
    run_baseline(cfg.data.store, str(sw.run_dir(task)), task.seed, task.subset,
                 threads=cpu_threads(cfg.train.threads, 1))


def run_missing_task(sw: Sweep, index: int) -> int:
    """Run task ``index`` unless it is done (then 0 at once). A run dir whose metrics.json does not count (truncated,
    corrupt) is run again: the job resumes from the run's last checkpoint and writes metrics.json anew."""
    task = sw.tasks[index]
    if sw.done(task):
        print(f"[sweep_task] task {index} ({task.name}) already has metrics.json: nothing to do", file=sys.stderr)
        return 0
    refusal = _refusal(sw, task)
    if refusal:
        print(f"sweep_task.py: error: task {index} ({task.name}): {refusal}", file=sys.stderr)
        return RunMismatchError.exit_code
    # A finished run of other settings is left to the job, which refuses it (exit 6) naming each difference.
    return run_task(sw.root, index)


def _refusal(sw: Sweep, task: Task) -> str | None:
    """Why the task must not run although it is not done, where the job itself would not say it: a CLIP task whose
    pretraining is of other settings (the job would resume the finished fine-tune made from it and call it done),
    and a damaged metrics.json without a checkpoint (the job would say "its results stand")."""
    from ..train.checkpoint import LATEST

    if task.init == "clip":
        pre = sw.pretrain_other_settings(task.seed)
        if pre:
            return (f"its pretraining {sw.pretrain_dir(task.seed)} was made with other settings than the sweep's "
                    f"manifest ({'; '.join(pre)}): move it aside, with this seed's CLIP runs made from it, and "
                    f"submit again (--resume-missing) to pretrain and fine-tune with the manifest's settings")
    d = sw.run_dir(task)
    # A baseline has no checkpoint: it fits again over its own files. A run of other settings: the job names them.
    if task.init == BASELINE or not (d / "metrics.json").exists() or (d / "checkpoints" / LATEST).exists() \
            or sw.other_settings(task):
        return None
    try:
        sw.result(task)
    except BadMetrics as e:
        return (f"{d / 'metrics.json'} does not count ({e}) and {d} holds no checkpoint to write it again from: "
                f"move {d} aside (or delete it) and submit again to train the task anew")
    return None


def summary(sw: Sweep) -> dict[str, Any]:
    return {"tasks": len(sw.tasks), "done": sum(sw.done(t) for t in sw.tasks), "seeds": sw.seeds}
