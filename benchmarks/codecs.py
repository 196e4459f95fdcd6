"""Codec and checksum rates on a store's own chunks: what `--compression` costs and saves, and what hashing costs.

    python benchmarks/codecs.py [--n 2000] [--repeats 5] [--dir keep-stores-here]
    taskset -c 1 python benchmarks/codecs.py        # one core: the rates are per core anyway

A synthetic store is ingested once per layout (`none`, `lz4hc`, `lz4`, as `astrom3 ingest --compression` writes
them). For the two bulk arrays (`spec`, `lc/values`) every chunk file of the uncompressed store is the raw chunk;
the compressed stores' chunk files are what a compressed store holds. Per codec and array, one thread:

  ratio     raw bytes / compressed bytes (the store's own files; `on disk` is the inverse)
  decode    numcodecs.blosc.decompress into a reused buffer, as the loader decodes (data/chunks.py)
  encode    numcodecs Blosc with the parameters of the array's zarr.json (checked to give the store's bytes)

`zstd` (Blosc zstd level 1, byte shuffle) is not a store option, measured for comparison. Baselines measured in
the same run: a plain copy of the same bytes (what an uncompressed store's loader does with a mapped chunk) and
`lz4` (the earlier default). CRC-32C (data/checksums.py, google-crc32c: every chunk file is hashed at ingest and
once per process when read) is timed over the uncompressed chunks against zlib's CRC-32 on the same bytes, and
as ingest's digest table computes it, reading the chunk files (from the page cache).
Rates are raw (uncompressed) GB/s, the median over --repeats passes over all chunks, best pass beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numcodecs.blosc  # noqa: E402
from numcodecs import Blosc  # noqa: E402

from astrom3_hpc.data.checksums import buffer_crc, chunk_files, file_crc  # noqa: E402
from astrom3_hpc.data.ingest import IngestOptions, ingest  # noqa: E402
from astrom3_hpc.data.store import COMPRESSIONS  # noqa: E402
from astrom3_hpc.data.synthetic import SyntheticSource  # noqa: E402

ARRAYS = ("spec", "lc/values")
SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def build(root: Path, n: int) -> dict[str, Path]:
    stores = {}
    for c in COMPRESSIONS:
        path = stores[c] = root / f"codecs-{n}-{c}.zarr"
        if not path.exists():
            t0 = time.perf_counter()
            ingest(SyntheticSource(n, seed=0), path,
                   IngestOptions(on_error="skip", progress=False, layout_kw={"compression": c}))
            print(f"built {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return stores


def store_codec(array_dir: Path) -> Blosc | None:
    """The numcodecs Blosc that zarr's BloscCodec builds from the array's metadata (None: uncompressed)."""
    for c in json.loads((array_dir / "zarr.json").read_text())["codecs"]:
        if c["name"] == "blosc":
            k = c["configuration"]
            return Blosc(cname=k["cname"], clevel=k["clevel"], shuffle=SHUFFLES[k["shuffle"]],
                         blocksize=k["blocksize"], typesize=k["typesize"])
    return None


def passes(fn, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of fn() over `repeats` timed calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def measure_array(stores: dict[str, Path], name: str, repeats: int) -> tuple[list[dict], dict]:
    raw_files = chunk_files(stores["none"] / name)
    raw = [np.frombuffer(p.read_bytes(), np.uint8) for p in raw_files.values()]
    nbytes = sum(len(r) for r in raw)
    out = np.empty(max(len(r) for r in raw), np.uint8)

    def copy():
        for r in raw:
            np.copyto(out[:len(r)], r)

    rows = [{"codec": "none (copy)", "ratio": 1.0, "decode": passes(copy, repeats), "encode": None, "same": None}]
    codecs = {c: (store_codec(stores[c] / name), [chunk_files(stores[c] / name)[k].read_bytes() for k in raw_files])
              for c in COMPRESSIONS if c != "none"}
    zstd = Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE, typesize=4)
    codecs["zstd (level 1)"] = (zstd, [zstd.encode(r) for r in raw])
    for label, (codec, packed) in codecs.items():
        for r, p in zip(raw, packed):  # decoding gives the raw chunk back, byte for byte
            numcodecs.blosc.decompress(p, out[:len(r)])
            if not np.array_equal(out[:len(r)], r):
                raise SystemExit(f"{name} {label}: a chunk did not decode to the uncompressed store's bytes")

        def decode(packed=packed):
            for r, p in zip(raw, packed):
                numcodecs.blosc.decompress(p, out[:len(r)])

        def encode(codec=codec):
            for r in raw:
                codec.encode(r)

        same = all(codec.encode(r) == p for r, p in zip(raw, packed))
        rows.append({"codec": label, "ratio": nbytes / sum(len(p) for p in packed),
                     "decode": passes(decode, repeats), "encode": passes(encode, max(1, repeats // 2)),
                     "same": same})
    crc = {"crc32c": passes(lambda: [buffer_crc(r) for r in raw], repeats),
           "zlib": passes(lambda: [zlib.crc32(r) for r in raw], repeats),
           # As ingest's digest table hashes them: read in blocks from the (warm) page cache.
           "files": passes(lambda: [file_crc(p) for p in raw_files.values()], repeats)}
    return [{**r, "bytes": nbytes, "chunks": len(raw)} for r in rows], crc


def gbs(nbytes: int, t: tuple[float, float] | None) -> str:
    if t is None:
        return "-"
    return f"{nbytes / t[0] / 1e9:6.2f} ({nbytes / t[1] / 1e9:.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="objects in the synthetic stores")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over all chunks (decode; encode: half)")
    ap.add_argument("--dir", help="keep the stores here and reuse them next time")
    args = ap.parse_args(argv)
    if args.n < 64 or args.repeats < 1:
        ap.error("--n must be at least 64 (one spectra chunk) and --repeats at least 1")
    numcodecs.blosc.use_threads = False  # as zarr and the loader run it: one thread per decode
    tmp = tempfile.TemporaryDirectory(prefix="codecs-bench-")
    stores = build(Path(args.dir or tmp.name), args.n)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\n{args.n} synthetic objects; numcodecs {numcodecs.__version__}, blosc single-threaded; {cpus} CPU(s) "
          f"allowed; load average {os.getloadavg()[0]:.2f}")
    print("GB/s of raw bytes: median over passes (best pass)")
    for name in ARRAYS:
        rows, crc = measure_array(stores, name, args.repeats)
        nbytes = rows[0]["bytes"]
        base = {r["codec"]: r for r in rows}
        lz4_dec = base["lz4"]["decode"][0]
        print(f"\n{name}: {rows[0]['chunks']} chunks, {nbytes / 2**20:.1f} MiB raw")
        print(f"{'codec':<16}{'ratio':>7}{'on disk':>9}{'decode GB/s':>18}{'x lz4':>7}{'x copy':>8}"
              f"{'encode GB/s':>18}{'x lz4':>7}  store's bytes")
        for r in rows:
            enc = r["encode"]
            x_enc = f"{base['lz4']['encode'][0] / enc[0]:6.2f}x" if enc else f"{'-':>7}"
            same = "-" if r["same"] is None else ("same" if r["same"] else "differ")
            if r["codec"].startswith("zstd"):
                same = "(not a store option)"
            print(f"{r['codec']:<16}{r['ratio']:>6.2f}x{1 / r['ratio']:>8.2f}x{gbs(nbytes, r['decode']):>18}"
                  f"{lz4_dec / r['decode'][0]:>6.2f}x{rows[0]['decode'][0] / r['decode'][0]:>7.2f}x"
                  f"{gbs(nbytes, enc):>18}{x_enc}  {same}")
        print(f"CRC-32C (google-crc32c, {_crc_impl()}) {gbs(nbytes, crc['crc32c'])} GB/s, zlib CRC-32 "
              f"{gbs(nbytes, crc['zlib'])} GB/s: {crc['zlib'][0] / crc['crc32c'][0]:.2f}x zlib")
        print(f"CRC-32C of the chunk files as ingest hashes them (checksums.file_crc, page cache) "
              f"{gbs(nbytes, crc['files'])} GB/s")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


def _crc_impl() -> str:
    import google_crc32c

    return "C extension" if google_crc32c.implementation == "c" else "pure Python"


if __name__ == "__main__":
    sys.exit(main())
