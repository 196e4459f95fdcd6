"""The loader: shapes and masks, determinism, rank disjointness, exact resume, workers, in-memory mode."""

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import built_before_checksums

from astrom3_hpc.core.constants import SEQ_LEN
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches, epoch_loader
from astrom3_hpc.data.store import Store


def _spec(store, **kw):
    return LoaderSpec(str(store), **{"batch_size": 16, **kw})


def test_batch_shapes_and_masks(tiny_store):
    b = TrimodalBatches(_spec(tiny_store))
    batch = next(b.iter_epoch(0))
    assert batch["lc"].shape == (16, SEQ_LEN, 9) and batch["lc_mask"].shape == (16, SEQ_LEN)
    assert batch["spec"].shape == (16, 3, 2575) and batch["meta"].shape == (16, 34)
    assert batch["label"].dtype == torch.int64 and batch["present"].shape == (16, 3)
    s = Store(tiny_store)
    lengths = np.diff(s.offsets)[batch["index"].numpy()]
    np.testing.assert_array_equal(batch["lc_mask"].sum(1).numpy(), np.minimum(lengths, SEQ_LEN))
    for j in range(16):
        n = int(batch["lc_mask"][j].sum())
        assert torch.all(batch["lc"][j, n:, :3] == 0)  # zero padding at the end
        assert torch.all(batch["lc"][j, :, 3:] == batch["lc"][j, 0, 3:])  # aux repeated on every step


def test_train_windows_are_random_eval_windows_centred(tiny_store):
    s = Store(tiny_store)
    long_rows = np.flatnonzero(np.diff(s.offsets) > SEQ_LEN + 50)
    rows = np.intersect1d(long_rows, s.split(42, "full", "val"))[:4]
    ev = TrimodalBatches(_spec(tiny_store, split="val", train=False))
    a = ev.make_batch(rows, epoch=0, batch_index=0)
    b = ev.make_batch(rows, epoch=5, batch_index=3)
    assert torch.equal(a["lc"], b["lc"])
    values = s.root["lc/values"]
    r = rows[0]
    n = s.offsets[r + 1] - s.offsets[r]
    start = s.offsets[r] + (n - SEQ_LEN) // 2
    np.testing.assert_array_equal(a["lc"][0, :, :3].numpy(), values[start:start + SEQ_LEN])
    tr = TrimodalBatches(_spec(tiny_store, split="val", train=True))
    c = tr.make_batch(rows, epoch=0, batch_index=0)
    d = tr.make_batch(rows, epoch=1, batch_index=0)
    assert not torch.equal(c["lc"], d["lc"])
    assert torch.equal(c["lc"], tr.make_batch(rows, epoch=0, batch_index=0)["lc"])


def test_epoch_order_is_deterministic_and_changes_per_epoch(tiny_store):
    a = TrimodalBatches(_spec(tiny_store))
    b = TrimodalBatches(_spec(tiny_store))
    np.testing.assert_array_equal(a.rank_rows(3), b.rank_rows(3))
    assert not np.array_equal(a.rank_rows(3), a.rank_rows(4))
    train = Store(tiny_store).split(42, "full", "train")
    rows = a.rank_rows(0)
    assert len(np.unique(rows)) == len(rows) == a.num_batches() * 16 and np.isin(rows, train).all()
    assert len(train) - len(rows) < 16  # only the incomplete last batch is dropped


def test_chunk_level_shuffle_reads_few_chunks_per_batch(tiny_store):
    b = TrimodalBatches(_spec(tiny_store, buffer_chunks=2))
    chunks_per_batch = [len(np.unique(r // b.chunk)) for r in b.batch_rows(0)]
    # A fully random order would touch ~all 40 chunks every batch; the buffer bounds it.
    assert max(chunks_per_batch) <= 2 * 2 + 1


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_and_equal_sized(tiny_store, world):
    parts = [TrimodalBatches(_spec(tiny_store, world_size=world, rank=r)).rank_rows(2) for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    allrows = np.concatenate(parts)
    assert len(np.unique(allrows)) == len(allrows)
    n_train = len(Store(tiny_store).split(42, "full", "train"))
    assert n_train - world * 16 < len(allrows) <= n_train  # only incomplete batches are dropped


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_cover_the_split_with_equal_batch_counts(tiny_store, world):
    bs = [TrimodalBatches(_spec(tiny_store, split="test", train=False, world_size=world, rank=r))
          for r in range(world)]
    counts = {b.num_batches() for b in bs}
    assert len(counts) == 1
    for k in range(counts.pop()):
        sizes = [len(b.batch_rows(0)[k]) for b in bs]
        assert max(sizes) - min(sizes) <= 1
    allrows = np.concatenate([b.rank_rows(0) for b in bs])
    np.testing.assert_array_equal(np.sort(allrows), Store(tiny_store).split(42, "full", "test"))


@pytest.mark.parametrize("split,global_batch", [("val", 16), ("val", 64), ("test", 12), ("train", 4), ("val", 12)])
def test_eval_global_batches_do_not_depend_on_the_world_size(tiny_store, split, global_batch):
    """Catches a one-object validation tail (65 objects, global batch 16 or 64) kept as its own batch on 1 rank
    and folded into the previous one on 2: the same weights then had different pretraining validation losses (a
    lone object's contrastive loss is 0 whatever the weights), and the best epoch depended on the rank count.
    A tail shorter than the world (510 train objects by 4) leaves some ranks an empty share."""
    layouts = []
    for world in [w for w in (1, 2, 3, 4) if global_batch % w == 0]:
        per_rank = [TrimodalBatches(_spec(tiny_store, split=split, train=False, batch_size=global_batch // world,
                                          world_size=world, rank=r)).batch_rows(0) for r in range(world)]
        layouts.append([np.concatenate([p[k] for p in per_rank]).tolist() for k in range(len(per_rank[0]))])
    assert len(layouts) >= 3 and all(lay == layouts[0] for lay in layouts)
    assert min(len(b) for b in layouts[0]) >= 2  # no batch of one object


def test_spectra_reads_can_be_skipped(tiny_store):
    batch = next(TrimodalBatches(_spec(tiny_store, read_spectra=False)).iter_epoch(0))
    assert "spec" not in batch and batch["lc"].shape[0] == 16


def test_resume_from_position_gives_identical_batches(tiny_store):
    b = TrimodalBatches(_spec(tiny_store))
    full = list(b.iter_epoch(1))
    resumed = list(TrimodalBatches(_spec(tiny_store)).iter_epoch(1, start_batch=5))
    assert len(resumed) == len(full) - 5
    for x, y in zip(full[5:], resumed):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_workers_and_in_memory_give_the_same_batches(tiny_store):
    b = TrimodalBatches(_spec(tiny_store))
    ref = list(epoch_loader(b, 0))
    with_workers = list(epoch_loader(TrimodalBatches(_spec(tiny_store)), 0, num_workers=2))
    mem = list(epoch_loader(TrimodalBatches(_spec(tiny_store, in_memory=True)), 0))
    assert len(ref) == len(with_workers) == len(mem)
    for x, y, z in zip(ref, with_workers, mem):
        for k in x:
            assert torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]), k


def _same(xs, ys):
    xs, ys = list(xs), list(ys)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_recycled_batch_memory_is_never_overwritten_while_reachable(tiny_store):
    b = TrimodalBatches(_spec(tiny_store))
    rows = b.batch_rows(0)
    arena = b._local_arena()
    held = [b.make_batch(r, 0, k) for k, r in enumerate(rows[:6])]  # more than the slots: the rest is fresh
    assert [arena.owns(x["spec"]) for x in held] == [True] * arena.slots + [False] * (6 - arena.slots)
    copies = [{k: v.clone() for k, v in x.items()} for x in held]
    view = held[0]["spec"][:2]  # a view alone keeps its slot
    del held[0]
    for k, r in enumerate(rows[6:12]):
        b.make_batch(r, 0, k)  # dropped at once: these reuse one free slot over and over
    assert torch.equal(view, copies[0]["spec"][:2])
    _same(held, copies[1:])
    ptr = view.data_ptr()
    del view
    again = b.make_batch(rows[0], 0, 0)
    assert again["spec"].data_ptr() == ptr  # the slot is free once nothing reaches it
    _same([again], [copies[0]])


def test_persistent_workers_fill_shared_slots_and_match_in_process_batches(tiny_store):
    ref = TrimodalBatches(_spec(tiny_store))
    b = TrimodalBatches(_spec(tiny_store))
    try:
        _same(epoch_loader(b, 0, num_workers=2), ref.iter_epoch(0))  # all held at once: slots, then fresh memory
        arena = b._workers[2][1]
        in_slots = 0
        for x, y in zip(epoch_loader(b, 1, num_workers=2), ref.iter_epoch(1)):  # one at a time: slots only
            _same([x], [y])
            in_slots += arena.owns(x["spec"]) and arena.owns(x["lc"]) and arena.owns(x["lc_mask"])
        assert in_slots == ref.num_batches()
        it = iter(epoch_loader(b, 2, num_workers=2))
        next(it)
        del it  # an abandoned epoch (preemption): the next one, resumed mid-way, is still exact
        _same(epoch_loader(b, 2, start_batch=3, num_workers=2), ref.iter_epoch(2, start_batch=3))
    finally:
        b.close()


def test_persistent_workers_stop_when_the_batches_object_is_dropped(tiny_store):
    import gc
    import os
    import time

    b = TrimodalBatches(_spec(tiny_store))
    assert sum(1 for _ in epoch_loader(b, 0, num_workers=2)) == b.num_batches()
    pids = [w.pid for w in b._workers[2][2]._iterator._workers]
    assert len(pids) == 2 and all(os.path.exists(f"/proc/{p}") for p in pids)
    gc.disable()  # no cycle collector: dropping the last reference alone must stop them
    try:
        del b
        deadline = time.monotonic() + 20
        while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gc.enable()
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)


def test_rfr_score_can_be_excluded(tiny_store):
    with_rfr = next(TrimodalBatches(_spec(tiny_store)).iter_epoch(0))
    without = next(TrimodalBatches(_spec(tiny_store, use_rfr_score=False)).iter_epoch(0))
    assert torch.all(without["lc"][:, :, 6] == 0) and not torch.all(with_rfr["lc"][:, :, 6] == 0)
    assert torch.equal(with_rfr["lc"][:, :, :6], without["lc"][:, :, :6])


def test_direct_chunk_reads_equal_zarr_reads(tiny_store):
    from astrom3_hpc.data.chunks import ChunkReader

    s = Store(tiny_store)
    for name in ("spec", "lc/values", "meta"):
        arr = s.array(name)
        r = ChunkReader(arr)
        assert r.direct, name  # the layout `astrom3 ingest` writes is read without zarr's per-chunk overhead
        n_chunks = -(-arr.shape[0] // r.rows)
        for k in range(n_chunks):  # the last chunk is partial in every one of these arrays
            np.testing.assert_array_equal(r.read(k), arr[k * r.rows:(k + 1) * r.rows], err_msg=f"{name} {k}")
        with pytest.raises(IndexError):
            r.read(n_chunks)


@pytest.mark.parametrize("layout,direct", [({"shard_chunks": 4}, False), ({"compression": "lz4hc"}, True),
                                           ({"compression": "lz4"}, True)])
def test_other_layouts_give_the_same_batches(tmp_path, tiny_store, layout, direct):
    """Sharded stores go through zarr; compressed ones are decoded chunk by chunk. Batches are identical to
    the default (uncompressed, memory-mapped) layout's."""
    from astrom3_hpc.data.chunks import ChunkReader
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    out = tmp_path / "other.zarr"
    ingest(SyntheticSource(640, seed=0), out, IngestOptions(on_error="skip", progress=False,
                                                              layout_kw={**SMALL_LAYOUT, **layout}))
    other = Store(out)
    assert ChunkReader(other.array("spec")).direct is direct
    assert Store(tiny_store).array("spec").metadata.codecs[-1].__class__.__name__ == "BytesCodec"
    if "compression" in layout:
        assert other.attrs["layout"]["compression"] == layout["compression"]
        for name in ("spec", "lc/values"):
            assert other.array(name).metadata.codecs[-1].cname.value == layout["compression"], name
        r, arr = ChunkReader(other.array("lc/values")), other.array("lc/values")
        last = (arr.shape[0] - 1) // r.rows
        np.testing.assert_array_equal(r.read(last), arr[last * r.rows:])
        out_buf = np.full((r.rows, 3), np.nan, np.float32)
        np.testing.assert_array_equal(r.read(0, out=out_buf), arr[:r.rows])  # decoded in place
        np.testing.assert_array_equal(out_buf, arr[:r.rows])
    ref, got = TrimodalBatches(_spec(tiny_store)), TrimodalBatches(_spec(out))
    for epoch in (1, 2):  # the second epoch reads chunks the first one already mapped
        for x, y in zip(ref.iter_epoch(epoch), got.iter_epoch(epoch)):
            for k in x:
                assert torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("streams", [1, 4])
def test_each_chunk_is_decoded_once_per_epoch_and_the_cache_stays_small(tiny_store, streams):
    b = TrimodalBatches(_spec(tiny_store, streams=streams))
    b._open()
    reads, largest = [], 0
    inner = b._spec_chunks.read

    def counting(k, out=None):
        reads.append(k)
        return inner(k, out)

    b._spec_chunks.read = counting
    for _ in b.iter_epoch(0):
        largest = max(largest, len(b._cache))
    # Decoded once per run of batches that needs it: runs are contiguous stretches of the shuffled order, so
    # only a chunk group straddling the border of two runs is decoded twice.
    one_run = TrimodalBatches(_spec(tiny_store, streams=1)).batch_rows(0)
    per_run = -(-len(one_run) // streams)
    runs_touching = Counter()
    for j in range(streams):
        runs_touching.update({int(c) for r in one_run[j * per_run:(j + 1) * per_run] for c in np.unique(r // b.chunk)})
    assert Counter(reads) == runs_touching
    assert len(reads) - len(runs_touching) <= (streams - 1) * b.spec.buffer_chunks
    assert largest <= streams * (2 * b.spec.buffer_chunks + 2)


def test_batches_are_dealt_from_interleaved_runs(tiny_store):
    one = TrimodalBatches(_spec(tiny_store, streams=1)).batch_rows(0)
    four = TrimodalBatches(_spec(tiny_store, streams=4)).batch_rows(0)
    run = -(-len(one) // 4)
    assert len(one) == len(four) and run > 1
    # Position 1 of the dealt order is the first batch of the second run.
    np.testing.assert_array_equal(four[0], one[0])
    np.testing.assert_array_equal(four[1], one[run])
    assert sorted(map(tuple, one)) == sorted(map(tuple, four))


def test_mapped_chunks_are_bounded_so_big_stores_do_not_exhaust_file_descriptors(tmp_path, monkeypatch):
    import os

    from astrom3_hpc.data import chunks
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    out = tmp_path / "raw.zarr"
    ingest(SyntheticSource(200, seed=1), out, IngestOptions(on_error="skip", progress=False,
                                                              layout_kw={**SMALL_LAYOUT, "compression": "none"}))
    monkeypatch.setattr(chunks, "max_mapped", lambda: 3)
    arr = Store(out).array("spec")
    r = chunks.ChunkReader(arr)
    fds = len(os.listdir("/proc/self/fd"))
    n_chunks = -(-arr.shape[0] // r.rows)
    assert n_chunks > 6
    for k in range(n_chunks):
        np.testing.assert_array_equal(r.read(k), arr[k * r.rows:(k + 1) * r.rows])
    assert len(r._mapped) == 3
    assert len(os.listdir("/proc/self/fd")) <= fds + 3


def test_mapped_chunks_take_an_eighth_of_the_descriptors_left_free():
    """A site's low `ulimit -n` (64) failed a fine-tune with EMFILE: the floor of 16 mapped chunks per array and
    process was over what the limit left once torch and the store were open."""
    import os
    import resource

    from astrom3_hpc.data import chunks

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = len(os.listdir("/proc/self/fd"))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 41, hard))
        few = chunks.max_mapped()
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 4, hard))
        fewest = chunks.max_mapped()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (few, fewest) == (5, 2)


class _Failing(torch.utils.data.IterableDataset):
    def __init__(self, error: BaseException):
        self.error = error

    def __iter__(self):
        raise self.error


@pytest.mark.parametrize("error, line", [
    (OSError(24, "Too many open files"), "[Errno 24] Too many open files (this process may open"),
    (ValueError("s.zarr: chunk spec/c/1/0/0 is damaged"), "s.zarr: chunk spec/c/1/0/0 is damaged (in DataLoader "
                                                          "worker process 0)")])
def test_an_error_in_a_loader_worker_is_one_line_without_the_workers_traceback(error, line, capsys):
    from astrom3_hpc.core.errors import EXIT_BAD_INPUT, run_reporting_errors

    def epoch():
        next(iter(torch.utils.data.DataLoader(_Failing(error), batch_size=None, num_workers=1)))

    assert run_reporting_errors("finetune", epoch, (ValueError,)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("astrom3 finetune: error: " + line) and "\n" not in err, err


@pytest.mark.parametrize("compression", ["lz4hc", "none"])
def test_a_corrupt_chunk_file_is_a_clear_error_naming_it(tmp_path, compression):
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.store import StoreError
    from astrom3_hpc.data.synthetic import SyntheticSource
    from conftest import SMALL_LAYOUT

    out = tmp_path / "s.zarr"
    ingest(SyntheticSource(100, seed=2), out, IngestOptions(on_error="skip", progress=False,
                                                              layout_kw={**SMALL_LAYOUT, "compression": compression}))
    chunk = out / "spec" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:1000])  # truncated, as by a full disk or an interrupted copy
    damaged = r"spec/c/1/0/0: chunk 'c/1/0/0' of array 'spec' is damaged"
    with pytest.raises(StoreError, match=damaged + r" \(1000 bytes"):  # the size check on opening
        TrimodalBatches(_spec(out, train=False, batch_size=100))
    built_before_checksums(out)  # the decoder's error, same message
    b = TrimodalBatches(_spec(out, train=False, batch_size=100))
    with pytest.raises(StoreError, match=damaged):
        list(b.iter_epoch(0))
