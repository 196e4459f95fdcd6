"""Whole chunks of a store array along the object (or point) axis, read straight from their files when the
layout allows it.

The loader reads every chunk of an epoch whole, so the cost per chunk is what sets its speed. zarr-python
spends about 0.8 ms of bookkeeping per chunk (event-loop round trips, buffer wrapping) against about 0.45 ms
to decode a 2 MB spectra chunk and 0.13 ms for a light-curve chunk (measured on a 20,000-object store). For
the layouts `astrom3 ingest` writes (unsharded, on a local filesystem, `bytes` alone or `bytes` + one
`blosc`, chunked along axis 0 only) the Zarr v3 specification fixes everything needed to read a chunk file,
so read it directly: Blosc chunks are decoded with numcodecs (into a caller's buffer when given one),
uncompressed chunks are memory-mapped and kept mapped (as many as `ulimit -n` comfortably allows), so rows
are copied straight out of the page cache (one copy per node, shared by every process).
Any other layout (sharded, remote store, other codecs), and a chunk file that is absent (zarr's fill-value
semantics), goes through zarr.
"""

from __future__ import annotations

import mmap
import os
import resource
from collections import OrderedDict
from pathlib import Path

import numcodecs.blosc
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from .checksums import ChecksumError, check_bytes, check_file, damaged
from .store import Store, StoreError


def max_mapped() -> int:
    """Uncompressed chunks kept mapped per array and process, each holding a descriptor (Python's mmap keeps a
    duplicate of the file's): an eighth of those `ulimit -n` leaves free now (two arrays, DataLoader workers
    forked with this process's descriptors, and everything else need them too), between 2 and 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 0
    return max(2, min(4096, (soft - used) // 8))


def _direct_dir(arr: zarr.Array) -> Path | None:
    """The array's directory when its chunk files can be read without zarr, else None."""
    store = arr.store_path.store
    codecs = arr.metadata.codecs if arr.metadata.zarr_format == 3 else ()
    if arr.shards is not None or not isinstance(store, LocalStore) or len(codecs) not in (1, 2):
        return None
    first = codecs[0]
    if not isinstance(first, BytesCodec) or (len(codecs) == 2 and not isinstance(codecs[1], BloscCodec)):
        return None
    little = first.endian is None or first.endian.value == "little"
    if not little or tuple(arr.chunks[1:]) != tuple(arr.shape[1:]):
        return None
    return Path(store.root) / arr.store_path.path


class ChunkReader:
    """Chunk k of a zarr array as a read-only numpy array (the last one cut to the array's length)."""

    def __init__(self, arr: zarr.Array, digests: dict[str, list[int]] | None = None):
        self.arr = arr
        # {file key: [size, crc32c]} from the store's checksum table: each file is checked the first time this
        # process maps, decodes or reads it (a mapped chunk stays checked after the map is dropped).
        self.digests = digests
        self._checked: set[str] = set()
        # Each checked chunk file's (device, inode): a store rebuilt in place (ingest --overwrite renames a new
        # directory in) is new files under the same names, which a later read must not take for the checked ones.
        self._inodes: dict[str, tuple[int, int]] = {}
        self.rows = int(arr.chunks[0])
        self.length = int(arr.shape[0])
        self.trailing = tuple(int(s) for s in arr.shape[1:])
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.dir = _direct_dir(arr)
        self.compressed = len(arr.metadata.codecs) > 1
        self._zeros = (0,) * len(self.trailing)
        # Uncompressed chunks stay mapped (no page faults on the next epoch), but every map holds a file
        # descriptor, so only the most recently used ones are kept: a big store would hit `ulimit -n`.
        self._mapped: OrderedDict[int, np.ndarray] = OrderedDict()
        self._max_mapped = max_mapped()

    @property
    def direct(self) -> bool:
        return self.dir is not None

    def read(self, k: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk k. `out` (C-contiguous, `rows` rows): decode into it when the chunk is compressed, rather than
        into fresh memory; the result may still be another array (mapped or read through zarr)."""
        a = k * self.rows
        n = min(self.rows, self.length - a)
        if n <= 0:
            raise IndexError(f"chunk {k} is past the end of an array of {self.length} rows")
        if self.dir is None:
            self._check_file(k)
            return self.arr[a:a + n]
        hit = self._mapped.get(k)
        if hit is not None:
            self._mapped.move_to_end(k)
            return hit
        key = self.arr.metadata.encode_chunk_key((k, *self._zeros))
        path = self.dir / key
        try:
            with open(path, "rb") as f:
                replaced = self._replaced(key, os.fstat(f.fileno()))
                if self.compressed:
                    raw = f.read()
                else:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            if self.digests is not None and key in self.digests:
                raise ChecksumError(damaged(path, self.arr.path, key, "file missing")) from None
            return self.arr[a:a + n]
        except ValueError as e:  # mmap of an empty (truncated) file
            raise StoreError(damaged(path, self.arr.path, key, str(e))) from None
        if self.digests is not None and (key not in self._checked or replaced):
            try:
                check_bytes(raw if self.compressed else mapped, self.digests.get(key, [-1, -1]), path,
                            self.arr.path, key)
            except ChecksumError:
                if not (replaced or self._rebuilt(key)):
                    raise
                raise StoreError(f"{path}: the store was rebuilt or replaced while this job read it (chunk file "
                                 f"{self.arr.path}/{key} holds other data now); rerun the job") from None
            self._checked.add(key)
        try:
            if not self.compressed:
                chunk = np.frombuffer(mapped, dtype=self.dtype).reshape(self.rows, *self.trailing)[:n]
                self._mapped[k] = chunk
                if len(self._mapped) > self._max_mapped:
                    self._mapped.popitem(last=False)  # unmapped once the loader's own cache lets go of it too
                return chunk
            # numcodecs' blosc decodes single-threaded outside zarr's threads (use_threads is False by
            # default), which keeps DataLoader's forked workers safe and the per-core numbers honest.
            if out is not None and out.shape[0] == self.rows:
                numcodecs.blosc.decompress(raw, out)
                return out[:n]
            flat = np.frombuffer(numcodecs.blosc.decompress(raw), dtype=self.dtype)
            return flat.reshape(self.rows, *self.trailing)[:n]
        except (ValueError, RuntimeError) as e:  # a truncated or overwritten chunk file
            raise StoreError(damaged(path, self.arr.path, key, str(e))) from None

    def _replaced(self, key: str, st: os.stat_result) -> bool:
        """Whether the chunk file is another file than the one this process checked (an fstat of the open file:
        no extra lookup), so that it is checked again: identical data (a rebuild of the same input) reads on."""
        now = (st.st_dev, st.st_ino)
        seen = self._inodes.get(key, now)
        self._inodes[key] = now
        return seen != now

    def _rebuilt(self, key: str) -> bool:
        """Whether the store's own checksum table now holds another digest for this file than the one this process
        read at its start: the store was rebuilt in place since (a rebuild, not damage, is what to report)."""
        try:
            now = Store(self.arr.store_path.store.root, check_chunks=False).digests(self.arr.path) or {}
        except (OSError, ValueError, StoreError):
            return False
        return now.get(key) != (self.digests or {}).get(key)

    def _check_file(self, k: int) -> None:
        """Through zarr (sharded, remote): check the whole file holding chunk k once, if it is local."""
        if self.digests is None:
            return
        store = self.arr.store_path.store
        if not isinstance(store, LocalStore):
            return
        per_file = (self.arr.shards[0] // self.rows) if self.arr.shards else 1
        key = self.arr.metadata.encode_chunk_key((k // per_file, *self._zeros))
        if key in self._checked:
            return
        check_file(Path(store.root) / self.arr.store_path.path / key, self.digests.get(key, [-1, -1]),
                   self.arr.path, key)
        self._checked.add(key)
