"""Science tools on inputs that lack something: a query without rfr_score, an object without the queried
modality, metadata missing at ingestion (--meta-nan impute), a store without planted outliers.

One module-scoped store (400 synthetic objects, 5 % of them with one metadata value missing, ingested with
--meta-nan impute) and one real tiny pretraining (configs/test.yaml, FAST overrides) on it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_LAYOUT
from test_train import run_job

GEN = dict(missing_rate=0.05, unseen_fraction=0.05, mislabel_fraction=0.05)
N = 400


@pytest.fixture(scope="module")
def impute_run(tmp_path_factory):
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource
    from astrom3_hpc.science.embed import embed_run

    root = tmp_path_factory.mktemp("science_inputs")
    store = root / "s.zarr"
    ingest(SyntheticSource(N, seed=0, **GEN), store,
           IngestOptions(on_error="skip", progress=False, layout_kw=SMALL_LAYOUT, meta_nan="impute"))
    run = root / "run"
    run_job("pretrain", run, store)
    embed_run(run, batch_size=100)
    return run, store


def _embeddings_copy(run: Path, dst: Path, rows: list[int], modality: str) -> Path:
    """A copy of the run's embeddings in which the objects at `rows` lack `modality` (store `present` False)."""
    import zarr

    from astrom3_hpc.science.common import read_embeddings

    src = run / "science" / "embeddings.zarr"
    shutil.copytree(src, dst)
    emb = read_embeddings(dst)
    present = emb.present.copy()
    col = list(emb.attrs["store_modalities"]).index(modality)
    present[[emb.position_of_row(r) for r in rows], col] = False
    zarr.open_group(str(dst), mode="r+")["present"][:] = present
    return dst


# ------------------------------------------------------------------------------------------------------ search

def test_query_file_without_rfr_score_gets_the_train_mean(impute_run, tmp_path):
    from astrom3_hpc.core.constants import AUX_COLUMNS
    from astrom3_hpc.data.store import Store
    from astrom3_hpc.data.synthetic import SyntheticSource
    from astrom3_hpc.science.common import load_model
    from astrom3_hpc.science.search import embed_file, search_run

    run, store = impute_run
    st = Store(store)
    obj = SyntheticSource(N, seed=0, **GEN).get(int(st.split(42, "full", "test")[0]))
    q = tmp_path / "star.csv"
    q.write_text("hjd,flux,flux_err\n" + "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in obj.lc.tolist()))
    rfr = AUX_COLUMNS.index("rfr_score")
    missing = [float(v) for v in obj.aux]
    missing[rfr] = float("nan")  # ZTF / Stripe 82 objects have no rfr_score
    at_mean = list(missing)
    at_mean[rfr] = float(st.stats(42)["aux_mean"][rfr])
    model, _, _ = load_model(run)
    _, vec = embed_file(q, model, st, 42, True, missing)
    _, ref = embed_file(q, model, st, 42, True, at_mean)
    assert np.isfinite(vec).all()
    np.testing.assert_allclose(vec, ref, atol=1e-6)  # the loader's rule: a missing value is the train mean
    hits = search_run(run, query_file=q, aux=missing, targets=["photo"], k=5)["queries"][0]["neighbours"]["photo"]
    assert len(hits) == 5 and all(np.isfinite(h["similarity"]) for h in hits)


def test_a_non_finite_query_vector_is_refused(impute_run, tmp_path, monkeypatch):
    from astrom3_hpc.science import search
    from astrom3_hpc.science.common import read_embeddings

    run, _ = impute_run
    path = run / "science" / "embeddings.zarr"
    nan = np.full(read_embeddings(path).attrs["embed_dim"], np.nan, np.float32)
    q = tmp_path / "bad.csv"
    q.write_text("hjd,flux,flux_err\n1,2,0.1\n")
    monkeypatch.setattr(search, "embed_file", lambda *a, **k: ("photo", nan))
    with pytest.raises(ValueError, match=r"file-bad\.csv.*not finite"):
        search.search_run(run, query_file=q, k=3, out_dir=tmp_path / "sci", embeddings=path)
    assert not (tmp_path / "sci" / "search").exists()  # nothing written for a query that was not searched


def test_search_refuses_an_object_lacking_the_query_modality(impute_run, tmp_path):
    from astrom3_hpc.science.common import read_embeddings
    from astrom3_hpc.science.search import search_run

    run, _ = impute_run
    emb = read_embeddings(run / "science" / "embeddings.zarr")
    row, oid = int(emb.row[5]), int(emb.object_id[5])
    path = _embeddings_copy(run, tmp_path / "e.zarr", [row], "spectra")
    kw = dict(modality="spectra", k=3, embeddings=path, out_dir=tmp_path / "sci")
    with pytest.raises(ValueError, match=rf"object {oid} \(row {row}\) has no spectra.*has: photo, meta"):
        search_run(run, object_ids=[oid], **kw)
    with pytest.raises(ValueError, match=rf"row {row}\) has no spectra"):
        search_run(run, rows=[row], **kw)
    # Its other modalities are still queries; as a candidate it is left out of the spectra neighbours.
    res = search_run(run, rows=[row], modality="photo", targets=["photo", "spectra"], k=3, embeddings=path,
                     out_dir=tmp_path / "sci")["queries"][0]["neighbours"]
    assert res["photo"][0]["row"] == row and row not in [h["row"] for h in res["spectra"]]


# ------------------------------------------------------------------------------------------------ umap, subtypes

def test_umap_view_uses_only_objects_with_its_modality(impute_run, tmp_path, monkeypatch):
    from astrom3_hpc.science import umap_view

    run, _ = impute_run
    rows = [0, 7, 30]
    path = _embeddings_copy(run, tmp_path / "e.zarr", rows, "meta")
    seen = []

    def fake_umap(x, *a, **k):  # the projection itself is umap-learn's; what is projected is the point here
        seen.append(len(x))
        return np.zeros((len(x), 2), np.float32)

    monkeypatch.setattr(umap_view, "umap_embedding", fake_umap)
    s = umap_view.umap_run(run, view="meta", embeddings=path, out_dir=tmp_path / "sci")
    n = json.loads((tmp_path / "sci" / "umap_meta.json").read_text())["n_points"]
    csv_rows = {int(line.split(",")[0]) for line in (tmp_path / "sci" / "umap_meta.csv").read_text().split()[1:]}
    assert len(csv_rows) == n and not csv_rows & set(rows)
    assert seen == [n] == [s["n_points"]] and s["n_left_out"] == len(rows)
    assert umap_view.umap_run(run, view="photo", embeddings=path, out_dir=tmp_path / "sci")["n_left_out"] == 0


def test_subtypes_views_use_only_objects_with_their_modality(impute_run, tmp_path):
    from astrom3_hpc.science.common import read_embeddings
    from astrom3_hpc.science.subtypes import subtypes_run

    run, _ = impute_run
    emb = read_embeddings(run / "science" / "embeddings.zarr")
    rot = emb.row[emb.label == emb.class_names.index("ROT")]
    path = _embeddings_copy(run, tmp_path / "e.zarr", [int(rot[0]), int(rot[1])], "spectra")
    out = subtypes_run(run, "ROT", embeddings=path, out_dir=tmp_path / "sci")
    n = out["n_objects"]
    assert sum(sum(c.values()) for c in out["clusters"]["spectra"].values()) == n - 2
    assert sum(sum(c.values()) for c in out["clusters"]["raw_all"].values()) == n
    assert out["n_per_view"]["spectra"] == n - 2 and out["n_per_view"]["photo"] == n


def test_subtypes_fills_missing_metadata_as_the_loader_does(impute_run, tmp_path):
    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.data.store import Store
    from astrom3_hpc.science.common import read_embeddings
    from astrom3_hpc.science.subtypes import raw_features, subtypes_run
    from astrom3_hpc.science.truth import synthetic_truth

    run, store = impute_run
    st = Store(store)
    emb = read_embeddings(run / "science" / "embeddings.zarr")
    truth = synthetic_truth({"provenance": emb.attrs["store_provenance"]}, emb.label, emb.row)
    rows = emb.row[(emb.label == emb.class_names.index("ROT")) & (truth.true_class[emb.row] == "ROT")]
    out = subtypes_run(run, "ROT", out_dir=tmp_path / "sci")
    assert out["n_objects"] == len(rows)
    assert not st.root["meta_present"].oindex[rows].all()  # the class holds objects with missing metadata
    assert all(np.isfinite(out["ari"][k]) for k in ("raw_meta", "raw_all")), out["ari"]
    feats = raw_features(st, 42, rows)
    b = TrimodalBatches(LoaderSpec(store=str(store), seed=42, split="test", train=False))
    np.testing.assert_allclose(feats["raw_meta"], b.meta[rows], rtol=1e-6, atol=1e-6)
    assert np.isfinite(feats["raw_all"]).all()


# ---------------------------------------------------------------------------------------------------- outliers

def test_outliers_json_is_strict_json_without_positives(impute_run, tmp_path, monkeypatch, capsys):
    from astrom3_hpc.cli.science import main
    from astrom3_hpc.science import truth as truth_mod

    run, _ = impute_run
    real = truth_mod.synthetic_truth

    def no_outliers(*a, **k):  # a generator store without planted mislabels or unseen classes (the default)
        t = real(*a, **k)
        return dataclasses.replace(t, mislabeled=np.zeros_like(t.mislabeled), unseen=np.zeros_like(t.unseen))

    monkeypatch.setattr(truth_mod, "synthetic_truth", no_outliers)
    capsys.readouterr()
    assert main(["outliers", str(run), "--top-k", "5", "--out-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)

    def refuse(c):
        raise AssertionError(f"bare {c} in outliers.json")

    out = json.loads((tmp_path / "outliers.json").read_text(), parse_constant=refuse)
    for grp in ("mislabel", "unseen"):
        met = out["metrics"][grp]["combined" if grp == "mislabel" else "knn_average"]
        assert met["n_positive"] == 0 and "roc_auc" not in met and "r_precision" not in met
        assert "no positives" in out["metrics_undefined"][grp]
        assert printed["metrics"][grp]


def test_outliers_top_k_past_the_scored_objects_takes_no_unscored_one(impute_run, tmp_path, capsys):
    """Catches unscored objects (without a class, of an unseen class) becoming mislabel candidates once --top-k
    passed the number of objects: their sentinel rank len+1 was inside the cut."""
    import csv

    from astrom3_hpc.cli.science import main

    run, _ = impute_run
    assert main(["outliers", str(run), "--top-k", str(N + 100), "--out-dir", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "outliers.json").read_text())
    assert out["candidates"] and all(c["label"] >= 0 and c["combined"] is not None for c in out["candidates"])
    with open(tmp_path / "outliers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    mods = ("photo", "spectra", "meta")
    scored = [sum(r[f"z_{m}"] != "" for m in mods) for r in rows]
    assert any(r["label"] == "-1" for r in rows)  # the store has unscored objects
    # Every scored modality is within a cut above the object count; an unscored one never.
    assert [int(r["n_top"]) for r in rows] == scored
    assert [r["candidate"] == "1" for r in rows] == [s >= 2 for s in scored]
    assert out["n_candidates"] == sum(s >= 2 for s in scored) < len(rows)
    capsys.readouterr()
    for bad in ("0", "-3"):
        assert main(["outliers", str(run), "--top-k", bad, "--out-dir", str(tmp_path / "o")]) == 2
        assert f"--top-k (top_k) must be a whole number of at least 1, got {bad}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    from astrom3_hpc.science.outliers import score_outliers
    from astrom3_hpc.science.common import read_embeddings

    with pytest.raises(ValueError, match=r"--min-modalities \(min_modalities\) must be a whole number of at least 1"):
        score_outliers(read_embeddings(run / "science" / "embeddings.zarr"), min_modalities=0)


@pytest.mark.timeout(300)
def test_search_and_umap_take_the_views_of_a_fine_tune_run(impute_run, tmp_path, monkeypatch, capsys):
    """Catches search and umap accepting only photo/spectra/meta/average: a fine-tune run of mode all (views "all"
    and "average") could not be searched at all, not even for the retrieval report, and `--view all` was
    rejected by argparse."""
    from astrom3_hpc.cli.science import main
    from astrom3_hpc.science import umap_view

    _, store = impute_run
    run = tmp_path / "ft"
    run_job("finetune", run, store, sets=("train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16"),
            extra=("--mode", "all", "--init", "scratch"))
    sci = tmp_path / "sci"
    assert main(["embed", str(run), "--out-dir", str(sci), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", str(run), "--query-row", "3", "-k", "4", "--out-dir", str(sci)]) == 0  # its first view
    res = json.loads((sci / "search" / "row-3_all.json").read_text())
    assert res["modality"] == "all" and sorted(res["neighbours"]) == ["all", "average"]
    assert res["neighbours"]["all"][0]["row"] == 3 and len(res["neighbours"]["average"]) == 4
    assert main(["search", str(run), "--query-row", "3", "--modality", "average", "--target", "all",
                 "--out-dir", str(sci)]) == 0
    assert sorted(json.loads((sci / "search" / "row-3_average.json").read_text())["neighbours"]) == ["all"]
    assert main(["search", str(run), "--out-dir", str(sci)]) == 0  # the retrieval report alone: no query view
    assert json.loads((sci / "retrieval.json").read_text())["pairs"] == {}  # one view: no pair of modalities
    capsys.readouterr()
    assert main(["search", str(run), "--query-row", "3", "--modality", "photo", "--out-dir", str(sci)]) == 2
    assert "no embedding 'photo'" in (err := capsys.readouterr().err) and "have ['all', 'average']" in err
    monkeypatch.setattr(umap_view, "umap_embedding", lambda x, *a, **k: np.zeros((len(x), 2), np.float32))
    assert main(["umap", str(run), "--view", "all", "--out-dir", str(sci)]) == 0
    assert json.loads((sci / "umap_all.json").read_text())["n_points"] > 0
    assert main(["umap", str(run), "--view", "photo", "--out-dir", str(sci)]) == 2
    assert "no embedding 'photo'" in capsys.readouterr().err


def test_embed_refuses_counts_below_one_and_a_failure_leaves_no_temporary_store(impute_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """Catches `embed --chunk-rows 0` ending in a ZeroDivisionError traceback after the temporary store was made,
    which then stayed (13 MB for 400 objects, on every attempt), and `--batch-size 0` failing in range()."""
    from astrom3_hpc.cli.science import main
    from astrom3_hpc.science import embed

    run, _ = impute_run
    out = tmp_path / "e" / "embeddings.zarr"
    for option, arg in (("chunk_rows", "--chunk-rows"), ("batch_size", "--batch-size")):
        with pytest.raises(ValueError, match=rf"^{arg} \({option}\) must be a whole number of at least 1, got 0$"):
            embed.embed_run(run, out=out, **{option: 0})
        with pytest.raises(SystemExit) as stop:  # argparse's positive_int
            main(["embed", str(run), arg, "0", "--out-dir", str(tmp_path / "e")])
        assert stop.value.code == 2 and f"argument {arg}: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() or list((tmp_path / "e").iterdir()) == []

    def broken(*a, **k):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(embed, "rank_share", broken)  # a failure right after the temporary store's creation
    with pytest.raises(RuntimeError, match="embedding failed, nothing was written"):
        embed.embed_run(run, out=out, chunk_rows=64)
    assert list((tmp_path / "e").iterdir()) == []


def test_knn_k_and_search_k_below_one_are_refused_by_name(impute_run, tmp_path, capsys):
    """Catches `outliers --knn-k 0` setting every k-NN score to 0 and reporting ROC AUC 0.5 as measured (exit 0),
    and `search -k -3` failing in numpy ("negative dimensions") after a full embedding pass."""
    from astrom3_hpc.cli.science import main
    from astrom3_hpc.science.outliers import knn_distance

    run, _ = impute_run
    capsys.readouterr()
    for cmd, arg, name in (("outliers", "--knn-k", "knn_k"), ("search", "-k", "k")):
        for bad in ("0", "-3"):
            # No embeddings there: a refusal after an embedding pass would have made one.
            assert main([cmd, str(run), arg, bad, "--out-dir", str(tmp_path / "o")]) == 2
            err = capsys.readouterr().err
            assert f"{arg} ({name}) must be a whole number of at least 1, got {bad}" in err
            assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"--knn-k \(knn_k\) must be a whole number of at least 1, got 0"):
        knn_distance(x, x, 0)


def test_recall_over_a_split_without_objects_is_null_and_said(impute_run, tmp_path, capsys, caplog):
    """Catches retrieval.json holding bare NaN (not JSON) for a split the embeddings have no object of."""
    import logging

    from astrom3_hpc.cli.science import main
    from astrom3_hpc.science.embed import embed_run

    run, _ = impute_run
    path = tmp_path / "test-only.zarr"
    embed_run(run, splits=["test"], out=path, batch_size=100)

    def refuse(c):
        raise AssertionError(f"bare {c} in retrieval.json")

    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="astrom3"):
        assert main(["search", str(run), "--recall", "--recall-split", "train", "--embeddings", str(path),
                     "--out-dir", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "retrieval.json").read_text(), parse_constant=refuse)
    assert len(rep["pairs"]) == 6
    assert all(r["n"] == 0 and r["recall@1"] is None and r["recall@10"] is None for r in rep["pairs"].values())
    assert "retrieval photo->spectra: no object of split train has both: recall undefined (null)" in caplog.text
    assert json.loads(capsys.readouterr().out)["retrieval"]["photo->spectra"]["recall@5"] is None


def test_object_queries_write_one_file_each_whatever_their_ids():
    """Catches `search --query "a/b" "a_b" "a b"` writing one file (all three made safe as "a_b") and an id past a
    file name's length being an OSError traceback."""
    from types import SimpleNamespace

    from astrom3_hpc.science.search import _query_name

    ids = ["a/b", "a_b", "a b", "OGLE-00012", "\u03b4 Sct" * 40]
    emb = SimpleNamespace(object_name=lambda i: ids[i], row=np.arange(10, 15))
    names = [_query_name(emb, i) for i in range(len(ids))]
    assert names[:4] == ["object-a_b-row10", "object-a_b", "object-a_b-row12", "object-OGLE-00012"]
    assert names[4].endswith("-row14") and len(names[4].encode()) < 200


def test_object_ids_are_matched_as_ingestion_matches_them():
    """Catches `search --query 132.0` refused where ingestion stored 132, `1_32` taken for 132 (ingestion reads it
    as a name), and `123` not finding `00123` in a store that keeps its ids as written."""
    from astrom3_hpc.science.common import Embeddings

    def emb(ids, names=None):
        n = len(ids)
        return Embeddings("e.zarr", {}, np.asarray(ids), np.arange(n), np.zeros(n, int), np.ones((n, 1), bool), {},
                          names=None if names is None else np.asarray(names))

    ints = emb([132, 5])
    assert [ints.position_of_object(q) for q in ("132", "132.0", "00132", " 5 ", 5)] == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="object id '1_32' is not in e.zarr"):
        ints.position_of_object("1_32")
    kept = emb([0, 1, 2], names=["00123", "OGLE-1", "a b"])
    assert [kept.position_of_object(q) for q in ("00123", "123", "123.0", "a b", "OGLE-1")] == [0, 0, 0, 2, 1]
