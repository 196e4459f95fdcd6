"""Science API arguments refused before any work, with a ValueError naming them: an `embed_run` output whose
replacement would delete data, and a `VectorIndex.search` query of the wrong dimension or k < 1.

No model is trained: the embedding pass itself (`embed._embed_run`) is replaced by a stub that records the output
it was given, so a guard that let a bad output through is seen without a minute of encoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from astrom3_hpc.science.common import EMBEDDINGS_SCHEMA


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A run dir (config naming its store, weights, checkpoints/), its store, and a stubbed embedding pass."""
    from astrom3_hpc.science import embed

    store = tmp_path / "store.zarr"
    (store / "lc").mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"schema_version": 1}}))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"data:\n  store: {store}\n")
    (run / "best_model.pt").write_bytes(b"weights")
    calls: list[Path] = []

    def stub(run_dir, store, splits, out, *rest):
        calls.append(Path(out))
        return {"embeddings": str(out)}

    monkeypatch.setattr(embed, "_embed_run", stub)
    return run, store, calls


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _embeddings_store(path: Path, schema: str) -> Path:
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"schema": schema, "complete": True}}))
    return path


def test_embed_refuses_an_output_that_would_delete_data(layout, tmp_path):
    """Catches embed_run(out=...) replacing a user's folder, the store being embedded, or the run dir with the
    new embeddings (best_model.pt, checkpoints/ and the store's arrays gone)."""
    from astrom3_hpc.science.embed import embed_run

    run, store, calls = layout
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious\n")
    foreign = _embeddings_store(tmp_path / "other.zarr", "something-else/1")  # a zarr group of another tool
    before = _snapshot(tmp_path)
    cases = [
        (victim, store, "exists and is not an embeddings store"),
        (run / "checkpoints", store, "exists and is not an embeddings store"),
        (run / "best_model.pt", store, "exists and is not an embeddings store"),
        (foreign, store, "exists and is not an embeddings store"),
        (store, store, "is or holds the store"),
        (store, None, "is or holds the store"),  # the store named by the run's config
        (store / "emb", store, "lies inside the store"),
        (run, store, "is or holds the run dir"),
        (tmp_path, store, "is or holds the run dir"),
    ]
    for out, st, why in cases:
        with pytest.raises(ValueError, match=rf"^embeddings output {out} .*{why}"):
            embed_run(run, store=st, out=out)
    assert calls == []
    assert not (store / "emb").exists()
    assert _snapshot(tmp_path) == before


def test_embed_replaces_an_earlier_embeddings_store_and_writes_a_new_one(layout, tmp_path):
    """The guard must not refuse what embed_run is for: a new path, the default inside the run dir, or an earlier
    embeddings store (of any version of the format) that is redone."""
    from astrom3_hpc.science.embed import embed_run

    run, store, calls = layout
    earlier = _embeddings_store(tmp_path / "old.zarr", EMBEDDINGS_SCHEMA)
    older = _embeddings_store(tmp_path / "older.zarr", "astrom3-embeddings/0")
    default = _embeddings_store(run / "science" / "embeddings.zarr", EMBEDDINGS_SCHEMA)
    for out in (tmp_path / "new" / "e.zarr", earlier, older, None):
        embed_run(run, store=store, out=out)
    assert calls == [tmp_path / "new" / "e.zarr", earlier, older, default]


def test_embed_cli_reports_a_refused_output_in_one_line(layout, tmp_path, capsys):
    """Catches `astrom3 embed --out-dir STORE` writing embeddings.zarr into the data store."""
    from astrom3_hpc.cli import main

    run, store, calls = layout
    capsys.readouterr()
    assert main(["embed", str(run), "--store", str(store), "--out-dir", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"astrom3 embed: error: embeddings output {store / 'embeddings.zarr'} lies inside the "
                           f"store {store}, which must stay as ingested; choose another output")
    assert calls == [] and not (store / "embeddings.zarr").exists()


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw", "ivf"])
def test_search_refuses_a_query_of_another_dimension_and_k_below_one(kind):
    """Catches faiss kinds failing with an empty AssertionError, and `exact` answering k=0 with empty arrays and
    k=-1 with numpy's 'negative dimensions are not allowed'."""
    from astrom3_hpc.science.search import VectorIndex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = VectorIndex(x, kind)
    with pytest.raises(ValueError, match=r"^queries have dimension 7, the index 8$"):
        ix.search(rng.normal(size=(2, 7)), 3)
    with pytest.raises(ValueError, match=r"^queries must be a vector or a 2-D array \(n_queries, 8\)"):
        ix.search(x[None, :2], 3)
    for k in (0, -1):
        with pytest.raises(ValueError, match=rf"^-k \(k\) must be a whole number of at least 1, got {k}$"):
            ix.search(x[:2], k)
    sims, idx = ix.search(x[3], 2)  # one query as a vector
    assert sims.shape == idx.shape == (1, 2) and idx[0, 0] == 3
