"""Run identity: what defines a run, recorded in its directory, so that a rerun resumes only the same run.

`identity.json` holds the run's kind (pretrain, finetune), the resolved config (less the keys that only change
how fast or how verbosely the same steps run), the store's identity (content fingerprint from its checksum table,
object count; its path is recorded for people, not compared: a moved store is the same store, a store rebuilt in
place is not), the split seed, the world size and the global batch size. A rerun into a directory that holds a run
must match it field for field; otherwise it is refused with the differences listed (RunMismatchError). A fine-tune
from a pretraining also records the sha256 of the tensors of the best_model.pt it started from (`init_weights`):
a pretraining moved aside and run again in the same directory is another pretraining under the same path, unless
it trained the same tensors. An identity.json
written before the kind was recorded takes it from the run's run.json. The same record goes
into the best weights' metadata, so that fine-tuning's leak check reads what the weights were trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.atomic import write_json
from ..core.config import RunConfig
from ..core.errors import EXIT_OTHER_RUN, first_line

IDENTITY = "identity.json"
# What makes a directory a sweep (orchestration.sweep): a run dir below one may be a sweep task's.
SWEEP_MANIFEST = "manifest.json"
# Same steps, same results (tested): these may change between a run and its resumption.
MECHANICS = ("name", "data.store", "data.num_workers", "data.in_memory", "train.log_every_steps",
             "train.checkpoint_every_epochs",
             # The cells file only chooses values, which are compared themselves: a run's config.yaml (cells: null)
             # then resumes the run it describes.
             "cells")
# What a directory that holds a run contains (any of these): a rerun must match it or be refused.
RUN_FILES = (IDENTITY, "config.yaml", "steps.jsonl", "metrics.jsonl", "checkpoints/latest.json",
             "best_model.pt", "metrics.json")


INIT_WEIGHTS = "init_weights"


def init_weights_changed(then: Any, now: Any, ours: str = "now") -> str:
    return (f"{INIT_WEIGHTS}: started from pretrained weights of sha256 {str(then)[:12]}, the pretraining's "
            f"best_model.pt is {str(now)[:12]} {ours} (pretrained again since)")


class RunMismatchError(RuntimeError):
    """A run directory holds another run (other kind, config, store, seed, world size or batch size)."""

    exit_code = EXIT_OTHER_RUN
    same_on_every_rank = True  # every rank reads the same files: the CLI prints it once


class OtherRunError(RunMismatchError):
    """The run dir holds another run. The error is the refused run's: it is not written into the other run's
    train.log (RunLog.record_error), whose owner would find there a traceback of a run that never ran."""

    recorded_in_run_log = False


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _empty(v: Any) -> bool:
    return v is None or (not isinstance(v, bool) and v in (0, "", [], {}))


def same_source(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Two stores' source descriptions agree. A key one of them lacks counts as agreeing where the other holds it
    empty: a later ingest describes more (`unsplit_ids: []`), and a store rebuilt from the same files by it
    must not stop the runs made on the old one from resuming."""
    if old is None or new is None:
        return old == new
    return all(old.get(k) == new.get(k) or (k not in old and _empty(new[k])) or (k not in new and _empty(old[k]))
               for k in set(old) | set(new))


def store_identity(store) -> dict[str, Any]:
    """Content, not path: the checksum table's fingerprint (None for a store built before checksums) and the
    object count and source description, which catch a store rebuilt in place even without a table."""
    return {"fingerprint": store.fingerprint, "n_objects": store.n_objects,
            "source": store.attrs.get("provenance", {}).get("source")}


def run_identity(cfg: RunConfig, store, world_size: int, kind: str | None = None) -> dict[str, Any]:
    """`kind` ("pretrain", "finetune"): a pretraining run and a fine-tune of default finetune.* settings have
    the same config, and one must not resume the other's checkpoint."""
    out = {"config": _compared_config(cfg), "store": store_identity(store),
           "store_path": str(Path(store.path).resolve()), "seed": cfg.data.seed, "world_size": world_size,
           "batch_size": cfg.train.batch_size}
    return out if kind is None else {"kind": kind, **out}


def _compared_config(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in _flatten(cfg.to_dict()).items() if k not in MECHANICS}


def settings_differences(run_dir: str | Path, cfg: RunConfig, ours: str = "now") -> list[str] | None:
    """How `cfg` differs from the settings of the run in `run_dir` (its identity.json's config and batch size; the
    store and world size are the job's to check, which opens the store). [] for the same settings, None where the
    directory records no identity. A sweep task counts as done only where its finished run is the task's.
    `ours` names where cfg's values come from in the lines ("in the sweep's task")."""
    old = read_identity(run_dir)
    if old is None:
        return None
    return differences({"config": old["config"], "batch_size": old.get("batch_size")},
                       {"config": _compared_config(cfg), "batch_size": cfg.train.batch_size}, ours)


def digest(identity: dict[str, Any]) -> str:
    core = {k: v for k, v in identity.items() if k != "store_path"}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], ours: str = "now") -> list[str]:
    a = _flatten({k: v for k, v in old.items() if k not in ("store_path", "digest")})
    b = _flatten({k: v for k, v in new.items() if k not in ("store_path", "digest")})
    # A key added to the config after the run was written, at its default, is that run's behaviour (new keys
    # default to what the code did before them): an upgrade of astrom3 between a job and its requeue resumes.
    defaults = _flatten({"config": _flatten(RunConfig().to_dict())})
    mechanics = {f"config.{k}" for k in MECHANICS}  # in an identity.json written before they were mechanics
    out = []
    for k in sorted(set(a) | set(b)):
        if k.startswith("config.data.seed") or k.startswith("config.train.batch_size") or k in mechanics:
            continue  # seed and batch_size are reported once, as themselves
        if k == "config.finetune.init" and _same_path(a.get(k), b.get(k)):
            continue  # `--init p42` and `--init ./p42` (or its absolute path) name one pretraining run
        if k not in a and k in defaults and b.get(k) == defaults[k]:
            continue
        if k.startswith("store.source.") and (k not in a and _empty(b.get(k)) or k not in b and _empty(a.get(k))):
            continue  # described by a later ingest, empty for this store (same_source)
        if k == "kind" and not (k in a and k in b):
            continue  # an identity.json written before the key, whose run says nowhere what it was
        if k == INIT_WEIGHTS and k not in a:
            continue  # a fine-tune started before the hash was recorded: its pretraining cannot be told apart
        if k == INIT_WEIGHTS and a[k] != b.get(k):
            out.append(init_weights_changed(a[k], b.get(k), ours))
            continue
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            name = k.removeprefix("config.")
            out.append(f"{name}: {a.get(k, '<absent>')!r} in the run dir, {b.get(k, '<absent>')!r} {ours}")
    return out


def _same_path(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve()


def _anchored_init(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with the relative finetune.init it recorded (before --init was recorded absolute) read as the
    directory it named, where the run dir tells which: the init_dir its metrics.json records (a finished run),
    else the one directory above the run dir that holds that path (the job started there, --run-dir below it). A
    rerun of that job from elsewhere then resumes; where neither tells, the path is read against the current
    directory (_same_path), as before."""
    config = old.get("config", {})
    rel, now = config.get("finetune.init"), new.get("config", {}).get("finetune.init")
    if not (isinstance(rel, str) and isinstance(now, str)) or rel == "scratch" or Path(rel).is_absolute():
        return old
    try:
        named = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("init_dir")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str):
        candidates = {Path(named).resolve()}
    else:
        candidates = {(up / rel).resolve() for up in run_dir.resolve().parents if (up / rel).is_dir()}
    if candidates != {Path(now).resolve()}:
        return old
    return {**old, "config": {**config, "finetune.init": now}}


def _sweep_init(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with its finetune.init read as `new`'s where the run dir sits in a sweep (the nearest directory above
    it holding a sweep manifest), `new`'s init is that sweep's pretraining of the run's seed
    (`<sweep>/pretrain/s<seed>`), and the recorded one was a sweep's pretraining of that seed too
    (`<elsewhere>/pretrain/s<seed>`) that is gone or holds the same finished run (its metrics.json byte for byte:
    a copy). A sweep task records its init absolute: the sweep moved (`mv`), its half-done CLIP tasks were
    refused for ever. A recorded pretraining that is still there and another run stays a difference."""
    config = old.get("config", {})
    was, now = config.get("finetune.init"), new.get("config", {}).get("finetune.init")
    seed = config.get("data.seed")
    if not (isinstance(was, str) and isinstance(now, str) and isinstance(seed, int)) or not Path(was).is_absolute():
        return old
    tail = ("pretrain", f"s{seed}")
    run_dir = run_dir.resolve()
    root = next((up for up in run_dir.parents if (up / SWEEP_MANIFEST).is_file()), None)
    if root is None or Path(was).parts[-2:] != tail or Path(now).resolve() != root.joinpath(*tail):
        return old
    recorded = Path(was) / "metrics.json"
    if Path(was).exists() and not (recorded.is_file() and _same_bytes(recorded, root.joinpath(*tail, "metrics.json"))):
        return old
    return {**old, "config": {**config, "finetune.init": now}}


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def held_run(run_dir: Path) -> list[str]:
    return [f for f in RUN_FILES if (run_dir / f).exists()]


def check_run_dir(run_dir: str | Path, identity: dict[str, Any], resume: bool) -> None:
    """Refuse to resume (or, with `resume` False, to overwrite) a directory holding a different run."""
    run_dir = Path(run_dir)
    held = held_run(run_dir)
    if not held:
        return
    if not resume:
        raise OtherRunError(
            f"--no-resume: run dir {run_dir} already holds a run ({', '.join(held)}); starting over there would "
            f"mix two runs' files. Give a new --run-dir, or delete {run_dir} first.")
    old = read_identity(run_dir)
    if old is None:
        raise OtherRunError(
            f"run dir {run_dir} holds a run without {IDENTITY} (written by an older astrom3, or interrupted "
            f"before its first write), so it cannot be checked to be this run: rerun with a new --run-dir.")
    if "kind" not in old and "kind" in identity:
        old = {**old, **_recorded_kind(run_dir)}
    diff = differences(_sweep_init(run_dir, _anchored_init(run_dir, old, identity), identity), identity)
    if old.get("kind") and identity.get("kind") and old["kind"] != identity["kind"]:
        diff = [d for d in diff if d.startswith("kind:")]  # a baseline's settings are no fine-tune's: the kind says it
    if diff:
        raise OtherRunError(
            f"run dir {run_dir} holds another run; resuming it with these settings would mix two runs:\n  "
            + "\n  ".join(diff) + "\nRerun with the same settings to resume it, or start this one with "
            "--run-dir NEW_DIR.")


def write_identity(run_dir: str | Path, identity: dict[str, Any]) -> None:
    write_json(Path(run_dir) / IDENTITY, {**identity, "digest": digest(identity)})


def read_identity(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's identity.json; None where there is none. A damaged one is refused (RunMismatchError: exit 6, as
    a missing one in a directory that holds a run): the run in it cannot be checked to be this one."""
    p = Path(run_dir) / IDENTITY
    if not p.exists():
        return None
    try:
        old = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"not readable JSON ({first_line(e)})"
    else:
        if isinstance(old, dict) and isinstance(old.get("config"), dict):
            return old
        why = "not an identity record (an object with a \"config\" expected)"
    raise RunMismatchError(f"{p} is damaged: {why}, so the run in {Path(run_dir)} cannot be checked to be this "
                           f"run; start this one with --run-dir NEW_DIR")


def _recorded_kind(run_dir: Path) -> dict[str, Any]:
    """{"kind": ...} of a run whose identity.json predates the key, from its run.json or metrics.json (both
    written by every pretraining and fine-tuning run); {} where neither says."""
    for name in ("run.json", "metrics.json"):
        try:
            kind = json.loads((run_dir / name).read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(kind, str):
            return {"kind": kind}
    return {}


def require_pretraining(run_dir: str | Path, what: str) -> None:
    """Refuse (ValueError) a run dir whose run.json or metrics.json names another kind than a pretraining's (an
    imported one's says "pretrain" too). A fine-tune's weights loaded as a pretraining's made a "clip" result of
    a fine-tune of a fine-tune; evaluate-embeddings on one crashed inside the model."""
    kind = _recorded_kind(Path(run_dir)).get("kind")
    if kind not in (None, "pretrain"):
        raise ValueError(f"{what} {run_dir} is a {kind} run, not a pretraining run (`astrom3 pretrain` or "
                         f"`astrom3 import-weights` makes one)")
