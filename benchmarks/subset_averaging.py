"""Would averaging over the training subsets at test time help? A measurement on finished fine-tune runs.

    python benchmarks/subset_averaging.py RUN [RUN ...]

Runs trained with fold resampling (`data.lc_fold_resamples` K > 0; the `periodic` and large-survey presets) see
in training the folds (and, with `data.lc_feature_resampling`, the classical features) of K cached random
subsets of each light curve, and at validation and test the whole curve's. This evaluates each run's kept
weights on its validation and test splits four ways: the whole curve (what the run reported; reproduced here),
the mean of the class probabilities over the K subsets, that mean and the whole curve's counted as K + 1
members, and the whole curve's and the subsets' mean averaged half and half. Prints macro-F1 (%) and the mean
negative log-likelihood per run and variant, then the means over the runs given (pass one preset's runs of
several split seeds on one store). Nothing is written; weights and caches are read as the runs left them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrom3_hpc.core.config import config_from_dict  # noqa: E402
from astrom3_hpc.data.lc_features import cached_resampled_features, standardise  # noqa: E402
from astrom3_hpc.data.lc_folds import cached_resampled_folds  # noqa: E402
from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches  # noqa: E402
from astrom3_hpc.data.store import Store, StoreError  # noqa: E402
from astrom3_hpc.model.members import class_probabilities, finetune_classifier  # noqa: E402
from astrom3_hpc.model.presets import resolve  # noqa: E402
from astrom3_hpc.model.registry import cached_inputs  # noqa: E402
from astrom3_hpc.train.checkpoint import BEST_MODEL, load_weights  # noqa: E402
from astrom3_hpc.train.evaluate import classification_report  # noqa: E402
from astrom3_hpc.train.rundir import read_run_config  # noqa: E402

VARIANTS = ("whole", "subsets", "all_k+1", "half_half")


def subset_inputs(cfg, store: Store) -> tuple[np.ndarray, np.ndarray | None]:
    """The K cached subsets' folds (n, K, 4, bins) and, where the run trained on them, features (n, K, F),
    normalised as the training loader normalises them."""
    d = cfg.data
    k, frac = d.lc_fold_resamples, d.lc_fold_resample_fraction
    folds = np.nan_to_num(cached_resampled_folds(store, k, frac))
    if not d.lc_feature_resampling:
        return folds, None
    feats = cached_resampled_features(store, k, frac)
    n, _, f = feats.shape
    train = store.split(d.seed, "full", "train")
    return folds, standardise(feats.reshape(n * k, f), (train[:, None] * k + np.arange(k)).ravel()).reshape(n, k, f)


@torch.no_grad()
def probabilities(model, batches: TrimodalBatches, folds: np.ndarray, feats: np.ndarray | None):
    """(rows, labels, (rows, 1 + K, classes) probabilities): the whole curve's first, then each subset's."""
    rows, labels, probs = [], [], []
    for batch in batches.iter_epoch(0):
        idx = batch["index"].numpy()
        member = []
        for j in range(-1, folds.shape[1]):
            if j >= 0:
                batch["lc_fold"] = torch.from_numpy(folds[idx, j])
                if feats is not None:
                    batch["lc_features"] = torch.from_numpy(feats[idx, j])
            member.append(class_probabilities(model(batch)).numpy())
        rows.append(idx)
        labels.append(batch["label"].numpy())
        probs.append(np.stack(member, 1))
    return np.concatenate(rows), np.concatenate(labels), np.concatenate(probs)


def evaluate(run: Path) -> dict[str, tuple[float, float]]:
    cfg = config_from_dict(read_run_config(run), Path(run) / "config.yaml")
    if cfg.data.lc_fold_resamples <= 0 or "fold_full" not in resolve(cfg.model).periodic_views:
        raise SystemExit(f"{run}: not trained with fold resampling (data.lc_fold_resamples and a fold_full view)")
    store = Store(cfg.data.store)
    names = list(store.class_names)
    model = finetune_classifier(cfg, len(names))
    model.load_state_dict(load_weights(run / BEST_MODEL)["state_dict"])
    model.eval()
    folds, feats = subset_inputs(cfg, store)
    out = {}
    for split in ("val", "test"):
        batches = TrimodalBatches(LoaderSpec(
            store=str(store.path), seed=cfg.data.seed, subset=cfg.data.subset, split=split, batch_size=256,
            train=False, use_rfr_score=cfg.data.use_rfr_score, read_spectra=False,
            **cached_inputs(resolve(cfg.model))))
        _, y, p = probabilities(model, batches, folds, feats)
        batches.close()
        whole, subsets = p[:, 0], p[:, 1:].mean(1)
        for name, q in zip(VARIANTS, (whole, subsets, p.mean(1), (whole + subsets) / 2)):
            nll = float(-np.log(np.clip(q[np.arange(len(y)), y], 1e-12, None)).mean())
            out[f"{split} {name}"] = (100 * classification_report(y, q.argmax(1), names)["macro_f1"], nll)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished fine-tune run directories")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = []
    for run in a.runs:
        try:
            results.append(evaluate(run))
        except (OSError, StoreError) as e:  # not a run directory, no best model, its store gone
            ap.exit(2, f"subset_averaging.py: {e}\n")
        print(run, "  ".join(f"{k} {f1:.1f}/{nll:.3f}" for k, (f1, nll) in results[-1].items()), flush=True)
    print(f"mean over {len(results)} runs (macro-F1 % / NLL):")
    for key in results[0]:
        f1, nll = np.mean([r[key] for r in results], axis=0)
        print(f"  {key:16s} {f1:5.1f}  {nll:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
