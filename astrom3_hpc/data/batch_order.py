"""Which rows make each batch of an epoch, on each rank: the order alone, apart from reading (data/loader.py).

Training batches are shuffled within buffers of whole chunks (each chunk file read once per epoch, `buffer_chunks`
at a time), and interleaved as `streams` runs so that DataLoader workers each walk whole runs. Evaluation keeps
store order and uses every row.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class OrderSpec(Protocol):
    """What the order depends on (data/loader.py's LoaderSpec holds it among the reading options)."""

    train: bool
    batch_size: int  # per rank
    world_size: int
    rank: int
    streams: int
    seed: int
    buffer_chunks: int


def shuffled(rows: np.ndarray, chunk: int, seed: int, epoch: int, buffer_chunks: int) -> np.ndarray:
    """`rows` (sorted store rows) in the epoch's order: chunks in a random order, rows shuffled within each
    buffer of `buffer_chunks` consecutive chunks of that order. The same on every rank (seeded by seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    chunk_ids = rows // chunk
    groups = np.split(rows, np.flatnonzero(np.diff(chunk_ids)) + 1)
    order = rng.permutation(len(groups))
    pieces = []
    for g0 in range(0, len(order), buffer_chunks):
        buf = np.concatenate([groups[j] for j in order[g0:g0 + buffer_chunks]])
        pieces.append(buf[rng.permutation(len(buf))])
    return np.concatenate(pieces)


def num_train_batches(n_rows: int, spec: OrderSpec) -> int:
    return (n_rows // spec.world_size) // spec.batch_size


def batch_rows(rows: np.ndarray, chunk: int, spec: OrderSpec, epoch: int) -> list[np.ndarray]:
    """This rank's batches for `epoch`; every rank gets the same number of batches.

    Training: shuffled, each rank one contiguous slice of the order, incomplete batches dropped.
    Evaluation: store order, every row used: each global batch is split across ranks (sizes differ by at
    most one), so metrics cover the whole split. The global batches do not depend on the world size (a
    contrastive loss depends on which objects share a batch): a rank may get an empty share of the last one.
    """
    s = spec
    b = s.batch_size
    if s.train:
        order = shuffled(rows, chunk, s.seed, epoch, s.buffer_chunks)
        per_rank = len(order) // s.world_size
        mine = order[s.rank * per_rank:(s.rank + 1) * per_rank]
        # Sorted within a batch (membership stays random): rows of one chunk are then contiguous, so
        # make_batch copies each chunk's rows straight into place once instead of gathering then scattering.
        batches = [np.sort(mine[i * b:(i + 1) * b]) for i in range(num_train_batches(len(rows), s))]
        run = -(-len(batches) // max(s.streams, 1))
        return [batches[j * run + i] for i in range(run) for j in range(s.streams) if j * run + i < len(batches)]
    g = b * s.world_size
    starts = list(range(0, len(rows), g))
    if len(starts) > 1 and len(rows) - starts[-1] < 2:
        # A one-object tail joins the previous batch: alone it has no negatives, a contrastive loss of 0
        # whatever the weights. (Folding tails shorter than the world size instead made the validation loss
        # of the same weights differ between 1 and 2 ranks.)
        starts.pop()
    bounds = starts[1:] + [len(rows)]
    return [np.array_split(rows[a:z], s.world_size)[s.rank] for a, z in zip(starts, bounds)]
