"""A file's sha256, read in 1 MiB blocks: the identity of imported weights, of a run's best_model.pt that
embeddings were made by, and of the authors' raw files."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
