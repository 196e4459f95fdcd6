"""What the sbatch and Submitit back ends share: the repository's job scripts, the sweep manifest they submit,
the per-seed plan (which tasks, whether pretraining must run first), ``<sweep>/jobs.json`` and the scheduler
queries (is a controller up, which of our jobs are still queued).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..core.atomic import write_json
from ..core.constants import SPLIT_SEEDS, SUBSET_FACTORS
from ..core.errors import first_line
from ..core.locks import LockHeld, held
from .sweep import BASELINE, INITS, MANIFEST, MODES, Sweep, cell_hparams, make_tasks


JOBS_FILE = "jobs.json"
JOBS_LOCK = ".jobs.lock"
SUBMITIT_DIR = "submitit"


def repo_root(needs: str = "slurm/pretrain.sh", why: str = "the sbatch back end needs its scripts") -> Path:
    """The repository holding slurm/, jobs/ and configs/: $ASTROM3_ROOT, else the checkout this package lives in
    (an installed wheel holds the package alone)."""
    env = os.environ.get("ASTROM3_ROOT")
    cand = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (cand / needs).exists():
        raise FileNotFoundError(f"{cand} has no {needs}: set ASTROM3_ROOT to the astrom3-hpc checkout ({why})")
    return cand


def abs_path(p: str | os.PathLike | None) -> str | None:
    """The absolute path of a config or store, whether or not it exists yet: jobs run from another directory (an
    array task cd's to the repository), and a store built after `sweep create` was looked for there."""
    if p is None or p == "":
        return None
    return str(Path(p).expanduser().resolve())


def array_spec(indices: Iterable[int], parallel: int | None = None) -> str:
    """Compact ``--array`` value: [0,1,2,3,7,9,10] -> "0-3,7,9-10" (+ "%P" when ``parallel``)."""
    idx = sorted(set(int(i) for i in indices))
    if not idx:
        raise ValueError("no array indices")
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    spec = ",".join(parts)
    return f"{spec}%{parallel}" if parallel else spec


def slurm_available(timeout: float = 10.0) -> bool:
    """Whether a SLURM controller answers here (``scontrol ping``)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "UP" in r.stdout


def default_cluster() -> str:
    """"slurm" when a controller answers, else "local". (Submitit's AutoExecutor would pick SLURM whenever srun is
    on PATH, daemons or not: the suite always passes ``cluster=`` explicitly.)"""
    return "slurm" if slurm_available() else "local"


class QueueUnknown(RuntimeError):
    """squeue did not say which jobs are queued (not on PATH, timed out, failed): not the same as "none"."""


def queued_jobs(job_ids: Iterable[str]) -> list[str]:
    """Those of ``job_ids`` (or their array tasks) the controller still lists as pending or running. Raises
    :class:`QueueUnknown` when squeue cannot tell: a busy or unreachable controller must not read as "nothing
    queued" (a resubmission would then start a second job in a run directory still in use). Only squeue's
    "Invalid job id specified" (every job long finished and purged) counts as nothing queued."""
    ids = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not ids:
        return []
    cmd = ["squeue", "-h", "-o", "%i", "-j", ",".join(ids)]
    if shutil.which("squeue") is None:
        raise QueueUnknown(f"squeue is not on PATH, so whether jobs {', '.join(ids)} are queued is unknown")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise QueueUnknown(f"`{' '.join(cmd)}` did not answer within 30 s (controller busy or down)") from None
    except (OSError, subprocess.SubprocessError) as e:
        raise QueueUnknown(f"`{' '.join(cmd)}` could not run: {e}") from e
    if r.returncode != 0:
        if "Invalid job id specified" in r.stderr:
            return []
        raise QueueUnknown(f"`{' '.join(cmd)}` failed (rc {r.returncode}): "
                           f"{r.stderr.strip() or r.stdout.strip() or 'no message'}")
    return sorted({ln.split("_")[0].strip() for ln in r.stdout.splitlines() if ln.strip()})


def combine_dependency(ours: str | None, user: str | None) -> str | None:
    """The ``--dependency`` of a job that must wait for ``ours`` (a fine-tuning array's afterok on its pretraining)
    while the user also asked for ``user`` (``--sbatch-arg=--dependency=...``): both, comma-joined (SLURM: all of
    them). Letting the user's replace ours would start CLIP tasks before their pretrained weights exist."""
    if not ours or not user:
        return ours or user
    if "?" in user:
        raise ValueError(f"--sbatch-arg=--dependency={user}: a '?' list (any one of them) cannot be joined with "
                         f"the array's {ours} on its pretraining (SLURM allows ',' or '?', not both); use ','")
    return f"{ours},{user}"


# ---------------------------------------------------------------------------------------------- jobs.json

def read_jobs(sweep_root: str | Path) -> dict[str, Any]:
    """``<sweep>/jobs.json``. A damaged one is refused naming it (ValueError: exit 2), before anything is submitted:
    read as "nothing running", it let a submission start jobs beside running ones and then fail to record them."""
    p = Path(sweep_root) / JOBS_FILE
    if not p.exists():
        return {"sweep": str(Path(sweep_root).resolve()), "job_ids": [], "submissions": []}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"not readable JSON ({first_line(e)})"
    else:
        if isinstance(data, dict) and isinstance(data.get("submissions", []), list) \
                and isinstance(data.get("job_ids", []), list):
            return data
        why = "not a jobs record (an object with \"submissions\" and \"job_ids\" lists expected)"
    raise ValueError(f"{p} is damaged: {why}. It records the jobs this sweep submitted: check that none is still "
                     f"queued or running (squeue, ps), then move it aside to submit again")


# The jobs lock of each sweep this process holds: flock locks of two descriptors conflict even within one process,
# so a submission holding its sweep's lock would wait on itself when it records its jobs.
_JOBS_LOCKS_HELD: set[Path] = set()


@contextmanager
def jobs_locked(sweep_root: str | Path, wait: str | None = None) -> Iterator[None]:
    """Hold ``<sweep>/.jobs.lock`` (:func:`~astrom3_hpc.core.locks.held`: ``wait`` None raises LockHeld at once);
    a block nested in one that holds it already just runs."""
    lock = Path(sweep_root).resolve() / JOBS_LOCK
    if lock in _JOBS_LOCKS_HELD:
        yield
        return
    with held(lock, wait=wait):
        _JOBS_LOCKS_HELD.add(lock)
        try:
            yield
        finally:
            _JOBS_LOCKS_HELD.discard(lock)


@contextmanager
def submitting(sweep_root: str | Path) -> Iterator[None]:
    """Hold the sweep's jobs lock for a whole submission: its guard (:func:`check_not_running`), its submits and
    its records. Two submissions that overlapped both passed the guard and started every task twice. A second one
    is refused at once, not made to wait: with the local executor the first holds the lock until its last chunk
    has started, which can be the whole sweep."""
    with ExitStack() as stack:
        try:
            stack.enter_context(jobs_locked(sweep_root))
        except LockHeld:  # the acquisition only: a LockHeld of the submission itself (a run dir's) is its own
            root = Path(sweep_root).resolve()
            raise RuntimeError(f"another submission to sweep {root} is under way (a `sweep submit` or `launch sweep` "
                               f"holds {JOBS_LOCK}; with the local executor until its last chunk has started): "
                               f"wait for it to end, then see `astrom3 sweep status`") from None
        yield


def record_submission(sweep_root: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one submission to ``<sweep>/jobs.json`` (atomically), or rewrite the recorded one of the same ``id``
    (a submission recording its jobs as it submits them); ``job_ids`` lists every id ever submitted. Under the
    sweep's jobs lock: an atomic write alone let two processes each append to what they had read, one losing the
    other's."""
    with jobs_locked(sweep_root, wait="another process is recording jobs in jobs.json"):
        data = read_jobs(sweep_root)
        subs = data.setdefault("submissions", [])
        key = entry.get("id")
        same = [i for i, s in enumerate(subs) if key and isinstance(s, dict) and s.get("id") == key]
        if same:
            subs[same[0]] = entry
        else:
            subs.append(entry)
        ids = list(data.get("job_ids", []))
        for j in entry.get("pretrain", []):
            ids.append(str(j["job_id"]))
        for a in entry.get("finetune", []):
            ids.append(str(a["array_job_id"]))
        data["job_ids"] = list(dict.fromkeys(ids))
        write_json(Path(sweep_root) / JOBS_FILE, data)
    return data


def record_partial(sweep_root: str | Path, entry: dict[str, Any], exc: BaseException) -> str | None:
    """Record the jobs of a submission that ``exc`` stopped half-way (``entry`` holds those submitted before it) and
    return what to add to the error: they will run in the sweep's directories, and a retry that did not know them
    would submit a second pretraining into the same run directory. None where nothing was submitted."""
    done = [f"pretraining seed {p['seed']}: job {p['job_id']}" for p in entry.get("pretrain", [])]
    done += [f"fine-tuning seed {a['seed']}: array {a['array_job_id']}" for a in entry.get("finetune", [])]
    if not done:
        return None
    record_submission(sweep_root, {**entry, "error": f"stopped by: {str(exc).strip() or type(exc).__name__}"})
    return (f"already submitted before this failure and recorded in {Path(sweep_root) / JOBS_FILE}: "
            f"{'; '.join(done)}. They run as submitted: scancel them, or let them finish; then resubmit with "
            f"--resume-missing (refused while they are queued, unless --force)")


def reraise_partial(sweep_root: str | Path, entry: dict[str, Any], exc: BaseException) -> None:
    """Called in ``except BaseException`` around a submission loop: record what ``exc`` stopped half-way
    (:func:`record_partial`) and raise. Ctrl-C and SystemExit are re-raised as they are (the command still ends as
    interrupted), after the note on the jobs left running went to stderr; an error becomes a RuntimeError carrying
    that note. Catching only Exception would let Ctrl-C during a slow sbatch, or during the local executor's wait
    for a pretraining, forget jobs that keep running, and a retry would start a second one in the same run dir."""
    note = record_partial(sweep_root, entry, exc)
    if note is None:
        raise exc
    if not isinstance(exc, Exception):
        print(f"interrupted ({type(exc).__name__}): {note}", file=sys.stderr)
        raise exc
    raise RuntimeError(f"{exc}\n{note}") from exc


def previous_job_ids(sweep_root: Path) -> list[str]:
    try:
        return [str(j) for j in read_jobs(sweep_root).get("job_ids", [])]
    except (OSError, json.JSONDecodeError):
        return []


def _submission_ids(sub: dict[str, Any]) -> list[str]:
    ids = [str(p["job_id"]) for p in sub.get("pretrain", [])]
    ids += [str(a["array_job_id"]) for a in sub.get("finetune", [])]
    return ids + [str(p) for p in sub.get("pids", [])]


def local_process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs a Submitit local job (its controller's command line names
    submitit: a pid reused by another program, or a finished controller left as a zombie, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc: os.kill's answer is all there is
        return True


def running_jobs(sweep_root: str | Path) -> list[str]:
    """The jobs recorded in ``<sweep>/jobs.json`` that are still queued or running: SLURM jobs as squeue lists
    them, local-executor jobs (whose ids are process ids, which squeue cannot see) as ``pid <n>`` while their
    process lives. Debug-executor jobs ran inside the submitting process and are over. Raises
    :class:`QueueUnknown` when that cannot be told (squeue failed; local jobs recorded on another host)."""
    data = read_jobs(sweep_root)
    alive: list[str] = []
    here = socket.gethostname()
    for sub in data.get("submissions", []):
        if sub.get("cluster", "slurm") != "local":
            continue
        ids = _submission_ids(sub)
        pids = sorted({int(i) for i in ids if i.isdigit()})
        host = sub.get("host")
        if host and host != here and pids:
            raise QueueUnknown(f"local-executor jobs (pids {', '.join(map(str, pids))}) ran on host {host}: their "
                               f"processes cannot be checked from {here}")
        alive += [f"pid {p}" for p in pids if local_process_alive(p)]
    return queued_jobs(slurm_job_ids(data)) + sorted(set(alive))


def slurm_job_ids(jobs: dict[str, Any]) -> list[str]:
    """The ids in a jobs.json record (:func:`read_jobs`) that SLURM knows: local and debug executors' ids are
    process ids or Submitit's own, which squeue and sacct would read as (someone else's) SLURM job ids."""
    not_slurm = {i for sub in jobs.get("submissions", []) if sub.get("cluster", "slurm") != "slurm"
                 for i in _submission_ids(sub)}
    return [j for j in (str(j) for j in jobs.get("job_ids", [])) if j not in not_slurm]


# ---------------------------------------------------------------------------------------------- sweep manifest

def create_sweep(root: str | Path, *, seeds: Sequence[int] = SPLIT_SEEDS, modes: Sequence[str] = MODES,
                 subsets: Sequence[str] = tuple(SUBSET_FACTORS), inits: Sequence[str] = INITS,
                 finetune_config: str | None = None, pretrain_config: str | None = None, store: str | None = None,
                 sets: Sequence[str] = (), pretrain_sets: Sequence[str] = (), exist_ok: bool = False) -> Sweep:
    """Write ``<root>/manifest.json`` for the grid seeds x modes x subsets x inits (configs and store made absolute,
    so jobs find them from any working directory). An existing manifest is loaded when ``exist_ok``, else an error."""
    root = Path(root).resolve()
    if (root / MANIFEST).exists():
        if exist_ok:
            return Sweep.load(root)
        raise FileExistsError(f"{root / MANIFEST} exists: submit it as it is, or remove the sweep directory")
    refuse_dedicated_keys(sets, pretrain_sets)
    tasks = make_tasks(seeds=tuple(int(s) for s in seeds), modes=tuple(modes), subsets=tuple(subsets),
                       inits=tuple(inits))
    sw = Sweep(root, tasks, finetune_config=abs_path(finetune_config), pretrain_config=abs_path(pretrain_config),
               store=abs_path(store), sets=resolve_path_overrides(sets),
               pretrain_sets=resolve_path_overrides(pretrain_sets))
    # Resolve every task's config now: a bad key or a modality the store lacks fails here, not in an array task
    # hours later, and the manifest records each task's per-cell values (configs/finetune_cells.yaml through the
    # config's `cells:` key).
    configs = {t.index: sw.task_config(t) for t in tasks}
    for t in tasks:
        t.hparams = None if t.init == BASELINE else cell_hparams(configs[t.index].to_dict())
    refuse_unreadable(sw, configs)
    sw.save()
    return sw


# Keys a sweep sets itself, per job: the launch paths apply --set before them (`astrom3 pretrain`, the demo's
# fine-tunes) or after them (array tasks, Submitit pretraining, the create-time check), so one given in --set would
# pretrain on one store and fine-tune on another, or override the grid's seeds in some jobs only.
# The grid's own keys were silently overruled in every task (`--set finetune.mode=spectra` ran photo), and
# `--pretrain-set data.subset=sub10` failed every pretraining job at run time.
DEDICATED_KEYS = {"data.store": "--store (create_sweep's store=), which every job of the sweep reads",
                  "data.seed": "--seeds (create_sweep's seeds=): each task and its pretraining take the seed of its "
                               "grid cell",
                  "finetune.mode": "--modes (create_sweep's modes=): each task takes the mode of its grid cell",
                  "data.subset": "--subsets (create_sweep's subsets=): each task takes the subset of its grid cell, "
                                 "and pretraining always uses the full train split",
                  "finetune.init": "--inits (create_sweep's inits=): each task starts from its seed's pretraining "
                                   "(clip) or from scratch"}


def refuse_dedicated_keys(sets: Sequence[str], pretrain_sets: Sequence[str]) -> None:
    """ValueError naming the flag to use where ``--set``/``--pretrain-set`` holds a key of :data:`DEDICATED_KEYS`."""
    import yaml

    from ..core.config import parse_overrides

    for flag, values in (("--set", sets), ("--pretrain-set", pretrain_sets)):
        for v in values:
            try:  # parsed as the config will be: `data={store: x}` names data.store too
                tree = parse_overrides([str(v)])
            except (ValueError, yaml.YAMLError):  # malformed: resolving the config reports it
                continue
            for key in DEDICATED_KEYS:
                section, name = key.split(".")
                if isinstance(tree.get(section), dict) and name in tree[section]:
                    raise ValueError(f"{flag} {v}: a sweep sets {key} itself; use {DEDICATED_KEYS[key]}")


def resolve_path_overrides(values: Sequence[str]) -> list[str]:
    """``values`` with ``cells=FILE`` made absolute as load_config resolves it when `sweep create` checks the tasks
    (against the working directory): saved as typed, the array task, which runs from the repository, looked for
    the file there. data.store, the other path key, never gets here (:data:`DEDICATED_KEYS`)."""
    from ..core.config import parse_overrides, path_override

    out = []
    for v in values:
        try:
            tree = parse_overrides([str(v)])
        except ValueError:  # malformed: resolving the config reports it
            tree = {}
        cells = tree.get("cells")
        out.append(path_override("cells", Path(cells).resolve()) if isinstance(cells, str) and cells else str(v))
    return out


def refuse_unreadable(sw: Sweep, configs: dict[int, Any]) -> None:
    """ValueError where a task (or the pretraining of its CLIP init) reads a modality that no object of its store
    has: the trainer would refuse it too, but only once its array task runs."""
    from ..model.classifier import mode_modalities  # torch: not for `astrom3 --help`
    from ..train.jobs import pretrain_config

    readers: list[tuple[str, Any, set[str]]] = []  # (who, store path, modalities it reads)
    for t in sw.tasks:
        cfg = configs[t.index]
        reads = {"photo"} if t.init == BASELINE else set(mode_modalities(cfg.model.modalities, t.mode))
        readers.append((f"mode {t.mode}", cfg.data.store, reads))
    for seed in sorted({t.seed for t in sw.tasks if t.init == "clip"}):
        pre = pretrain_config(sw.pretrain_config, sw.pretrain_overrides(seed))
        readers.append(("init clip's pretraining", pre.data.store, set(pre.model.modalities)))
    held = {path: held_modalities(path) for path in {path for _, path, _ in readers}}
    lacking: dict[str, set[str]] = {}
    for who, path, reads in readers:
        if reads - held[path]:
            lacking.setdefault(who, set()).update(reads - held[path])
    if lacking:
        what = "; ".join(f"{who} reads {', '.join(sorted(mods))}" for who, mods in sorted(lacking.items()))
        stores = sorted(held)
        raise ValueError(f"{', '.join(stores)} holds {' / '.join(', '.join(sorted(held[p])) for p in stores)} only: "
                         f"{what}. Choose --modes and --inits that read what it holds")


def held_modalities(store: str) -> frozenset[str]:
    """The modalities some object of `store` has; every modality where the store does not exist yet."""
    from ..data.store import MODALITIES, Store, modalities_held

    if not Path(store).exists():
        return frozenset(MODALITIES)
    return frozenset(modalities_held(Store(store, check_chunks=False).root["present"][:]))


def plan(sw: Sweep, resume_missing: bool) -> dict[int, dict[str, Any]]:
    """Per seed: the task indices to run and whether its pretraining must run first (not where it is done:
    Sweep.pretrain_done). ValueError, before anything is submitted, where a seed to run from CLIP holds a
    pretraining of other settings than the manifest's: its job would be refused (exit 6), and the seed's CLIP
    tasks would resume fine-tunes made from it."""
    tasks = sw.missing() if resume_missing else list(sw.tasks)
    plan: dict[int, dict[str, Any]] = {}
    for t in tasks:
        plan.setdefault(t.seed, {"tasks": [], "needs_pretrain": False})
        plan[t.seed]["tasks"].append(t.index)
        if t.init == "clip":
            plan[t.seed]["needs_pretrain"] = True
    for seed, p in plan.items():
        other = sw.pretrain_other_settings(seed) if p["needs_pretrain"] else []
        if other:
            raise ValueError(f"{sw.pretrain_dir(seed)} holds a pretraining of other settings than the sweep's manifest "
                             f"({'; '.join(other)}): move it aside, with the CLIP runs of seed {seed} made from it "
                             f"(runs/*-s{seed}-clip), then submit again")
        p["pretrain_done"] = sw.pretrain_done(seed)
        p["submit_pretrain"] = p["needs_pretrain"] and not p["pretrain_done"]
    return dict(sorted(plan.items()))


def check_not_running(sw: Sweep, force: bool) -> None:
    """RuntimeError while jobs recorded in jobs.json are queued or running, or when squeue cannot tell, unless
    ``force``."""
    try:
        busy = running_jobs(sw.root)
    except QueueUnknown as e:
        if force:
            print(f"warning: --force: submitting although {e}", file=sys.stderr)
            return
        raise RuntimeError(f"cannot tell whether the jobs of sweep {sw.root} recorded in {JOBS_FILE} are still "
                           f"queued or running: {e}. Retry when squeue answers, or pass --force if you know none is "
                           f"(two jobs in one run directory corrupt it)") from e
    if busy and not force:
        raise RuntimeError(f"jobs {', '.join(busy)} of sweep {sw.root} are still queued or running: wait for them, "
                           f"scancel (or kill) them, or pass --force (two jobs in one run directory corrupt it)")
