"""Every job writes `<run dir>/train.log`: all ranks' warnings and errors (named by rank), rank 0's info,
appended on resume, with the file mode the umask gives."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from dist_helpers import run_distributed

ROOT = Path(__file__).resolve().parents[1]


def pretrain_rank(store: str, run_dir: str, stop_after: int | None, tag: str) -> int:
    """One rank of a real 2-rank pretraining job, run as `astrom3 pretrain` runs it; rank 1 warns once while
    the job runs (a warning only rank 1 emits, which the old logging kept on rank 1's terminal only)."""
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.pretrain import Pretrainer

    logging.basicConfig(level=logging.INFO)  # what the CLI sets up
    cfg = load_config(ROOT / "configs" / "test.yaml", [f"data.store={store}", "train.epochs=2",
                                                         "train.max_steps_per_epoch=3", "train.log_every_steps=1"])
    t = Pretrainer(cfg, run_dir, stop_after_steps=stop_after)
    setup_data = t.setup_data

    def setup_data_and_warn():
        setup_data()
        if t.rank == 1:
            logging.getLogger("astrom3").warning("probe warning from the second rank (%s)", tag)
        logging.getLogger("astrom3").info("probe info from rank %d (%s)", t.rank, tag)

    t.setup_data = setup_data_and_warn
    return t.run_job()


@pytest.mark.timeout(900)
def test_two_rank_pretraining_logs_every_rank_into_the_run_dir_and_appends_on_resume(tiny_store, tmp_path):
    run = tmp_path / "run"
    codes = run_distributed(pretrain_rank, 2, args=(str(tiny_store), str(run), 4, "first"), init=False,
                            timeout=400)
    assert codes == [75, 75]  # stopped after step 4 with a checkpoint
    log = run / "train.log"
    first = log.read_text()
    assert "rank 1 WARNING astrom3: probe warning from the second rank (first)" in first, first
    assert "rank 0 INFO astrom3: probe info from rank 0 (first)" in first
    assert "probe info from rank 1" not in first  # other ranks' info stays out
    assert re.search(r"rank 0 WARNING astrom3: stopped at step 4", first), first
    assert os.stat(log).st_mode & 0o777 == 0o666 & ~_umask()

    codes = run_distributed(pretrain_rank, 2, args=(str(tiny_store), str(run), None, "resumed"), init=False,
                            timeout=400)
    assert codes == [0, 0]
    text = log.read_text()
    assert text.startswith(first)  # appended, not replaced
    rest = text[len(first):]
    assert "rank 0 INFO astrom3: resumed from step4" in rest, rest
    assert "rank 1 WARNING astrom3: probe warning from the second rank (resumed)" in rest
    assert "rank 0 INFO astrom3: finished:" in rest
    assert (run / "metrics.json").exists()


def failing_rank(run_dir: str) -> None:
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.pretrain import Pretrainer

    cfg = load_config(ROOT / "configs" / "test.yaml", [f"data.store={run_dir}/no-such.zarr"])
    Pretrainer(cfg, run_dir).run_job()


def test_an_error_that_ends_a_job_is_in_its_log_with_the_traceback(tmp_path):
    from dist_helpers import DistributedRunError

    with pytest.raises(DistributedRunError):
        run_distributed(failing_rank, 1, args=(str(tmp_path / "run"),), init=False, timeout=200)
    text = (tmp_path / "run" / "train.log").read_text()
    assert "rank 0 ERROR astrom3: pretrain on rank 0:" in text and "no-such.zarr" in text, text
    assert "Traceback (most recent call last)" in text


def test_the_log_handler_is_removed_when_the_job_ends(tmp_path):
    from astrom3_hpc.train.rundir import RunDir

    root = logging.getLogger()
    before = list(root.handlers)
    run = RunDir(tmp_path / "r")
    assert len(root.handlers) == len(before) + 1
    run.close()
    assert root.handlers == before
    logging.getLogger("astrom3").warning("after the job")
    assert not (tmp_path / "r" / "train.log").exists()


def _umask() -> int:
    from astrom3_hpc.core.atomic import _umask

    return _umask()


def test_evaluate_embeddings_records_its_error_in_the_run_log(tmp_path):
    import subprocess
    import sys

    from dist_helpers import child_env

    from astrom3_hpc.core.config import dump_config, load_config

    run = tmp_path / "run"
    run.mkdir()
    dump_config(load_config(ROOT / "configs" / "test.yaml", [f"data.store={tmp_path}/gone.zarr"]),
                run / "config.yaml")
    r = subprocess.run([str(Path(sys.executable).parent / "astrom3"), "evaluate-embeddings", str(run)],
                       env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "gone.zarr" in r.stderr
    text = (run / "train.log").read_text()
    assert "rank 0 ERROR astrom3: evaluate-embeddings on rank 0:" in text and "gone.zarr" in text, text


def test_rank0_keeps_its_own_info_and_every_library_warning(tmp_path, caplog):
    from astrom3_hpc.train.rundir import RunDir

    caplog.set_level(logging.INFO)
    run = RunDir(tmp_path / "r")
    try:
        logging.getLogger("astrom3").info("own progress")
        logging.getLogger("compilers.C.base").info("gcc probe")  # what DeepSpeed's op builder logs at start
        logging.getLogger("DeepSpeed").warning("a library warning")
    finally:
        run.close()
    text = (tmp_path / "r" / "train.log").read_text()
    assert "rank 0 INFO astrom3: own progress" in text and "gcc probe" not in text
    assert "rank 0 WARNING DeepSpeed: a library warning" in text


def test_a_train_log_that_cannot_be_created_is_one_line_and_the_job_goes_on(tmp_path, capsys):
    """Catches logging opening the delayed file outside the guard that routes write errors to handleError: a
    train.log a full disk or inode quota could not create (here: its directory is a file) was a traceback that
    ended the job at its first line."""
    from astrom3_hpc.train.rundir import RunLog

    blocked = tmp_path / "run"
    blocked.write_text("not a directory")
    handler = RunLog(blocked).attach()
    try:
        for i in range(3):
            logging.getLogger("astrom3").warning("line %d", i)
    finally:
        handler.detach()
    err = capsys.readouterr().err
    assert err.count(f"astrom3: cannot write {blocked / 'train.log'}") == 1 and "Traceback" not in err, err
    assert "Logging error" not in err
