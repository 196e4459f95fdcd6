"""`astrom3 predict RUN --store STORE --out DIR`: classify another store's objects with a finished run.

The way to use a classifier trained on one labelled catalogue on new light curves (a new field, a later data
release): ingest them into a store of their own (`astrom3 ingest lightcurves`, labels optional with
`--keep-unlabelled`) and run the trained model over it, without retraining. Runs: a fine-tune run (its kept
weights; with `finetune.average_baseline`, averaged with the classical baseline as the run was), an
`astrom3 baseline` run (refitted on its training store: the fit is deterministic and takes seconds) or an
`astrom3 ensemble` of those (its members' mean).

Every input is scaled as the model's training objects were: the z-scores, metadata fill values and the
classical features' quantiles come from the training store's train split of the run's seed
(LoaderSpec.norm_store), never from the new store, so an object gets the same probabilities whichever store
holds it. The training store must therefore still exist (`--train-store` where it moved); its content
fingerprint is checked against the one the run recorded. Writes predictions.csv (every valid object with the
modalities the model reads: the others would be classified from zero-filled inputs, so they are left out, counted
in metrics.json `n_without_modalities` and warned about; the truth column names the new store's class, empty where
it has none) and metrics.json (counts per predicted class and, where the new store's labels are classes the model
knows, the report over those objects).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.constants import ALL_OBJECTS, SAMPLE_SEED
from ..core.progress import Progress
from ..data.class_notes import spelled_alike
from ..data.store import MODALITIES, Store

log = logging.getLogger("astrom3")


def _metrics(run: Path) -> dict[str, Any]:
    p = run / "metrics.json"
    if not p.exists():
        raise ValueError(f"{run}: no metrics.json (not a finished fine-tune, baseline or ensemble run)")
    m = json.loads(p.read_text(encoding="utf-8"))
    if m.get("kind") != "finetune":
        raise ValueError(f"{run} is a {m.get('kind')!r} run; astrom3 predict needs a fine-tune, baseline or "
                         "ensemble run")
    return m


@contextmanager
def evaluation_forward(device, seed: int = SAMPLE_SEED) -> Iterator[None]:
    """Around one evaluation batch's forward pass, so that a run's own evaluation, `astrom3 predict`, `embed` and
    `evaluate-embeddings` give an object the same numbers:
    - seeded: the paper preset samples attention keys at evaluation too, and one seed per batch makes an object's
      class probabilities a function of the object alone, not of its batch or of what ran before; the caller's
      random stream (training's) is left as it was;
    - in fp32 whatever train.precision trained in (the weights are fp32): bf16 logits moved probabilities by up
      to 7e-4 and tied classes the commands, run in fp32, did not tie;
    - eager where train.compile compiled the encoders: inductor draws the attention-key samples from its own
      generator, which this seed does not reach (probabilities moved by up to 0.04)."""
    import torch

    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
            torch.autocast(dev.type, enabled=False), torch.compiler.set_stance("force_eager"):
        torch.manual_seed(seed)
        yield


def _training_store(run: Path, recorded: str, fingerprint: str | None, override: str | None) -> Store:
    path = override or recorded
    if not Path(path).exists():
        raise ValueError(f"{run} was trained on {path}, which does not exist: the model's input scaling comes "
                         "from it; give its new place with --train-store")
    store = Store(path)
    if fingerprint and store.fingerprint and store.fingerprint != fingerprint:
        raise ValueError(f"{path} is not the store {run} was trained on (content fingerprint "
                         f"{store.fingerprint[:12]} against the run's {fingerprint[:12]}): rebuilt or replaced")
    return store


def network_training_store(run: Path, cfg, override: str | None) -> Store:
    """The store a fine-tune run's network was trained on, checked against the fingerprint the run recorded: its
    train split scales the network's inputs on any other store (`override`: its new place, if it moved)."""
    from .fingerprint import IDENTITY

    ident = json.loads((run / IDENTITY).read_text(encoding="utf-8")) if (run / IDENTITY).exists() else {}
    return _training_store(run, cfg.data.store, ident.get("store", {}).get("fingerprint"), override)


# How a store's light curves were made: a model fed curves made another way sees inputs unlike its training ones.
_INGEST_KEYS = ("kind", "band", "flux", "period", "min_period_days", "modalities")


def ingest_differences(train: Store, store: Store) -> dict[str, list]:
    """{key: [training store's, this store's]} for the ingestion settings that differ."""
    a = train.attrs.get("provenance", {}).get("source", {})
    b = store.attrs.get("provenance", {}).get("source", {})
    return {k: [a.get(k), b.get(k)] for k in _INGEST_KEYS if a.get(k) != b.get(k)}


def _refitted_baseline(train: Store, seed: int, subset: str, store: Store, rows: np.ndarray, threads: int,
                       period_source: str = "ls", random_state: int = 0) -> np.ndarray:
    """The baseline fitted on `train`'s split as its run fitted it (deterministic), on `store`'s rows."""
    from .baseline import baseline_probabilities, fit_baseline

    clf, _ = fit_baseline(train, seed, subset, period_source, random_state, threads)
    return baseline_probabilities(clf, store, rows, period_source, threads, len(train.class_names))


def _baseline(run: Path, m: dict, store: Store, rows: np.ndarray, train_store: str | None,
              threads: int) -> tuple[np.ndarray, list[str], Store]:
    train = _training_store(run, m["store"], m.get("store_fingerprint"), train_store)
    probs = _refitted_baseline(train, m["seed"], m["subset"], store, rows, threads, m.get("period_source", "ls"),
                               m.get("random_state", 0))
    return probs, list(train.class_names), train


def _network(run: Path, m: dict, store: Store, rows: np.ndarray, train_store: str | None, threads: int,
             batch_size: int, progress: bool) -> tuple[np.ndarray, list[str], Store]:
    import torch

    from ..core.config import config_from_dict
    from ..data.loader import LoaderSpec, TrimodalBatches
    from ..model.members import class_probabilities, finetune_classifier
    from ..model.presets import resolve
    from ..model.registry import cached_inputs
    from .checkpoint import BEST_MODEL, load_weights
    from .engine import to_device
    from .rundir import read_run_config

    cfg = config_from_dict(read_run_config(run), Path(run) / "config.yaml")
    train = network_training_store(run, cfg, train_store)
    names = list(train.class_names)
    f, d = cfg.finetune, cfg.data
    model = finetune_classifier(cfg, len(names))
    state = load_weights(run / BEST_MODEL)["state_dict"]
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).eval()
    # Process-wide: left at `threads`, a notebook that called run_probabilities stayed single-threaded.
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        batches = TrimodalBatches(LoaderSpec(
            store=str(store.path), seed=d.seed, subset=d.subset, split=ALL_OBJECTS, batch_size=batch_size,
            train=False, use_rfr_score=d.use_rfr_score, read_spectra=f.mode in ("spectra", "all"),
            norm_store=str(train.path), **cached_inputs(resolve(cfg.model))))
        index, probs = [], []
        with torch.no_grad(), Progress(len(batches.rows), f"predict {run.name}", enabled=progress) as bar:
            for batch in batches.iter_epoch(0):
                bar.update(len(batch["index"]))
                index.append(batch["index"].numpy())
                with evaluation_forward(dev):
                    probs.append(class_probabilities(model(to_device(batch, dev))).cpu().numpy())
        batches.close()
    finally:
        torch.set_num_threads(caller_threads)
    by_row = dict(zip(np.concatenate(index).tolist(), np.concatenate(probs)))
    out = np.stack([by_row[int(r)] for r in rows]).astype(np.float64)
    if f.average_baseline:  # as the run reported: the mean with the baseline fitted on its train split
        out = (out + _refitted_baseline(train, d.seed, d.subset, store, rows, threads)) / 2
    return out, names, train


def _members(run: Path, m: dict, within: tuple[Path, ...]) -> tuple[list[str], tuple[Path, ...]]:
    """An ensemble's member runs and the chain of ensembles down to them, refusing a member that is one of the
    ensembles it is read through (an ensemble written into one of its members' directories listed itself)."""
    chain = (*within, run.resolve())
    members = [member["run"] for member in m["members"]]
    for member in members:
        if Path(member).resolve() in chain:
            what = "the ensemble itself" if Path(member).resolve() == chain[-1] else "an ensemble that contains it"
            raise ValueError(f"{run}: ensemble member {member} is {what} (a cycle): rebuild the ensemble from its "
                             "original runs")
    return members, chain


def _runs_down(run_dir: str | Path, _within: tuple[Path, ...] = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(run, metrics) of the run itself and, for an ensemble, of every run down its members (ensembles included)."""
    run = Path(run_dir)
    m = _metrics(run)
    yield run, m
    if m.get("init") == "ensemble":
        members, chain = _members(run, m, _within)
        for member in members:
            yield from _runs_down(member, chain)


def _leaf_runs(run_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The runs down an ensemble that hold a model (the run itself where it is no ensemble)."""
    return ((run, m) for run, m in _runs_down(run_dir) if m.get("init") != "ensemble")


def _check_out_dir(run: Path, target: Path) -> None:
    """Refuse an output directory whose metrics.json and predictions.csv are a run's: written into the run (or a
    member of the ensemble) predict reads, they replaced its test metrics, and the run was then refused as a
    'predict' run. A directory of an earlier predict is written anew."""
    where = target.resolve()
    if any(where == r.resolve() for r, _ in _runs_down(run)):
        raise ValueError(f"{target} is the directory of {run} or of one of its member runs: predicting into it "
                         "would overwrite that run's metrics.json and predictions.csv; give another output directory")
    p = target / "metrics.json"
    if p.exists():
        try:
            kind = json.loads(p.read_text(encoding="utf-8")).get("kind")
        except (ValueError, AttributeError):  # unreadable or not an object: nothing predict wrote
            kind = None
        if kind != "predict":
            raise ValueError(f"{target} holds a metrics.json that predict did not write (kind {kind!r}): "
                             "predicting into it would overwrite it; give another output directory")


def run_reads(run_dir: str | Path) -> tuple[str, ...]:
    """The modalities a finished run's model reads: its config's for a fine-tune, light curves for the baseline,
    every member's for an ensemble."""
    from ..model.classifier import mode_modalities
    from .rundir import read_run_config

    return tuple(dict.fromkeys(x for run, m in _leaf_runs(run_dir) for x in (
        ("photo",) if m.get("init") == "baseline" else
        mode_modalities(read_run_config(run)["model"]["modalities"], m["mode"]))))


def _refits_baseline(run_dir: str | Path) -> str | None:
    """How predicting with a finished run refits the classical baseline (which needs scikit-learn): "RUN (a baseline
    run)" or "RUN (finetune.average_baseline)", the first such run of an ensemble; None where it does not."""
    from .rundir import read_run_config

    for run, m in _leaf_runs(run_dir):
        if m.get("init") == "baseline":
            return f"{run} (a baseline run)"
        if read_run_config(run).get("finetune", {}).get("average_baseline"):
            return f"{run} (finetune.average_baseline)"
    return None


def run_probabilities(run_dir: str | Path, store: Store, rows: np.ndarray, train_store: str | None = None,
                      threads: int = 1, batch_size: int = 256,
                      progress: bool = True, _within: tuple[Path, ...] = ()
                      ) -> tuple[np.ndarray, list[str], list[Store]]:
    """(len(rows), n_classes) class probabilities of a finished run for `store`'s `rows`, the run's class
    names and the store(s) it was trained on."""
    run = Path(run_dir)
    m = _metrics(run)
    if m.get("init") == "ensemble":
        members, chain = _members(run, m, _within)
        parts = [run_probabilities(member, store, rows, train_store, threads, batch_size, progress, chain)
                 for member in members]
        names = parts[0][1]
        for member, (_, other, _) in zip(m["members"], parts):
            if other != names:
                raise ValueError(f"{run}: member {member['run']} has classes {other}, not {names}")
        return np.mean([p for p, _, _ in parts], axis=0), names, [t for _, _, ts in parts for t in ts]
    if m.get("init") == "baseline":
        probs, names, train = _baseline(run, m, store, rows, train_store, threads)
    else:
        probs, names, train = _network(run, m, store, rows, train_store, threads, batch_size, progress)
    return probs, names, [train]


def predict(run_dir: str | Path, store_path: str | Path, out_dir: str | Path, train_store: str | None = None,
            threads: int = 1, batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
    """Classify `store_path`'s objects with a finished run into OUT_DIR (predictions file, metrics.json). A job
    signal stops it with exit 75 (requeue); its rerun writes both files anew."""
    from ..core.signals import stopped_by

    with stopped_by(f"predicting {store_path} with {run_dir}"):
        return _predict(run_dir, store_path, out_dir, train_store, threads, batch_size, progress)


def _predict(run_dir, store_path, out_dir, train_store, threads, batch_size, progress) -> dict[str, Any]:
    from ..core.atomic import finishing, write_json
    from ..core.errors import require_scikit_learn
    from .evaluate import (classification_report, predicted_classes, predictions_file, unlabelled_summary,
                           write_predictions)

    run = Path(run_dir)
    _metrics(run)  # an error naming the run unless it is a finished fine-tune, baseline or ensemble run
    target = Path(out_dir)
    _check_out_dir(run, target)  # refused before the minutes of classifying, not after
    store = Store(store_path)
    # A model classifies the objects that hold what it reads: the others' inputs would be zero-filled.
    reads = run_reads(run)
    if (how := _refits_baseline(run)) is not None:
        require_scikit_learn(f"predicting with {how}")
    valid = store.valid_rows()
    present = store.root["present"][:][valid]
    rows = valid[np.all([present[:, MODALITIES.index(x)] for x in reads if x in MODALITIES], axis=0)]
    if len(rows) == 0:
        raise ValueError(f"{store_path}: no valid object has the modalities {run} reads ({', '.join(reads)})")
    probs, names, trains = run_probabilities(run, store, rows, train_store, threads, batch_size, progress)
    y_pred = predicted_classes(probs, store, rows, f"{run} on {store.path}")
    out: dict[str, Any] = {"kind": "predict", "run": str(run.resolve()), "store": str(store.path.resolve()),
                           "class_names": names, "all": unlabelled_summary(y_pred, names),
                           "n_without_modalities": int(len(valid) - len(rows))}
    if len(rows) < len(valid):
        log.warning("%d of the %d objects of %s lack %s, which %s reads: not classified", len(valid) - len(rows),
                    len(valid), store.path, " or ".join(reads), run)
    # Not an error (a user may mean it), never silent: light curves made another way than the training ones.
    differ = {str(t.path): d for t in trains if (d := ingest_differences(t, store))}
    if differ:
        out["ingest_differences"] = differ
        for path, d in differ.items():
            log.warning("%s was ingested unlike the training store %s: %s", store.path, path,
                        "; ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in d.items()))
    # Objects labelled with a class the model knows are scored; other labels only counted.
    own = list(store.class_names)
    labels = store.labels[rows]
    known = np.array([lab >= 0 and own[lab] in names for lab in labels], bool)
    if known.any():
        y_true = np.array([names.index(own[lab]) for lab in labels[known]])
        out["scored"] = classification_report(y_true, y_pred[known], names)
    out["n_labelled_unknown_class"] = int(((labels >= 0) & ~known).sum())
    for c in own:
        like = spelled_alike(c, names) if c not in names else None
        if like is not None:  # "sr" for the run's "SR": a class, left unscored
            log.warning("%s: class %r is the run's %r but for case or punctuation: its objects are classified, not "
                        "scored; ingest with --class-map to name it %r", store.path, c, like, like)
    target.mkdir(parents=True, exist_ok=True)
    with finishing(f"the predictions in {target}"):  # both files new, or both old
        write_predictions(target / predictions_file("test"), store, rows, labels, y_pred, probs, class_names=names)
        write_json(target / "metrics.json", out)
    log.info("classified %d objects of %s with %s%s", len(rows), store_path, run,
             f"; macro-F1 over the {int(known.sum())} with a known class: {out['scored']['macro_f1']:.3f}"
             if known.any() else "")
    return out
