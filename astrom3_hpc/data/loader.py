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

from ..core.constants import ALL_OBJECTS, AUX_COLUMNS, SEQ_LEN, UNLABELLED
from . import batch_order
from .arena import BatchArena
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
    # True: batches carry `lc_features`, the classical per-object light-curve features (data/lc_features.py),
    # robust z-scores with this seed's train-split statistics; read from the store's cache (computed once).
    lc_features: bool = False
    # True: batches carry `lc_fold`, every point of each light curve folded at its period (data/lc_folds.py),
    # read from the store's cache (computed once).
    lc_fold: bool = False
    # Training only: K > 0 replaces each batch's `lc_fold` by one of K cached folds of a random subset of the
    # object's points (lc_folds.cached_resampled_folds), drawn per object and batch.
    lc_fold_resamples: int = 0
    lc_fold_resample_fraction: float = 0.5
    # Training only, with lc_features and lc_fold_resamples = K > 0: `lc_features` of the same one of K point
    # subsets as the batch's fold (lc_features.cached_resampled_features).
    lc_feature_resampling: bool = False
    # Another store whose seed's train split supplies every normalisation (metadata and aux z-scores, the
    # metadata fill values, the classical features' quantiles): a model trained on that store classifying this
    # one's objects (`astrom3 predict`) must see them scaled as its training objects were. None: this store.
    norm_store: str | None = None


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
        # The tables below come from this store: _open must read chunks of no other store at this path.
        self._fingerprint = store.fingerprint
        self.chunk = store.chunk_objects
        unsplit = spec.split in (UNLABELLED, ALL_OBJECTS)
        self.rows = (store.unlabelled_rows() if spec.split == UNLABELLED else store.valid_rows()
                     if spec.split == ALL_OBJECTS else store.split(spec.seed, spec.subset, spec.split))
        if len(self.rows) == 0:
            raise store.empty_split_error(spec.seed, spec.subset, spec.split)
        if spec.norm_store and spec.train:
            raise ValueError("LoaderSpec.norm_store is for inference (train=False); training normalises by its "
                             "own store")
        norm = Store(spec.norm_store) if spec.norm_store else store
        median_key = f"stats/seed{spec.seed}/meta_median"
        stats_keys = [f"stats/seed{spec.seed}/{k}" for k in ("meta_mean", "meta_std", "aux_mean", "aux_std")
                      ] + ([median_key] if median_key in norm.root else [])
        # The small arrays are read whole, here, once: hash their files first (a few ms per 100k objects). Those
        # older stores lack are hashed where present: a damaged one would feed wrong numbers as silently.
        store.check_arrays(["label", "object_id", "present", "meta", "aux", "lc/stats", "lc/offsets",
                            "valid" if unsplit else f"splits/seed{spec.seed}/{spec.subset}/{spec.split}",
                            *[k for k in ("meta_present", "lc/period_search") if k in store.root],
                            *([] if spec.norm_store else stats_keys)])
        if spec.norm_store:
            norm.check_arrays(stats_keys)
        stats = norm.stats(spec.seed)
        r = store.root
        # The per-object tables are small (tens of bytes per object): hold them z-scored in memory.
        self.labels = r["label"][:].astype(np.int64)
        self.object_id = r["object_id"][:]
        self.present = r["present"][:]
        self.offsets = store.offsets
        meta = r["meta"][:]
        # Metadata missing in the input (ingested with --meta-nan impute; see meta_present) gets the train-split
        # median of this seed, computed at ingestion from train rows only.
        self.meta_present = r["meta_present"][:] if "meta_present" in r else np.isfinite(meta)
        if not self.meta_present.all() and median_key in norm.root:
            meta = np.where(self.meta_present, meta, norm.root[median_key][:][None, :])
        self.meta = ((meta - stats["meta_mean"]) / stats["meta_std"]).astype(np.float32)
        # A catalogue value the source lacked (NaN) gets the train mean: 0 after z-scoring.
        aux = np.nan_to_num((r["aux"][:] - stats["aux_mean"]) / stats["aux_std"], nan=0.0).astype(np.float32)
        if not spec.use_rfr_score:
            aux[:, _RFR] = 0.0
        # Per-step auxiliary channels: 4 z-scored photometric features, log10 MAD, time span in years.
        self.aux_steps = np.concatenate([aux, r["lc/stats"][:]], axis=1).astype(np.float32)
        self.lc_present = self.present[:, 0]
        # The period in days (catalogue or Lomb-Scargle), for encoders that fold: aux keeps log10 of it.
        self.lc_period = np.power(10.0, r["aux"][:, AUX_COLUMNS.index("period")].astype(np.float64)).astype(np.float32)
        # The Lomb-Scargle search (stores built by `ingest lightcurves`): log10 periods and powers; 0 where absent.
        if "lc/period_search" in r:
            ps = r["lc/period_search"][:].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                ps[:, [0, 2]] = np.log10(ps[:, [0, 2]])
            self.period_search = np.nan_to_num(ps, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        else:
            self.period_search = np.zeros((len(self.labels), 4), np.float32)
        self.lc_features = self.lc_features_resampled = None
        if spec.lc_features and spec.train and spec.lc_feature_resampling and spec.lc_fold_resamples > 0:
            from .lc_features import cached_resampled_features, standardise

            feats = cached_resampled_features(store, spec.lc_fold_resamples, spec.lc_fold_resample_fraction)
            n, k, f = feats.shape
            train_rows = store.split(spec.seed, "full", "train")
            # Normalised through the subsets' own train distribution, not the whole curves': the rank transform
            # then removes what thinning shifts for every object alike (point count, Lafler-Kinman, von Neumann
            # ratio), and what is left is the variation a sparser sampling brings.
            self.lc_features_resampled = standardise(
                feats.reshape(n * k, f), (train_rows[:, None] * k + np.arange(k)).ravel()).reshape(n, k, f)
        elif spec.lc_features:
            from .lc_features import cached_features, standardise

            self.lc_features = standardise(cached_features(store), norm.split(spec.seed, "full", "train"),
                                           reference=None if norm is store else cached_features(norm))
        self.lc_fold = self.lc_fold_resampled = None
        if spec.lc_fold and spec.train and spec.lc_fold_resamples > 0:
            from .lc_folds import cached_resampled_folds

            self.lc_fold_resampled = np.nan_to_num(
                cached_resampled_folds(store, spec.lc_fold_resamples, spec.lc_fold_resample_fraction))
        elif spec.lc_fold:
            from .lc_folds import cached_folds

            self.lc_fold = np.nan_to_num(cached_folds(store))
        self._pid = None
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        # A safety net only: iter_epoch keeps exactly the chunks that this process's next batches need.
        self._cache_cap = max(2 * spec.buffer_chunks + 2, 64)
        self._full: tuple[np.ndarray, np.ndarray] | None = None
        self.spec_len = int(r["spec"].shape[2])
        self._arena: BatchArena | None = None
        self._pts: np.ndarray | None = None
        self._workers: dict[int, tuple[int, BatchArena, torch.utils.data.DataLoader]] = {}

    # -- order (data/batch_order.py) ---------------------------------------------------------------------
    def batch_rows(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for `epoch` (batch_order.batch_rows)."""
        return batch_order.batch_rows(self.rows, self.chunk, self.spec, epoch)

    def rank_rows(self, epoch: int) -> np.ndarray:
        return np.concatenate(self.batch_rows(epoch)) if self.num_batches() else np.zeros(0, np.int64)

    def num_batches(self, epoch: int = 0) -> int:
        if self.spec.train:
            return batch_order.num_train_batches(len(self.rows), self.spec)
        return len(self.batch_rows(epoch))

    # -- reading -----------------------------------------------------------------------------------------
    def _open(self):
        if self._pid != os.getpid():
            store = Store(self.spec.store, check_chunks=False)
            # Reopened by path, and its digests are the new store's own: without this a store rebuilt in place
            # (ingest --overwrite) passes every chunk check and batches join old labels and offsets to new data.
            if store.fingerprint != self._fingerprint:
                raise StoreError(f"{self.spec.store}: the store was rebuilt or replaced while this job read it "
                                 f"(its content fingerprint changed); rerun the job")
            self._spec_arr = store.array("spec")
            self._lc_arr = store.array("lc/values")
            self._spec_chunks = ChunkReader(self._spec_arr, store.digests("spec"))
            self._lc_chunks = ChunkReader(self._lc_arr, store.digests("lc/values"))
            if self._spec_chunks.rows != self.chunk:
                raise StoreError(f"{self.spec.store}: spec chunks of {self._spec_chunks.rows} objects, but the "
                                 f"store's layout says chunk_objects={self.chunk}")
            # Decoded chunks, batch slots and scratch memory belong to the process that made them.
            self._cache.clear()
            self._arena, self._pts = None, None
            self._pid = os.getpid()
            if self.spec.in_memory and self._full is None:
                store.check_arrays(["spec", "lc/values"] if self.spec.read_spectra else ["lc/values"])
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
        """Points [p0, p1): the lc/values chunks holding them, decoded straight into one contiguous buffer.

        An object chunk's points rarely align with lc chunks, so the chunks at its two ends are shared with
        neighbouring object chunks; those come up at random points of a shuffled epoch, so caching them buys
        little (measured) while concatenating cached pieces would copy every point once more.
        """
        if p1 <= p0:
            return np.zeros((0, 3), np.float32)
        c = self._lc_chunks.rows
        k0, k1 = p0 // c, (p1 - 1) // c + 1
        if k1 - k0 == 1:
            data = self._lc_chunks.read(k0)
        else:
            data = np.empty(((k1 - k0) * c, 3), np.float32)
            for k in range(k0, k1):
                block = data[(k - k0) * c:(k - k0 + 1) * c]
                got = self._lc_chunks.read(k, out=block)
                if got.ctypes.data != block.ctypes.data:
                    block[:len(got)] = got  # mapped, or read through zarr
        return data[p0 - k0 * c:p1 - k0 * c]

    def _fields(self) -> dict[str, tuple[int, ...]]:
        """The big float32 batch entries and their per-object shapes (the ones worth recycled memory)."""
        f = {"lc": (SEQ_LEN, 9), "lc_mask": (SEQ_LEN,)}
        if self.spec.read_spectra:
            f["spec"] = (3, self.spec_len)
        return f

    def _local_arena(self) -> BatchArena | None:
        """This process's recycled batch slots (None inside a DataLoader worker: its batches must be sent)."""
        if torch.utils.data.get_worker_info() is not None:
            return None
        self._open()
        if self._arena is None:
            # The consumer holds a batch while the next is built, and autograd may keep the inputs of one
            # more until backward: 4 slots cover that; a consumer holding more gets fresh memory.
            self._arena = BatchArena(self._fields(), self.spec.batch_size + 1, 4, shared=False)
        return self._arena

    def make_batch(self, rows: np.ndarray, epoch: int, batch_index: int) -> dict[str, torch.Tensor]:
        arena = self._local_arena()
        slot = arena.claim(range(arena.slots)) if arena is not None and len(rows) <= arena.rows else None
        if slot is None:
            big = {k: _empty((len(rows), *shape)) for k, shape in self._fields().items()}
            return {**big, **self._fill(rows, epoch, batch_index, {k: t.numpy() for k, t in big.items()})}
        small = self._fill_slot(arena, slot, rows, epoch, batch_index)
        return {**arena.hand_out(slot, len(rows)), **small}

    def _make_in_slot(self, rows: np.ndarray, epoch: int, batch_index: int, arena: BatchArena, mine: range):
        """In a DataLoader worker: fill one of this worker's shared slots and return only its number; with
        every slot still held by the consumer, fall back to a batch in fresh shared memory."""
        slot = arena.claim(mine) if len(rows) <= arena.rows else None
        if slot is None:
            return self.make_batch(rows, epoch, batch_index)
        small = self._fill_slot(arena, slot, rows, epoch, batch_index)
        # The small entries travel pickled by value: as tensors each would cost a shared-memory segment and a
        # file-descriptor handshake per batch (measured: most of the main process's time per batch).
        return _InSlot(slot, len(rows), {k: v.numpy() for k, v in small.items()})

    def _fill_slot(self, arena: BatchArena, slot: int, rows: np.ndarray, epoch: int, batch_index: int
                   ) -> dict[str, torch.Tensor]:
        try:
            return self._fill(rows, epoch, batch_index, arena.arrays(slot, len(rows)))
        except BaseException:
            arena.release_unhanded(range(slot, slot + 1))  # a failed batch must not leak its slot
            raise

    def _scratch_points(self, n: int) -> np.ndarray:
        """A per-process buffer for a batch's light-curve points (never handed out, so reused every batch)."""
        if self._pts is None or len(self._pts) < n:
            self._pts = np.empty((max(n, self.spec.batch_size + 1), SEQ_LEN, 3), np.float32)
        return self._pts[:n]

    def _fill(self, rows: np.ndarray, epoch: int, batch_index: int, out: dict[str, np.ndarray]
              ) -> dict[str, torch.Tensor]:
        """Write the big entries of a batch into `out` (arrays of n rows); return the small ones as tensors.

        Every gather uses mode="clip" on indices already known to be in range: with the default mode numpy
        gathers into a temporary and copies it over (`out` is buffered), which doubles the bytes moved.
        """
        self._open()
        s = self.spec
        n = len(rows)
        spec, lc, mask = out.get("spec"), out["lc"], out["lc_mask"]
        # Points are gathered into a contiguous scratch buffer, masked there, and written into lc's strided
        # channels once (strided numpy passes cost ~4x contiguous ones).
        pts = self._scratch_points(n)
        rng = np.random.default_rng([s.seed, epoch, s.rank, batch_index])
        # Window of each light curve, vectorised: random start when training, centred when evaluating.
        first = self.offsets[rows]
        lengths = self.offsets[rows + 1] - first
        spare = np.maximum(lengths - SEQ_LEN, 0)
        # Training: uniform in [0, spare - 1], the reference's randint(0, n - SEQ_LEN) (it never picks the last
        # window); evaluation: the reference's centre crop.
        starts = (rng.random(n) * spare).astype(np.int64) if s.train else spare // 2
        take = np.minimum(lengths, SEQ_LEN)
        steps = np.arange(SEQ_LEN)
        mask[:] = steps[None, :] < take[:, None]
        point = first[:, None] + starts[:, None] + np.minimum(steps[None, :], np.maximum(take[:, None] - 1, 0))
        if self._full is not None:
            if spec is not None:
                np.take(self._full[0], rows, axis=0, out=spec, mode="clip")
            values = self._full[1]
            if len(values):
                np.take(values, point, axis=0, out=pts, mode="clip")
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
                        np.take(spec_c, rows[sel] - c * self.chunk, axis=0, out=spec[sel], mode="clip")
                    else:
                        spec[sel] = spec_c[rows[sel] - c * self.chunk]
                if not len(values):
                    pts[sel] = 0  # no points in this chunk: the mask below is all zero, but empty memory may hold NaN
                elif isinstance(sel, slice):
                    np.take(values, point[sel] - base, axis=0, out=pts[sel], mode="clip")
                else:
                    pts[sel] = values[np.clip(point[sel] - base, 0, len(values) - 1)]
        pts *= mask[:, :, None]
        lc[:, :, :3] = pts
        lc[:, :, 3:] = self.aux_steps[rows][:, None, :]
        extra = {} if self.lc_features is None else {"lc_features": torch.from_numpy(self.lc_features[rows])}
        if self.lc_fold_resampled is not None or self.lc_features_resampled is not None:
            # Drawn after the windows, so turning resampling on leaves every window where it was; one subset per
            # object for both, so the fold and the features describe the same sparser curve.
            pick = rng.integers(0, s.lc_fold_resamples, n)
            if self.lc_features_resampled is not None:
                extra["lc_features"] = torch.from_numpy(self.lc_features_resampled[rows, pick])
        if self.lc_fold_resampled is not None:
            extra["lc_fold"] = torch.from_numpy(self.lc_fold_resampled[rows, pick])
        elif self.lc_fold is not None:
            extra["lc_fold"] = torch.from_numpy(self.lc_fold[rows])
        return extra | {
            "meta": torch.from_numpy(self.meta[rows]),
            "label": torch.from_numpy(self.labels[rows]),
            "object_id": torch.from_numpy(self.object_id[rows].astype(np.int64)),
            "present": torch.from_numpy(self.present[rows]),
            "lc_period": torch.from_numpy(self.lc_period[rows]),
            "lc_period_search": torch.from_numpy(self.period_search[rows]),
            "index": torch.from_numpy(rows.astype(np.int64)),
        }

    def iter_epoch(self, epoch: int, start_batch: int = 0, worker: int = 0, n_workers: int = 1,
                   shared: tuple[BatchArena, range] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        mine = [(k, rows) for k, rows in enumerate(self.batch_rows(epoch))
                if k >= start_batch and (k - start_batch) % n_workers == worker]
        # Keep a decoded chunk only while one of this process's next few batches (one per stream it walks)
        # still needs it: bounded memory, and no chunk is decoded twice within a stream.
        ahead = max(1, -(-self.spec.streams // n_workers))
        for i, (k, rows) in enumerate(mine):
            yield self.make_batch(rows, epoch, k) if shared is None else self._make_in_slot(rows, epoch, k, *shared)
            keep = {int(c) for _, r in mine[i + 1:i + 1 + ahead] for c in np.unique(r // self.chunk)}
            for c in [c for c in self._cache if c not in keep]:
                del self._cache[c]

    def worker_epoch(self, epoch: int, start_batch: int, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch from `num_workers` persistent DataLoader workers that fill shared batch slots."""
        pool = self._workers.get(num_workers)
        if pool is None or pool[0] != os.getpid():
            arena = BatchArena(self._fields(), self.spec.batch_size + 1, num_workers * SLOTS_PER_WORKER, shared=True)
            loader = torch.utils.data.DataLoader(
                _EpochDataset(self._detached(), arena), batch_size=None, num_workers=num_workers,
                persistent_workers=True, prefetch_factor=SLOTS_PER_WORKER - 2,
                multiprocessing_context="fork",  # workers must inherit the shared slots (Linux and macOS)
                # Starting workers draws a seed from the generator; from the global one that would shift the
                # model's own random stream (dropout, ProbSparse sampling) and break exact resume. Batches
                # take their randomness from (seed, epoch, rank, batch) alone.
                generator=torch.Generator().manual_seed(0))
            pool = self._workers[num_workers] = (os.getpid(), arena, loader)
        _, arena, loader = pool
        # Batches of an abandoned epoch that never reached the consumer: the DataLoader drops them when it
        # resets its workers, and each slot's only writer is its worker, which finishes one batch at a time.
        arena.release_unhanded(range(arena.slots))
        arena.words[:] = (epoch, start_batch)  # read by each worker's _EpochDataset.__iter__
        for item in loader:
            if isinstance(item, _InSlot):
                small = {k: torch.from_numpy(v) for k, v in item.small.items()}
                item = {**arena.hand_out(item.slot, item.n), **small}
            yield item

    def close(self) -> None:
        """Stop this process's persistent DataLoader workers (they also stop when the object is collected)."""
        pools, self._workers = self._workers, {}
        for pid, _, loader in pools.values():
            it = getattr(loader, "_iterator", None)
            if pid == os.getpid() and it is not None:
                it._shutdown_workers()

    def _detached(self) -> TrimodalBatches:
        """A copy without this object's worker pools: the workers' dataset must not point back at the object
        that owns the DataLoader, or the cycle would keep worker processes alive until a garbage collection."""
        clone = object.__new__(TrimodalBatches)
        clone.__dict__.update(self.__getstate__())
        return clone

    def __getstate__(self):
        # Worker pools, recycled slots and decoded chunks belong to the process that made them.
        state = dict(self.__dict__)
        state.update(_workers={}, _arena=None, _pts=None, _pid=None, _cache=OrderedDict())
        return state


SLOTS_PER_WORKER = 4  # DataLoader prefetch (2) + the batch the consumer holds + the one being replaced


@dataclass
class _InSlot:
    """A worker's batch: its big entries are in shared slot `slot` (first n rows), the small ones here as
    numpy arrays."""
    slot: int
    n: int
    small: dict


class _EpochDataset(torch.utils.data.IterableDataset):
    """Worker w of W yields batches w, w+W, ... of the epoch named in the arena's words (the workers persist
    across epochs); the DataLoader takes workers round-robin, so the batch order is the same as with no
    workers."""

    def __init__(self, batches: TrimodalBatches, arena: BatchArena):
        self.batches, self.arena = batches, arena

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        epoch, start = (int(x) for x in self.arena.words)
        mine = range(w * SLOTS_PER_WORKER, (w + 1) * SLOTS_PER_WORKER)
        return self.batches.iter_epoch(epoch, start, w, n, shared=(self.arena, mine))


def epoch_loader(batches: TrimodalBatches, epoch: int, start_batch: int = 0, num_workers: int = 0):
    """An iterable over one epoch's batches for this rank, starting at `start_batch` (for exact resume)."""
    if num_workers == 0:
        return batches.iter_epoch(epoch, start_batch)
    return batches.worker_epoch(epoch, start_batch, num_workers)
