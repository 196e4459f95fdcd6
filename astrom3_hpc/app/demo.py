"""`astrom3 demo`: the whole story on the embedded synthetic survey, on one machine, without a scheduler.

store (2 MPI ranks) -> pretraining per split seed (2 ranks, torchrun) -> photometry fine-tuning on sub10 from
CLIP and from scratch per seed -> the results table. Every stage writes an ordinary run directory of a sweep,
so `astrom3 collect` and the SLURM/Submitit paths read the same files. Rerunning into the same --out resumes it
and skips finished stages: with the same configs, store and overrides as its manifest, and a grid that holds
the manifest's (more seeds, modes or subsets add tasks); other settings, or a finished run there that is not the
one the demo would start (another config file content, --ranks or store), are refused (exit 6) before the
manifest is written or any training starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..core.argtypes import positive_int
from ..core.errors import EXIT_FAILED
from ..core.interpreter import interpreter_first
from ..orchestration.submission import abs_path, repo_root
from ..orchestration.sweep import MANIFEST, Sweep, make_tasks
from ..train.fingerprint import RunMismatchError

log = logging.getLogger("astrom3")
CHECKOUT_WHY = "astrom3 demo starts its pretraining from jobs/ and reads its configs from configs/"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="end to end on the synthetic survey: store, pretrain, fine-tune, table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="sweep directory (default runs/demo)")
    p.add_argument("--store", default="data/synthetic.zarr", help="store to build or reuse")
    p.add_argument("-n", "--n-objects", type=positive_int, default=6000, help="synthetic objects (default 6000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 0], help="split seeds (default 42 0)")
    p.add_argument("--ranks", type=positive_int, default=2, help="processes for ingestion and pretraining (default 2)")
    p.add_argument("--pretrain-config", help="default: configs/demo.yaml of the checkout")
    p.add_argument("--finetune-config", help="default: configs/demo_finetune.yaml of the checkout")
    p.add_argument("--modes", nargs="+", default=["photo"])
    p.add_argument("--subsets", nargs="+", default=["sub10"])
    p.set_defaults(func=cmd_demo)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = interpreter_first(env.get("PATH", ""))
    # One thread per process, whatever the caller's shell says: the thread count changes how CPU kernels split
    # their sums, so it changes the bits (OMP_NUM_THREADS=2 instead of 1 changed 53 of 56 weight tensors after
    # 12 pretraining steps), and ProbSparse's top-k query selection amplifies that into different accuracies.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


class StageFailed(RuntimeError):
    """A stage's own process failed and said why on stderr: the demo adds one line naming the stage and exits 1
    (run_command reads `exit_code`), not a traceback of its own."""

    exit_code = EXIT_FAILED


def _run(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env())
    if r.returncode != 0:
        raise StageFailed(f"{what} failed with exit code {r.returncode}: {' '.join(cmd)}")
    log.info("%s: done in %.0f s", what, time.perf_counter() - t0)


def cmd_demo(args) -> int:
    from ..core.config import load_config

    t_start = time.perf_counter()
    # The checkout, not the installed package (a wheel holds no jobs/ or configs/): found before any work.
    root = repo_root("jobs/pretrain.py", CHECKOUT_WHY)
    args.pretrain_config = args.pretrain_config or str(root / "configs" / "demo.yaml")
    args.finetune_config = args.finetune_config or str(root / "configs" / "demo_finetune.yaml")
    # Before the manifest and the store: a bad config found at the pretraining stage left both naming it.
    for path in (args.pretrain_config, args.finetune_config):
        load_config(path)
    astrom3 = str(Path(sys.executable).parent / "astrom3")
    sweep_dir = Path(args.out)
    # Absolute, as `sweep create` writes them: `sweep submit --resume-missing` may run from another directory.
    wanted = Sweep(sweep_dir.resolve(), make_tasks(seeds=args.seeds, modes=args.modes, subsets=args.subsets),
                   finetune_config=abs_path(args.finetune_config), pretrain_config=abs_path(args.pretrain_config),
                   store=abs_path(args.store))
    existing = existing_sweep(wanted)  # before the store: a refused rerun builds nothing
    store = Path(args.store)
    if not store.exists():
        _run(["mpiexec", "-n", str(args.ranks), astrom3, "ingest", "synthetic", "-n", str(args.n_objects),
              "--out", str(store), "--on-error", "skip"], "build the synthetic store")
    else:
        from ..data.store import Store

        n = Store(store).n_objects
        # The README's other store lines build data/synthetic.zarr too: its size, not -n, sets the demo's numbers.
        log.log(logging.WARNING if n != args.n_objects else logging.INFO, "reusing store %s (%d objects%s)", store,
                n, f"; -n {args.n_objects} is ignored: pass --store NEW to build another" if n != args.n_objects
                else "")
    refuse_other_finished_runs(wanted, args.ranks)
    if existing is not None and _cells(existing) == _cells(wanted):
        sw = existing  # the same sweep: its manifest is left as it is
    else:  # a new sweep, or one whose grid this demo extends
        sw = wanted
        sw.save()
    for seed in args.seeds:
        if (sw.pretrain_dir(seed) / "metrics.json").exists():
            continue  # refuse_other_finished_runs checked it is this demo's pretraining
        _run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(args.ranks),
              str(root / "jobs" / "pretrain.py"), *sw.pretrain_argv(seed)[1:]], f"pretrain seed {seed}")
    # Fine-tuning tasks are single-process: run as many side by side as there are ranks.
    _fine_tune_side_by_side(sw, astrom3, args.ranks)
    from ..results.collect import collect

    results = collect(sweep_dir, stream=sys.stdout)
    _print_margin(sw)
    log.info("demo finished in %.1f min; results in %s", (time.perf_counter() - t_start) / 60,
             sweep_dir / "results")
    return 0 if results is not None else 1


# What a sweep's manifest records besides its grid, by the flag that sets it (the demo takes no --set: a sweep
# created with overrides is another sweep).
_SETTINGS = (("--pretrain-config", "pretrain_config"), ("--finetune-config", "finetune_config"), ("--store", "store"),
             ("--set", "sets"), ("--pretrain-set", "pretrain_sets"))
_GRID = (("--seeds", "seed"), ("--modes", "mode"), ("--subsets", "subset"), ("inits", "init"))


def _cells(sw: Sweep) -> set[tuple]:
    return {(t.mode, t.subset, t.seed, t.init) for t in sw.tasks}


def manifest_differences(old: Sweep, new: Sweep) -> list[str]:
    """How the sweep `new` differs from `old`, the one in its directory: [] where `new` may run there (the same
    settings, and every task of `old` in `new`'s grid). A grid that drops tasks is refused too: the manifest
    rewritten without them left their finished runs out of every table."""
    out = [f"{flag} {getattr(old, key)!r} in {MANIFEST}, {getattr(new, key)!r} now" for flag, key in _SETTINGS
           if getattr(old, key) != getattr(new, key)]
    if _cells(old) - _cells(new):
        for flag, key in _GRID:
            had, has = ([v for i, v in enumerate(vs) if v not in vs[:i]]
                        for vs in ([getattr(t, key) for t in sw.tasks] for sw in (old, new)))
            if set(had) - set(has):
                out.append(f"{flag} {' '.join(map(str, had))} in {MANIFEST}, {' '.join(map(str, has))} now")
    return out


def existing_sweep(wanted: Sweep) -> Sweep | None:
    """The sweep already in `wanted`'s directory (None where there is none), refused (RunMismatchError, exit 6) where
    its settings differ from `wanted`'s. Written over, its manifest named the new settings while the runs it
    skipped as finished were of the old ones, or every finished task read as missing."""
    if not (wanted.root / MANIFEST).exists():
        return None
    old = Sweep.load(wanted.root)
    diff = manifest_differences(old, wanted)
    if diff:
        raise RunMismatchError(f"{wanted.root} holds a sweep of other settings ({'; '.join(diff)}); nothing was "
                               "written. Rerun with its settings to resume it, or pass another --out")
    return old


def refuse_other_finished_runs(sw: Sweep, ranks: int) -> None:
    """RunMismatchError (exit 6) naming the differences where a finished run in `sw` is not the one the demo would
    start there (its identity.json against the demo's settings, as a job resuming it compares them): skipped as
    done, it was reported as the demo's result. A config file edited since keeps the manifest's path."""
    from ..data.store import Store
    from ..train.fingerprint import IDENTITY, differences, read_identity, run_identity
    from ..train.jobs import pretrain_config

    store = Store(sw.store)
    for seed in sw.seeds:
        d = sw.pretrain_dir(seed)
        if not (d / "metrics.json").exists():
            continue
        old = read_identity(d)
        if old is None:
            diff = [f"no {IDENTITY} to check it against the demo's settings"]
        else:
            new = run_identity(pretrain_config(sw.pretrain_config, sw.pretrain_overrides(seed)), store, ranks,
                               kind="pretrain")
            diff = [x.replace("world_size:", "world_size (--ranks):", 1) for x in differences(old, new, "now")]
        if diff:
            raise RunMismatchError(f"{d} holds a finished pretraining other than this demo's ({'; '.join(diff)}): "
                                   "rerun with its settings, or pass another --out")
    for t in sw.tasks:
        diff = sw.other_settings(t)
        if diff:
            raise RunMismatchError(f"{sw.run_dir(t)} holds a finished run other than this demo's task "
                                   f"({'; '.join(diff)}): rerun with its settings, or pass another --out")


def _fine_tune_side_by_side(sw: Sweep, astrom3: str, at_once: int) -> None:
    """Run the sweep's missing tasks, `at_once` processes at a time. When one fails (or the demo is interrupted),
    the others are stopped before the error: left running, they wrote on after the demo had exited, and a rerun
    started a second process on a run directory an orphan still held."""
    pending = sw.missing()
    running: list[tuple[subprocess.Popen, object]] = []
    try:
        while pending or running:
            while pending and len(running) < at_once:
                t = pending.pop(0)
                log.info("fine-tune %s", t.name)
                running.append((subprocess.Popen([astrom3, *sw.task_argv(t)], env=_env()), t))
            time.sleep(0.5)
            for p, t in list(running):
                if p.poll() is not None:
                    running.remove((p, t))
                    if p.returncode != 0:
                        raise StageFailed(f"fine-tuning task {t.name} failed (exit {p.returncode})")
    finally:
        for p, t in running:  # SIGTERM: each checkpoints at its next step and exits 75, so a rerun resumes it
            p.terminate()
        for p, t in running:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _print_margin(sw: Sweep) -> None:
    """CLIP minus scratch accuracy per (mode, subset), on both test sets. At demo size the sub-X test set holds a
    few dozen objects (one object moves the accuracy by ~2 points), so the full test set is the decisive one."""
    rows: dict = {}
    for t in sw.tasks:
        m = json.loads((sw.run_dir(t) / "metrics.json").read_text(encoding="utf-8"))
        for key in ("test",) if t.subset == "full" else ("test", "test_full"):  # one test set at full
            rows.setdefault((t.mode, t.subset, key), {}).setdefault(t.init, []).append(m[key])
    for (mode, subset, key), d in rows.items():
        if "clip" in d and "scratch" in d:
            c, s = (sum(r["accuracy"] for r in d[i]) / len(d[i]) for i in ("clip", "scratch"))
            where = f"{subset} test set" if key == "test" else "full test set"
            print(f"{mode} {subset}, {where} ({d['clip'][0]['n']} objects): CLIP {100 * c:.1f}% vs scratch "
                  f"{100 * s:.1f}% (margin {100 * (c - s):+.1f} points, mean over {len(d['clip'])} seeds)")
