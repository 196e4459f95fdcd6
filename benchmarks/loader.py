"""Loader throughput (training mode, batch 512) against the reference's per-object preprocessing.

Baseline: a map-style dataset that, like the reference, redoes every object's numpy preprocessing on every
access (dedupe, sort, MAD normalisation, spectrum interpolation, metadata transforms, z-scoring), windows the
light curve and collates with torch's default collate. The raw objects are held in memory, so the baseline
pays no file parsing: its cost is preprocessing alone. Ours reads the preprocessed Zarr store by whole chunks.
Both run in this process on the same objects; ratios are per core.

    python benchmarks/loader.py [--n 4096] [--batch 512] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.constants import SEQ_LEN  # noqa: E402
from astrom3_hpc.data.ingest import IngestOptions, ingest  # noqa: E402
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches, epoch_loader  # noqa: E402
from astrom3_hpc.data.preprocess import preprocess  # noqa: E402
from astrom3_hpc.data.store import Store  # noqa: E402
from astrom3_hpc.data.synthetic import SyntheticSource  # noqa: E402


class PerItemDataset(torch.utils.data.Dataset):
    def __init__(self, objs, stats, rng_seed=0):
        self.objs, self.stats = objs, stats
        self.rng = np.random.default_rng(rng_seed)

    def __len__(self):
        return len(self.objs)

    def __getitem__(self, i):
        pre, present = preprocess(self.objs[i])
        v = pre.lc_values
        n = len(v)
        if n > SEQ_LEN:
            s = int(self.rng.integers(0, n - SEQ_LEN + 1))
            v, n = v[s:s + SEQ_LEN], SEQ_LEN
        lc = np.zeros((SEQ_LEN, 9), np.float32)
        mask = np.zeros(SEQ_LEN, np.float32)
        lc[:n, :3], mask[:n] = v, 1
        aux = (pre.aux - self.stats["aux_mean"]) / self.stats["aux_std"]
        lc[:, 3:] = np.concatenate([aux, pre.lc_stats])
        meta = (pre.meta - self.stats["meta_mean"]) / self.stats["meta_std"]
        return {"lc": lc, "lc_mask": mask, "spec": pre.spec, "meta": meta.astype(np.float32),
                "label": self.objs[i].label}


def rate(iterable, n_max) -> float:
    t0 = time.perf_counter()
    n = 0
    for batch in iterable:
        n += len(batch["label"])
        if n >= n_max:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--store", help="reuse a store built from SyntheticSource(n, seed 0)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory()
    store = Path(args.store) if args.store else Path(tmp.name) / "bench.zarr"
    if not store.exists():
        t0 = time.perf_counter()
        ingest(SyntheticSource(args.n, seed=0), store, IngestOptions(on_error="skip", progress=False))
        print(f"built {store} with {args.n} objects in {time.perf_counter() - t0:.1f} s")
    s = Store(store)
    train = s.split(42, "full", "train")
    src = SyntheticSource(s.n_objects, seed=0)
    objs = [src.get(int(i)) for i in train]
    stats = s.stats(42)
    n_epoch = (len(train) // args.batch) * args.batch

    base = PerItemDataset(objs, stats)
    base_loader = torch.utils.data.DataLoader(base, batch_size=args.batch, shuffle=True, drop_last=True)
    r_base = rate(base_loader, n_epoch)


    rows = []
    b = TrimodalBatches(LoaderSpec(str(store), batch_size=args.batch))
    rows.append(("zarr, 0 workers", 1, rate(epoch_loader(b, 1), n_epoch)))
    b = TrimodalBatches(LoaderSpec(str(store), batch_size=args.batch))
    rows.append(("zarr, 2 workers", 2, rate(epoch_loader(b, 1, num_workers=2), n_epoch)))
    b = TrimodalBatches(LoaderSpec(str(store), batch_size=args.batch, in_memory=True))
    rate(b.iter_epoch(0), args.batch)  # loads the arrays once
    rows.append(("in-memory, 0 workers", 1, rate(epoch_loader(b, 1), n_epoch)))
    print(f"\nloader benchmark: {len(train)} training objects, batch {args.batch}, {os.cpu_count()} cores")
    print(f"{'loader':<34}{'cores':>6}{'samples/s':>12}{'per core':>12}{'x baseline/core':>17}")
    print(f"{'baseline: per-item preprocessing':<34}{1:>6}{r_base:>12.0f}{r_base:>12.0f}{1.0:>17.1f}")
    for name, cores, r in rows:
        print(f"{name:<34}{cores:>6}{r:>12.0f}{r / cores:>12.0f}{r / cores / r_base:>17.1f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
