"""Signals outside a command's own handling: while `astrom3` builds its parser (every command's imports) and while
the interpreter shuts down after the results are written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import astrom3_hpc.cli as cli


def test_ctrl_c_while_the_parser_is_built_is_one_line_and_exit_130(monkeypatch, capsys):
    """Catches the traceback a Ctrl-C in the first quarter second printed (the parser imports every command)."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["info", "x"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "astrom3: interrupted" and "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_job_signal_while_the_parser_is_built_exits_75(monkeypatch, capsys, sig):
    """Catches exit 143 / 138 (killed by the signal) where the job scripts requeue on 75."""
    def signalled():
        os.kill(os.getpid(), sig)
        raise AssertionError("the signal's handler should have stopped the build")

    monkeypatch.setattr(cli, "build_parser", signalled)
    assert cli.main(["info", "x"]) == 75
    assert f"astrom3 stopped by {sig.name}" in capsys.readouterr().err
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler)  # the caller's handler again


def test_a_job_signal_after_the_command_finished_keeps_its_exit_code(tmp_path):
    """Catches exit 143 for a SIGTERM that came while the interpreter shut down after the results were written."""
    code = (f"import os, signal, sys; from astrom3_hpc import cli; sys.argv = ['astrom3', 'info', '{tmp_path}/none']\n"
            "rc = cli.main()\n"
            "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)\n"
            "print('finished', rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "finished 2", (r.returncode, r.stderr[-2000:])
