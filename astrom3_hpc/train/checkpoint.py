"""Checkpoints: DeepSpeed engine state on every rank, plus our client state and each rank's RNG states.

Layout: checkpoints/<tag>/ (DeepSpeed files, rng_rank<r>.pt), and checkpoints/latest.json written atomically
by rank 0 after every rank finished writing: a checkpoint is valid only once latest.json names it.
"""

from __future__ import annotations

import os
import random
import shutil
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.atomic import atomic_path, write_json
from ..core.errors import DiskFullError, causes, first_line, no_space
from ..distributed.env import barrier, get_rank


def rng_state() -> dict[str, Any]:
    """This rank's RNG states. CUDA: the current device's generator only (the one this rank draws from), so a
    checkpoint written where each task saw 4 GPUs loads where it sees 1 (one GPU per task), and back."""
    cuda = torch.cuda.is_available()
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda_device": torch.cuda.get_rng_state(torch.cuda.current_device()) if cuda else None}


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if not torch.cuda.is_available():
        return
    state = s.get("cuda_device")
    if state is None and s.get("cuda"):  # older checkpoints: every visible device's state, by index
        states = s["cuda"]
        state = states[min(torch.cuda.current_device(), len(states) - 1)]
    if state is not None:
        torch.cuda.set_rng_state(state, torch.cuda.current_device())


def _refuse_non_finite(module: torch.nn.Module, what: str) -> None:
    # Weights are replicated across data-parallel ranks, so every rank refuses together (no rank left waiting).
    from .finite import NonFiniteError, all_finite

    if not all_finite(module):
        raise NonFiniteError(f"refusing to write {what}: the model holds NaN or infinite weights")


def _tag_order(name: str) -> tuple[int, int]:
    """step<S> and step<S>.<n> (a later save at the same step) in the order they were written; others first."""
    step, _, n = name[4:].partition(".")
    return (int(step), int(n or 0)) if step.isdigit() and (n or "0").isdigit() else (-1, -1)


def _unused_tag(ckpt_dir: Path, tag: str) -> str:
    """`tag`, or `tag.1`, `tag.2`... where a checkpoint of that name exists, decided by rank 0 for all. A resumed
    run's first save can fall on the step its checkpoint was taken at (stopped at an epoch's last batch: the
    validation and the end-of-epoch save are still to come), and DeepSpeed writes its files in place: rewriting
    the checkpoint latest.json names would leave no intact one if the job died during the write."""
    from ..distributed.env import broadcast_object

    fresh, n = tag, 0
    while get_rank() == 0 and (ckpt_dir / fresh).exists():
        n += 1
        fresh = f"{tag}.{n}"
    return broadcast_object(fresh)


def save(engine, ckpt_dir: Path, tag: str, client_state: dict[str, Any], keep: int = 2,
         best: Path | None = None) -> None:
    """Every rank's engine state and RNG states under a fresh tag, then latest.json naming it. `best`: the run's
    best weights so far, kept with the checkpoint (a hard link: save_weights replaces the file, never rewrites it),
    so that a resume from it can put them back (restore_best). A write that fails removes the new tag's directory
    (latest.json does not name it) and, where the disk or quota is full, is a DiskFullError saying so."""
    ckpt_dir = Path(ckpt_dir)
    tag = _unused_tag(ckpt_dir, tag)
    _refuse_non_finite(engine.module, f"checkpoint {ckpt_dir / tag}")
    if get_rank() == 0:
        # Room for `keep` checkpoints, not keep + 1: the one latest.json names stays until the new one is
        # complete, so a failed write still leaves it to resume from.
        _prune(ckpt_dir, keep - 1, tag)
    with _writing(None, ckpt_dir, tag):  # DeepSpeed's files: which one failed is found out afterwards
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    rng_file = ckpt_dir / tag / f"rng_rank{get_rank()}.pt"
    with _atomic_writing(rng_file, ckpt_dir, tag) as tmp:
        torch.save(rng_state(), tmp)
    if get_rank() == 0 and best is not None and Path(best).exists():
        with _writing(ckpt_dir / tag / BEST_MODEL, ckpt_dir, tag):
            _link_or_copy(Path(best), ckpt_dir / tag / BEST_MODEL)
    barrier()
    if get_rank() == 0:
        pos = client_state.get("state", {})
        with _writing(ckpt_dir / LATEST, ckpt_dir, tag):
            write_json(ckpt_dir / LATEST, {"tag": tag, "step": pos.get("step"), "epoch": pos.get("epoch"),
                                           "batch_in_epoch": pos.get("batch_in_epoch")})
        _prune(ckpt_dir, keep, tag)
    barrier()


def _prune(ckpt_dir: Path, keep: int, current: str) -> None:
    """Keep the `keep` newest complete checkpoints; never the one latest.json names or `current` (being
    written). A tag without its rank-0 RNG file was cut short by a killed job: it goes, never taking an intact
    one's place among the kept."""
    if not ckpt_dir.is_dir():
        return
    named = _resume_point(ckpt_dir)
    complete = []
    for t in _kept_tags(ckpt_dir):
        if t in (named, current) or (ckpt_dir / t / "rng_rank0.pt").is_file():
            complete.append(t)
        else:
            shutil.rmtree(ckpt_dir / t, ignore_errors=True)
    for old in complete[:max(len(complete) - keep, 0)]:
        if old not in (named, current):
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)


@contextmanager
def _writing(file: Path | None, ckpt_dir: Path, tag: str | None = None) -> Iterator[None]:
    """Around a write into the run (`file`; None: the newest file in checkpoint `tag`, DeepSpeed's). A failure
    removes checkpoint `tag`, cut short and named by no latest.json, and where the disk or quota is full becomes
    one line naming the file and the checkpoint a rerun resumes from; any other error stays itself. Inside an
    atomic_path block, so that the space is measured before the partial file is removed."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - torch's zip writer turns ENOSPC into a RuntimeError
        tag_dir = ckpt_dir / tag if tag else None
        if file is None and tag_dir is not None:
            file = _newest_file(tag_dir, e)
        file = file or tag_dir or ckpt_dir
        where = file.parent if file.parent.is_dir() else ckpt_dir
        full = no_space(e, where) if where.is_dir() else None
        resumes = _resume_point(ckpt_dir)
        if tag_dir is not None and tag_dir.is_dir() and tag != resumes:
            shutil.rmtree(tag_dir, ignore_errors=True)
        if full is None:
            raise
        during = f" while writing checkpoint {tag} (removed)" if tag else ""
        rerun = f"it resumes from checkpoint {resumes}" if resumes else "it runs from the start (no checkpoint yet)"
        raise DiskFullError(f"{file}: {full[1]}{during}; free space and rerun the same command: {rerun}",
                            full[0]) from e


@contextmanager
def _atomic_writing(file: Path, ckpt_dir: Path, tag: str | None = None) -> Iterator[Path]:
    """atomic_path(file) under _writing's guard, the temporary file's creation included: with no inode left that
    creation is what fails, and the checkpoint cut short must go as after any other failed write."""
    with ExitStack() as stack:
        with _writing(file, ckpt_dir, tag):
            tmp = stack.enter_context(atomic_path(file))
        with _writing(file, ckpt_dir, tag):  # inside atomic_path: the space is measured before tmp goes
            yield tmp


def _newest_file(tag_dir: Path, e: BaseException) -> Path | None:
    """The file a failed DeepSpeed save was writing: the one its error names, else the last one it created."""
    named = next((x.filename for x in causes(e) if isinstance(x, OSError) and isinstance(x.filename, str)), None)
    if named:
        return Path(named)
    files = [p for p in tag_dir.iterdir() if p.is_file()] if tag_dir.is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


def _resume_point(ckpt_dir: Path) -> str | None:
    """The checkpoint a rerun resumes from (latest.json's), or None: from the start, or latest.json unreadable."""
    try:
        return latest_tag(ckpt_dir) if ckpt_dir.is_dir() else None
    except ValueError:
        return None


LATEST = "latest.json"
MODEL_STATES = "mp_rank_00_model_states.pt"


def _kept_tags(ckpt_dir: Path) -> list[str]:
    return sorted((p.name for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step")), key=_tag_order)


def _damaged(ckpt_dir: Path, what: str, tag: str | None = None) -> ValueError:
    """One line: what is wrong with which file, and how to go on (a ValueError: exit 2). A rerun resumes from
    the checkpoint latest.json names, so pointing it at an intact earlier one (kept with its best weights)
    resumes from there; nothing here picks another checkpoint silently."""
    others = [t for t in _kept_tags(ckpt_dir) if t != tag] if ckpt_dir.is_dir() else []
    if not others:
        return ValueError(f"{what}; no other checkpoint is kept: start over with a new --run-dir")
    which = "the previous checkpoint" if tag else "the newest checkpoint kept"
    delete = f"delete {ckpt_dir / tag} and " if tag and (ckpt_dir / tag).exists() else ""
    return ValueError(f"{what}; to resume from {which}, {delete}write {{\"tag\": \"{others[-1]}\"}} into "
                      f"{ckpt_dir / LATEST}, or start over with a new --run-dir")


def latest_tag(ckpt_dir: Path) -> str | None:
    """The tag latest.json names; None where there is no latest.json (no checkpoint yet)."""
    import json

    ckpt_dir = Path(ckpt_dir)
    p = ckpt_dir / LATEST
    if not p.exists():
        return None
    try:
        entry = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _damaged(ckpt_dir, f"{p} is damaged: not readable JSON ({first_line(e, 160)})") from e
    tag = entry.get("tag") if isinstance(entry, dict) else None
    if not isinstance(tag, str) or not tag or "/" in tag or tag.startswith("."):
        raise _damaged(ckpt_dir, f"{p} is damaged: it names no checkpoint (an object with a \"tag\" such as "
                                 f"\"step4\" expected, found {json.dumps(entry)[:80]})")
    return tag


def _unreadable(path: Path) -> str | None:
    """Why `path` is not a torch.save file (a zip archive: its central directory is read, not the data), or
    None. A file cut short by a full disk or a partial copy loses its central directory first."""
    if not path.is_file():
        return "is missing"
    try:
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (OSError, zipfile.BadZipFile) as e:
        return f"is truncated or not a torch file ({e})"
    return None


def load(engine, ckpt_dir: Path, tag: str) -> dict[str, Any]:
    """Resume `engine` and this rank's RNG states from checkpoint `tag`. A missing or damaged file is one error
    naming it (ValueError: exit 2), found before DeepSpeed reads anything where it can be."""
    ckpt_dir = Path(ckpt_dir)
    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise _damaged(ckpt_dir, f"{ckpt_dir / LATEST} names checkpoint {tag}, but {tag_dir} does not exist", tag)
    rng_file = tag_dir / f"rng_rank{get_rank()}.pt"
    needed = [tag_dir / MODEL_STATES, rng_file]
    if int(getattr(engine, "zero_optimization_stage", lambda: 0)() or 0) > 0:
        needed.append(tag_dir / f"zero_pp_rank_{get_rank()}_mp_rank_00_optim_states.pt")
    for f in needed:
        why = _unreadable(f)
        if why is not None:
            # The world size is part of the run's identity (a rerun on another one is refused before this), so a
            # missing rng_rank<r>.pt is a file lost, not a checkpoint of another world size.
            raise _damaged(ckpt_dir, f"damaged checkpoint: {f} {why}", tag)
    try:
        path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=False)
    except Exception as e:  # noqa: BLE001 - zip, pickle and DeepSpeed errors name no file; train.log keeps e
        raise _damaged(ckpt_dir, f"checkpoint {tag_dir} could not be loaded ({first_line(e, 160)})", tag) from e
    if path is None:
        raise _damaged(ckpt_dir, f"checkpoint {tag_dir} could not be loaded (DeepSpeed found none there)", tag)
    try:
        state = torch.load(rng_file, weights_only=False)
        set_rng_state(state)
    except Exception as e:  # noqa: BLE001 - as above
        raise _damaged(ckpt_dir, f"damaged checkpoint: {rng_file} could not be loaded ({first_line(e, 160)})",
                       tag) from e
    return client


BEST_MODEL = "best_model.pt"


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst as src's content, appearing at once: a hard link where the filesystem allows it, else a copy."""
    with atomic_path(dst) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def restore_best(tag_dir: Path, best: Path) -> bool:
    """Put back the best weights a checkpoint kept, where the run's file is another one. An attempt that died
    after improving on the checkpoint's best (and before its next checkpoint) left its own best_model.pt; the
    resumed run keeps the checkpoint's early-stopping state, so where its replay does not improve on that, it
    would evaluate weights no step of the surviving run produced. True where they were put back."""
    kept = Path(tag_dir) / BEST_MODEL
    if not kept.exists() or (best.exists() and os.path.samefile(kept, best)):
        return False
    _link_or_copy(kept, best)
    return True


def save_weights(model: torch.nn.Module, path: Path, meta: dict) -> None:
    """A portable fp32 state dict (what fine-tuning and the science tools load), written atomically."""
    _refuse_non_finite(model, str(path))
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
             for k, v in model.state_dict().items()}
    path = Path(path)
    with _atomic_writing(path, path.parent / "checkpoints") as tmp:
        torch.save({"state_dict": state, "meta": meta}, tmp)


def weights_digest(path: str | Path) -> str:
    """sha256 of a weights file's tensors (names, dtypes, shapes, bytes), not of the file: torch.save names its
    archive after the temporary file it writes, so the same tensors saved twice differ byte for byte."""
    import hashlib

    h = hashlib.sha256()
    state = load_weights(Path(path))["state_dict"]
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights(path: Path) -> dict:
    """A best_model.pt as save_weights wrote it. weights_only: a run dir is often someone else's (--init, predict,
    ensemble), and a full unpickle would run whatever code the file names."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist (did the run finish?)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and OS errors alike: one line naming the file
        raise ValueError(f"{path} could not be read as a run's weights ({first_line(e)}): damaged, or not written "
                         f"by astrom3 (a foreign checkpoint goes through `astrom3 import-weights`)") from e
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"{path} holds no state_dict: not a best_model.pt written by astrom3")
    return blob
