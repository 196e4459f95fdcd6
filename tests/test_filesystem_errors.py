"""File systems as users' clusters have them: full, read-only, unwritable, a file or a link where a directory goes.

Full and read-only file systems are small tmpfs mounts (root: CI runs as root); an unprivileged user is a forked
child that drops to `nobody` after the parent imported what it runs (the checkout need not be readable to them).
Each error must end a command in one line naming the path, with the exit code the docs give (a full disk: 1,
DiskFullError; an unusable output: 2), and leave nothing half-written; a link must never be replaced or deleted
in place of what it points to.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
ROOT_ONLY = "mounting a tmpfs and dropping to nobody need root (CI runs as root)"


@pytest.fixture
def mount(tmp_path):
    """mount(name, size, ro=False): a tmpfs of `size` at tmp_path/name, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_ONLY)
    done: list[Path] = []

    def _mount(name: str, size: str, ro: bool = False) -> Path:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(d)],
                       check=True)
        done.append(d)
        return d

    yield _mount
    for d in reversed(done):
        subprocess.run(["umount", "-l", str(d)], check=False)


def _fill(d: Path) -> None:
    """Take every byte left on the file system of `d`."""
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _cli(argv: list[str], capsys, stream: str = "err") -> tuple[int, list[str]]:
    """`astrom3 ARGV`'s exit code and the lines it wrote to `stream`."""
    from astrom3_hpc.cli import main

    code = main(argv)
    return code, [line for line in getattr(capsys.readouterr(), stream).splitlines() if line.strip()]


@pytest.fixture
def shared():
    """A directory nobody can reach (pytest's tmp_path lies under a private 0700 one), removed at the end."""
    if os.geteuid() != 0:
        pytest.skip(ROOT_ONLY)
    d = Path(tempfile.mkdtemp(prefix="astrom3-fs-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(argv: list[str], err: Path) -> tuple[int, str]:
    """`astrom3 ARGV`'s exit code and output (stdout and stderr, into `err`) in a forked child running as nobody:
    what the command imports must be imported already, as the checkout need not be readable to nobody."""
    from astrom3_hpc.cli import main

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            sys.stdout = sys.stderr = open(err, "w", encoding="utf-8")
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = main(argv)
        except BaseException:
            traceback.print_exc()  # what the test then shows
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err.read_text(encoding="utf-8")


@pytest.fixture
def store(tiny_store, tmp_path) -> Path:
    """A private copy of the tiny store (tests damage it, or would write into it without their fix)."""
    return Path(shutil.copytree(tiny_store, tmp_path / "store.zarr"))


# ------------------------------------------------------------------------------------ 1. a run dir in a store

def test_a_run_dir_that_is_or_lies_in_a_store_is_refused_before_anything_is_written(store, capsys):
    """Catches `pretrain --run-dir some.zarr` writing the run into the store (verify still found it intact) and a
    later `ingest --overwrite` of it deleting the run; `baseline --out` likewise."""
    from astrom3_hpc.train.command import run_command
    from astrom3_hpc.train.rundir import RunDir, writing

    before = sorted(p.name for p in store.iterdir())
    for run in (store, store / "runs" / "pre"):
        made: list = []
        try:
            code = run_command("pretrain", lambda: made.append(RunDir(run)))
        finally:
            for r in made:
                r.close()
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"--run-dir {run} " in err[0] and "Zarr store" in err[0], err
    with pytest.raises(ValueError, match=f"--out {store}/bl lies inside the Zarr store"):
        with writing(store / "bl", flag="--out"):
            pass
    assert sorted(p.name for p in store.iterdir()) == before


# ------------------------------------------------------------------------------- 2. links to an output

def test_embed_writes_through_a_linked_output_to_its_target(tmp_path, monkeypatch):
    """Catches `embed --out-dir D` with D/embeddings.zarr a link replacing the link by a local directory: the
    target (scratch) kept the old embeddings, and a `.embeddings.zarr.old-*` link was left behind."""
    from astrom3_hpc.science import embed

    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"schema_version": 1}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  store: {store}\n")
    target = tmp_path / "scratch" / "embeddings.zarr"
    target.mkdir(parents=True)
    (target / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"schema": embed.EMBEDDINGS_SCHEMA}}))
    link = tmp_path / "out" / "embeddings.zarr"
    link.parent.mkdir()
    link.symlink_to(target)
    given: list[Path] = []
    monkeypatch.setattr(embed, "_embed_run", lambda run_dir, store, splits, out, *rest: given.append(out))
    embed.embed_run(run, out=link)
    assert given == [target]


def test_replacing_a_linked_directory_leaves_no_old_link_and_its_target_alone(tmp_path):
    """Catches replace_dir moving a link aside and rmtree(ignore_errors) silently leaving it as `.NAME.old-*`."""
    from astrom3_hpc.core.atomic import replace_dir

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "kept").write_text("old")
    dst, src = tmp_path / "e.zarr", tmp_path / "new"
    dst.symlink_to(target)
    src.mkdir()
    (src / "zarr.json").write_text("{}")
    replace_dir(src, dst)
    assert dst.is_dir() and not dst.is_symlink() and (dst / "zarr.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.zarr", "elsewhere"]
    assert (target / "kept").read_text() == "old"


def test_clean_store_temp_removes_left_links_not_what_they_point_to(tmp_path, capsys):
    """Catches `clean-store-temp` ending in `OSError: Cannot call rmtree on a symbolic link` on the `.old-` link
    an earlier embed left, and missing a dangling one."""
    target = tmp_path / "scratch"
    target.mkdir()
    (target / "kept").write_text("data")
    store = tmp_path / "e.zarr"
    store.mkdir()
    (tmp_path / ".e.zarr.old-1-abcd").symlink_to(target)
    (tmp_path / ".e.zarr.old-2-ef01").symlink_to(tmp_path / "gone")
    code, err = _cli(["clean-store-temp", str(store)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.zarr", "scratch"]
    assert (target / "kept").read_text() == "data"


# --------------------------------------------------------------------------------- 3. full disk in a run dir

def test_a_full_disk_in_a_run_dir_is_one_disk_full_error_naming_the_file(mount, capsys):
    """Catches the run's own writes (config.yaml, metrics rows) ending in a bare `[Errno 28]` naming no file, and
    closing train.log on the full disk replacing the job's DiskFullError with a new OSError (plus a
    `--- Logging error ---` block per line)."""
    from astrom3_hpc.core.atomic import append_jsonl, write_json, write_text
    from astrom3_hpc.core.errors import DiskFullError
    from astrom3_hpc.train.rundir import RunLog

    d = mount("full", "64k")
    log = RunLog(d).attach()
    import logging

    logging.getLogger("astrom3").warning("a line before the disk fills")
    _fill(d)
    for write, name in ((write_text, "config.yaml"), (write_json, "metrics.json"), (append_jsonl, "steps.jsonl")):
        with pytest.raises(DiskFullError, match=f"^{d / name}: no space left on device") as e:
            write(d / name, {"x": "y" * 8192} if name != "config.yaml" else "z" * 8192)
        assert e.value.errno == errno.ENOSPC
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temporary file left
    with pytest.raises(DiskFullError, match="best_model.pt"):
        with log.recording("pretrain on rank 0"):
            for _ in range(64):  # more than the file's buffer holds
                logging.getLogger("astrom3").warning("x" * 1024)
            raise DiskFullError(f"{d}/best_model.pt: no space left on device")
    err = capsys.readouterr().err
    assert "Logging error" not in err and err.count("cannot write") == 1, err


# ----------------------------------------------------------------------- 4. an install the user cannot write

def test_deepspeed_ops_go_to_a_per_user_cache_where_the_venv_is_not_writable(mount, tmp_path, monkeypatch):
    """Catches TORCH_EXTENSIONS_DIR defaulting to <venv>/torch_extensions where the user cannot write it: torch
    locks the op's directory even to load the built op, and every training job failed with a PermissionError."""
    from astrom3_hpc.train import engine

    for var in ("TORCH_EXTENSIONS_DIR", "DS_ACCELERATOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", os.environ["PATH"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def chosen(prefix: Path) -> str:
        monkeypatch.setattr(sys, "prefix", str(prefix))
        os.environ.pop("TORCH_EXTENSIONS_DIR", None)
        engine.deepspeed_environment()
        return os.environ["TORCH_EXTENSIONS_DIR"]

    rw = tmp_path / "venv"
    (rw / "torch_extensions" / "deepspeed_shm_comm").mkdir(parents=True)
    assert chosen(rw) == str(rw / "torch_extensions")  # a writable venv: unchanged (CI builds the op there)
    own = str(tmp_path / "cache" / "astrom3" / "torch_extensions")
    op = mount("venv/torch_extensions/deepspeed_shm_comm", "64k")  # the op built, its directory not writable
    subprocess.run(["mount", "-o", "remount,ro", str(op)], check=True)
    assert chosen(rw) == own
    ro = mount("ro-venv", "64k", ro=True)  # no op built, the venv not writable
    assert chosen(ro) == own
    monkeypatch.setenv("XDG_CACHE_HOME", str(ro / "cache"))
    with pytest.raises(ValueError, match="set TORCH_EXTENSIONS_DIR to a directory you can write"):
        chosen(ro)


# ------------------------------------------------------------------------------ 5. outputs that cannot be one

def test_an_output_under_a_file_or_on_a_read_only_file_system_is_one_line(tmp_path, mount, capsys):
    """Catches `[Errno 17] File exists: 'regfile'` for an --out under a regular file (say it is a file), and
    NotADirectoryError or a read-only file system ending in a traceback instead of one line (exit 2)."""
    regfile = tmp_path / "regfile"
    regfile.write_text("")
    ro = mount("ro", "64k", ro=True)
    for out, says in ((regfile / "x.zarr", f"{regfile} is a file, not a directory"),
                      (regfile / "sub" / "x.zarr", f"{regfile} is a file, not a directory"),
                      (ro / "x.zarr", "Read-only file system")):
        code, err = _cli(["ingest", "synthetic", "-n", "64", "--out", str(out), "--no-progress"], capsys)
        assert code == 2 and len(err) == 1 and says in err[0] and "Errno 17" not in err[0], (out, err)
        assert ".tmp" not in err[0], err  # the temporary sibling's name is none the user gave


def test_an_output_the_user_cannot_write_is_one_line(shared, capsys):
    """Catches PermissionError missing from the expected errors: `predict`, `embed`, `ingest`, `collect`,
    `sweep create`, training into a directory the user cannot write ended in a 33-69-line traceback."""
    ro = shared / "ro"
    ro.mkdir(mode=0o555)
    argv = ["ingest", "synthetic", "-n", "64", "--out", str(ro / "s.zarr"), "--no-progress"]
    assert _cli(argv[:-2] + [str(shared / "warm.zarr"), "--no-progress"], capsys)[0] == 0  # imports done here
    code, err = _as_nobody(argv, shared / "err")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Permission denied" in lines[0] and str(ro) in lines[0], err
    assert f"cannot write {ro / 's.zarr'}: Permission denied" in lines[0] and ".tmp" not in lines[0], err


# ---------------------------------------------------------------------------------- 6. an unreadable chunk

def test_verify_lists_chunks_it_cannot_read(tiny_store, shared, capsys):
    """Catches check_file catching only FileNotFoundError: verify ended in a traceback on an unreadable chunk (a
    colleague's umask-077 file, a broken link) and listed nothing after it, instead of exit 3 listing it."""
    store = Path(shutil.copytree(tiny_store, shared / "store.zarr"))
    chunks = sorted(p for p in (store / "spec").rglob("*") if p.is_file() and "c" in p.relative_to(store).parts)
    loop, private = chunks[0], chunks[-1]
    loop.unlink()
    loop.symlink_to(loop.name)  # stat fails with ELOOP, for root too
    code, out = _cli(["verify", str(store)], capsys, "out")
    assert code == 3 and any(str(loop) in line and "unreadable" in line for line in out), out
    private.chmod(0o600)
    code, err = _as_nobody(["verify", str(store)], shared / "err")
    assert code == 3 and f"{private}: chunk" in err and "unreadable: Permission denied" in err, err
    assert str(loop) in err  # listed too: the unreadable one did not stop the check


# ------------------------------------------------------------------------------- 7. full disk outside training

def test_ingest_into_a_full_file_system_is_one_line_exit_1_leaving_nothing(mount, capsys):
    """Catches ingest reporting a full disk as bad input (exit 2) with a 57-line zarr traceback in its message,
    and a temporary store left where its creation ran out of space."""
    for size in ("12k", "200k"):
        d = mount(f"full-{size}", size)
        code, err = _cli(["ingest", "synthetic", "-n", "400", "--out", str(d / "s.zarr"), "--no-progress"], capsys)
        assert code == 1 and len(err) == 1, (size, err)
        assert f"{d / 's.zarr'}: no space left on device" in err[0] and "nothing was written" in err[0], err
        assert list(d.iterdir()) == []


@pytest.fixture
def untrained_run(tiny_store, tmp_path) -> Path:
    """A pretraining run dir of configs/test.yaml with untrained weights: embed needs a model, not a good one."""
    from astrom3_hpc.core.config import dump_config, load_config
    from astrom3_hpc.model import build_clip
    from astrom3_hpc.science.common import run_config
    from astrom3_hpc.train.checkpoint import BEST_MODEL, save_weights

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dump_config(load_config(ROOT / "configs" / "test.yaml", [f"data.store={tiny_store}"]), run / "config.yaml")
    save_weights(build_clip(run_config(run).model), run / BEST_MODEL, {"epoch": 0, "seed": 42, "kind": "pretrain"})
    return run


def test_embed_into_a_full_file_system_is_one_disk_full_error_leaving_nothing(untrained_run, mount):
    """Catches embed's full disk as a raw zarr OSError (creating the store) or a `RuntimeError: embedding failed`
    carrying a 96-line traceback (filling it), instead of one DiskFullError naming the output."""
    from astrom3_hpc.core.errors import DiskFullError
    from astrom3_hpc.science.embed import embed_run

    for size in ("16k", "160k"):  # full while the tables are written; full while the vectors are
        d = mount(f"full-{size}", size)
        out = d / "embeddings.zarr"
        with pytest.raises(DiskFullError, match=f"^{out}: no space left on device .*nothing was written"):
            embed_run(untrained_run, out=out, batch_size=320)
        assert list(d.iterdir()) == []


def test_only_a_temporary_sibling_that_could_not_be_made_is_named_as_its_output(tmp_path):
    """The rewrite names the output where an atomic write could not create its sibling; a leftover sibling that
    exists (one clean-store-temp could not delete) is named as it is, not as the healthy store beside it."""
    from astrom3_hpc.core.errors import plain

    sibling = tmp_path / ".s.zarr.tmp-ab12cd34"
    e = PermissionError(errno.EACCES, "Permission denied", str(sibling))
    assert plain(e) == f"cannot write {tmp_path / 's.zarr'}: Permission denied ({tmp_path})"
    sibling.mkdir()
    assert plain(e) is e
