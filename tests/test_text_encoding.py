"""Files the suite writes are UTF-8 under any locale: a class name such as `δ Sct var` (ingest reads UTF-8) failed a
finished baseline at its last write under an ASCII locale, leaving no metrics.json or predictions."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import locale
import sys
from pathlib import Path
from astrom3_hpc.core.atomic import append_jsonl, read_jsonl, write_text
from astrom3_hpc.train.ensemble import _read

assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968")  # the locale the test means
out = Path(sys.argv[1])
write_text(out / "predictions.csv", "object_id,true_class,p_δ Sct var\nV* α Lyr,δ Sct var,1.0\n")
append_jsonl(out / "log.jsonl", {"class": "δ Sct var"})
rows, cols = _read(out, "predictions.csv")
assert cols == ["δ Sct var"] and rows[0]["object_id"] == "V* α Lyr", (rows, cols)
assert read_jsonl(out / "log.jsonl") == [{"class": "δ Sct var"}]
print("ok")
"""


def test_written_files_are_utf8_under_an_ascii_locale(tmp_path):
    # PYTHONUTF8=0 and PYTHONCOERCECLOCALE=0 keep Python from switching the C locale to UTF-8, as a Latin-1 or
    # ASCII locale on a cluster's login node does not switch it either.
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    script = tmp_path / "check.py"  # source files are UTF-8 under any locale; a -c argument is not
    script.write_text(SCRIPT, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    assert (tmp_path / "predictions.csv").read_bytes().decode("utf-8").startswith("object_id,true_class,p_δ")
