"""The running interpreter's directory first on PATH: its ninja, torchrun and mpiexec wrappers, not the system's.
DeepSpeed's JIT op cache is tied to the ninja found on PATH (docs/slurm.md), so a process of the venv's interpreter
without the venv activated rebuilt the op, and the next job with the venv's ninja rebuilt it back."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def interpreter_first(path: str) -> str:
    """`path` (a PATH value) with the interpreter's directory first; unchanged when it is already first or the
    interpreter's path is unknown (an embedded Python's empty sys.executable would put "." first)."""
    if not sys.executable:
        return path
    bin_dir = str(Path(sys.executable).parent)
    return path if path.split(os.pathsep)[0] == bin_dir else bin_dir + os.pathsep + path
