"""Batches of model inputs from a store, sharded over ranks, shuffled at chunk level, resumable.

Per epoch the order is a pure function of (seed, epoch): chunks of the split are permuted, rows are shuffled
within groups of `buffer_chunks` chunks, and each rank takes one contiguous slice of that order, so ranks are
disjoint and each reads a few whole chunks per stretch of batches instead of scattering single-row reads.
The rank's batches are then dealt from `streams` contiguous runs in turn (run 0's first batch, run 1's
first, ..., run 0's second, ...): DataLoader workers take batches round-robin, so with a worker count that
divides `streams` each worker walks whole runs and never decodes a chunk another worker also decodes.
Resuming at (epoch, batch k) rebuilds the same order and skips k batches without reading them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..constants import AUX_COLUMNS, SEQ_LEN
from .chunks import ChunkReader
from .store import Store, StoreError

_RFR = AUX_COLUMNS.index("rfr_score")


@dataclass(frozen=True)
class LoaderSpec:
    store: str
    seed: int = 42
    subset: str = "full"
    split: str = "train"
    batch_size: int = 64  # per rank
    train: bool = True  # random windows + shuffling; False: centre windows, store order
    world_size: int = 1
    rank: int = 0
    buffer_chunks: int = 4
    streams: int = 8  # interleaved runs of batches; DataLoader workers should divide it (see module doc)
    use_rfr_score: bool = True
    in_memory: bool = False
    read_spectra: bool = True  # False: skip the dominant spectra reads (light-curve or metadata-only jobs)


def _empty(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 batch buffer; inside a DataLoader worker it is born in shared memory, because the worker
    would otherwise copy every tensor into shared memory to send it (measured: about halves a worker's rate)."""
    t = torch.empty(shape, dtype=torch.float32)
    return t.share_memory_() if torch.utils.data.get_worker_info() is not None else t


class TrimodalBatches:
    """Iterates batches (dicts of tensors) for one rank. Picklable; arrays open lazily in each process."""

    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        store = Store(spec.store)
        self.chunk = store.chunk_objects
        self.rows = store.split(spec.seed, spec.subset, spec.split)
        if len(self.rows) == 0:
            raise StoreError(f"{spec.store}: split seed{spec.seed}/{spec.subset}/{spec.split} is empty")
        stats = store.stats(spec.seed)
        r = store.root
        # The per-object tables are small (tens of bytes per object): hold them z-scored in memory.
        self.labels = r["label"][:].astype(np.int64)
        self.object_id = r["object_id"][:]
        self.present = r["present"][:]
        self.offsets = store.offsets
        self.meta = ((r["meta"][:] - stats["meta_mean"]) / stats["meta_std"]).astype(np.float32)
        # A catalogue value the source lacked (NaN) gets the train mean: 0 after z-scoring.
        aux = np.nan_to_num((r["aux"][:] - stats["aux_mean"]) / stats["aux_std"], nan=0.0).astype(np.float32)
        if not spec.use_rfr_score:
            aux[:, _RFR] = 0.0
        # Per-step auxiliary channels: 4 z-scored photometric features, log10 MAD, time span in years.
        self.aux_steps = np.concatenate([aux, r["lc/stats"][:]], axis=1).astype(np.float32)
        self.lc_present = self.present[:, 0]
        self._pid = None
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        # A safety net only: iter_epoch keeps exactly the chunks that this process's next batches need.
        self._cache_cap = max(2 * spec.buffer_chunks + 2, 64)
        self._lc_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._full: tuple[np.ndarray, np.ndarray] | None = None

    # -- order -------------------------------------------------------------------------------------------
    def _shuffled(self, epoch: int) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng([s.seed, epoch])
        chunk_ids = self.rows // self.chunk
        groups = np.split(self.rows, np.flatnonzero(np.diff(chunk_ids)) + 1)
        order = rng.permutation(len(groups))
        pieces = []
        for g0 in range(0, len(order), s.buffer_chunks):
            buf = np.concatenate([groups[j] for j in order[g0:g0 + s.buffer_chunks]])
            pieces.append(buf[rng.permutation(len(buf))])
        return np.concatenate(pieces)

    def batch_rows(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for `epoch`; every rank gets the same number of batches.

        Training: shuffled, each rank one contiguous slice of the order, incomplete batches dropped.
        Evaluation: store order, every row used: each global batch is split across ranks (sizes differ by at
        most one), so metrics cover the whole split.
        """
        s = self.spec
        b = s.batch_size
        if s.train:
            rows = self._shuffled(epoch)
            per_rank = len(rows) // s.world_size
            mine = rows[s.rank * per_rank:(s.rank + 1) * per_rank]
            # Sorted within a batch (membership stays random): rows of one chunk are then contiguous, so
            # make_batch copies each chunk's rows straight into place once instead of gathering then scattering.
            batches = [np.sort(mine[i * b:(i + 1) * b]) for i in range(per_rank // b)]
            run = -(-len(batches) // max(s.streams, 1))
            return [batches[j * run + i] for i in range(run) for j in range(s.streams) if j * run + i < len(batches)]
        g = b * s.world_size
        starts = list(range(0, len(self.rows), g))
        if len(starts) > 1 and len(self.rows) - starts[-1] < s.world_size:
            starts.pop()  # a tail too short to give every rank a row joins the previous global batch
        bounds = starts[1:] + [len(self.rows)]
        return [np.array_split(self.rows[a:z], s.world_size)[s.rank] for a, z in zip(starts, bounds)]

    def rank_rows(self, epoch: int) -> np.ndarray:
        return np.concatenate(self.batch_rows(epoch)) if self.num_batches() else np.zeros(0, np.int64)

    def num_batches(self, epoch: int = 0) -> int:
        s = self.spec
        if s.train:
            return (len(self.rows) // s.world_size) // s.batch_size
        return len(self.batch_rows(epoch))

    # -- reading -----------------------------------------------------------------------------------------
    def _open(self):
        if self._pid != os.getpid():
            store = Store(self.spec.store, check_chunks=False)
            self._spec_arr = store.array("spec")
            self._lc_arr = store.array("lc/values")
            self._spec_chunks = ChunkReader(self._spec_arr)
            self._lc_chunks = ChunkReader(self._lc_arr)
            if self._spec_chunks.rows != self.chunk:
                raise StoreError(f"{self.spec.store}: spec chunks of {self._spec_chunks.rows} objects, but the "
                                 f"store's layout says chunk_objects={self.chunk}")
            self._cache.clear()
            self._lc_cache.clear()
            self._pid = os.getpid()
            if self.spec.in_memory and self._full is None:
                self._full = (self._spec_arr[:] if self.spec.read_spectra else None, self._lc_arr[:])

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray, int]:
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        a, b = c * self.chunk, min((c + 1) * self.chunk, len(self.labels))
        p0, p1 = int(self.offsets[a]), int(self.offsets[b])
        spec = self._spec_chunks.read(c) if self.spec.read_spectra else None
        entry = (spec, self._lc_points(p0, p1), p0)
        self._cache[c] = entry
        if len(self._cache) > self._cache_cap:
            self._cache.popitem(last=False)
        return entry

    def _lc_points(self, p0: int, p1: int) -> np.ndarray:
        """Points [p0, p1) through an LRU of whole decoded lc/values chunks: an object chunk's points rarely
        align with lc chunks, and slicing would decode the same lc chunk once per object chunk touching it."""
        if p1 <= p0:
            return np.zeros((0, 3), np.float32)
        c = self._lc_chunks.rows
        parts = []
        for k in range(p0 // c, (p1 - 1) // c + 1):
            block = self._lc_cache.get(k)
            if block is None:
                block = self._lc_chunks.read(k)
                self._lc_cache[k] = block
                if len(self._lc_cache) > 4:
                    self._lc_cache.popitem(last=False)
            else:
                self._lc_cache.move_to_end(k)
            parts.append(block)
        base = (p0 // c) * c
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return data[p0 - base:p1 - base]

    def make_batch(self, rows: np.ndarray, epoch: int, batch_index: int) -> dict[str, torch.Tensor]:
        self._open()
        s = self.spec
        n = len(rows)
        spec_t = _empty((n, 3, self._spec_arr.shape[2])) if s.read_spectra else None
        lc_t, mask_t = _empty((n, SEQ_LEN, 9)), _empty((n, SEQ_LEN))
        spec = spec_t.numpy() if spec_t is not None else None
        lc, mask = lc_t.numpy(), mask_t.numpy()
        # Points are gathered into a contiguous buffer, masked there, and written into lc's strided channels
        # once (strided numpy passes cost ~4x contiguous ones).
        pts = np.empty((n, SEQ_LEN, 3), dtype=np.float32)
        rng = np.random.default_rng([s.seed, epoch, s.rank, batch_index])
        # Window of each light curve, vectorised: random start when training, centred when evaluating.
        first = self.offsets[rows]
        lengths = self.offsets[rows + 1] - first
        spare = np.maximum(lengths - SEQ_LEN, 0)
        starts = (rng.random(n) * (spare + 1)).astype(np.int64) if s.train else spare // 2
        take = np.minimum(lengths, SEQ_LEN)
        steps = np.arange(SEQ_LEN)
        mask[:] = steps[None, :] < take[:, None]
        point = first[:, None] + starts[:, None] + np.minimum(steps[None, :], np.maximum(take[:, None] - 1, 0))
        if self._full is not None:
            if spec is not None:
                np.take(self._full[0], rows, axis=0, out=spec)
            values = self._full[1]
            if len(values):
                np.take(values, np.minimum(point, len(values) - 1), axis=0, out=pts)
            else:
                pts[:] = 0
        else:
            chunk_of = rows // self.chunk
            for c in np.unique(chunk_of):
                sel = np.flatnonzero(chunk_of == c)
                spec_c, values, base = self._chunk(int(c))
                if sel[-1] - sel[0] + 1 == len(sel):
                    sel = slice(sel[0], sel[-1] + 1)
                if spec is not None:
                    if isinstance(sel, slice):
                        np.take(spec_c, rows[sel] - c * self.chunk, axis=0, out=spec[sel])
                    else:
                        spec[sel] = spec_c[rows[sel] - c * self.chunk]
                if not len(values):
                    pts[sel] = 0  # no points in this chunk: the mask below is all zero, but empty memory may hold NaN
                elif isinstance(sel, slice):
                    np.take(values, np.clip(point[sel] - base, 0, len(values) - 1), axis=0, out=pts[sel])
                else:
                    pts[sel] = values[np.clip(point[sel] - base, 0, len(values) - 1)]
        pts *= mask[:, :, None]
        lc[:, :, :3] = pts
        lc[:, :, 3:] = self.aux_steps[rows][:, None, :]
        out = {
            "lc": lc_t,
            "lc_mask": mask_t,
            "meta": torch.from_numpy(self.meta[rows]),
            "label": torch.from_numpy(self.labels[rows]),
            "object_id": torch.from_numpy(self.object_id[rows].astype(np.int64)),
            "present": torch.from_numpy(self.present[rows]),
            "index": torch.from_numpy(rows.astype(np.int64)),
        }
        if spec_t is not None:
            out["spec"] = spec_t
        return out

    def iter_epoch(self, epoch: int, start_batch: int = 0, worker: int = 0, n_workers: int = 1
                   ) -> Iterator[dict[str, torch.Tensor]]:
        mine = [(k, rows) for k, rows in enumerate(self.batch_rows(epoch))
                if k >= start_batch and (k - start_batch) % n_workers == worker]
        # Keep a decoded chunk only while one of this process's next few batches (one per stream it walks)
        # still needs it: bounded memory, and no chunk is decoded twice within a stream.
        ahead = max(1, -(-self.spec.streams // n_workers))
        for i, (k, rows) in enumerate(mine):
            yield self.make_batch(rows, epoch, k)
            keep = {int(c) for _, r in mine[i + 1:i + 1 + ahead] for c in np.unique(r // self.chunk)}
            for c in [c for c in self._cache if c not in keep]:
                del self._cache[c]


class _EpochDataset(torch.utils.data.IterableDataset):
    """Worker w of W yields batches w, w+W, ...; the DataLoader takes workers round-robin, so the batch
    order is the same as with no workers."""

    def __init__(self, batches: TrimodalBatches, epoch: int, start_batch: int):
        self.batches, self.epoch, self.start_batch = batches, epoch, start_batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        return self.batches.iter_epoch(self.epoch, self.start_batch, w, n)


def epoch_loader(batches: TrimodalBatches, epoch: int, start_batch: int = 0, num_workers: int = 0):
    """An iterable over one epoch's batches for this rank, starting at `start_batch` (for exact resume)."""
    if num_workers == 0:
        return batches.iter_epoch(epoch, start_batch)
    return torch.utils.data.DataLoader(_EpochDataset(batches, epoch, start_batch), batch_size=None,
                                       num_workers=num_workers, persistent_workers=False,
                                       multiprocessing_context="fork" if os.name == "posix" else None)
