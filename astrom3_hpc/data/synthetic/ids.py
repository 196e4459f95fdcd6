"""Object ids: Gaia-like (HEALPix level-12 pixel << 35 | running number), unique per (seed, index)."""

from __future__ import annotations

import numpy as np

_N_HPX12 = 12 * 4 ** 12


_M64 = (1 << 64) - 1


def _splitmix64_int(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised twin of _splitmix64_int (uint64 arithmetic wraps modulo 2**64 the same way)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def synthetic_object_id(seed: int, index: int) -> int:
    """Gaia-like id of object `index`: a pseudo-random HEALPix level-12 pixel in the high bits (as Gaia source
    ids have) and the index itself in the low 35 bits, so ids are unique for any n < 2**35."""
    pix = _splitmix64_int(index ^ _splitmix64_int(seed & _M64)) % _N_HPX12
    return (pix << 35) | index


def synthetic_object_ids(seed: int, start: int, stop: int) -> np.ndarray:
    """Vectorised synthetic_object_id for start..stop-1 (int64)."""
    i = np.arange(start, stop, dtype=np.uint64)
    h = _splitmix64(i ^ np.uint64(_splitmix64_int(seed & _M64)))
    pix = (h % np.uint64(_N_HPX12)).astype(np.int64)
    return (pix << 35) | i.astype(np.int64)
