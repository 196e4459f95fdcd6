"""Fine-tuning a classifier from scratch or from a pretraining run, evaluated on the sub-X and full test sets."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as adist
from ..core.config import ConfigError, FinetuneConfig, ModelConfig, model_config
from ..core.constants import UNLABELLED
from ..core.errors import require_scikit_learn
from ..distributed.collectives import gather_objects
from ..model.members import (class_probabilities, each_member, finetune_classifier, log_probabilities,
                             member_seeds)
from ..model.presets import resolve
from .fingerprint import INIT_WEIGHTS, require_pretraining
from .evaluate import (classification_report, plot_confusion, predicted_classes, predictions_file,
                       unlabelled_summary, write_predictions)
from .engine import to_device
from .checkpoint import BEST_MODEL, load_weights, weights_digest
from .leak import PretrainLeakError, pretrained_provenance, same_store
from .predict import evaluation_forward
from .rundir import read_run_config
from .import_weights import import_record
from .trainer import Trainer, joined

log = logging.getLogger("astrom3")

# Architecture fields come from the pretraining run; dropouts stay the fine-tuning config's own.
_TUNABLE = {"lc_dropout", "spec_dropout", "meta_dropout"}


def pretrained_architecture(pretrain_model: dict, own: ModelConfig, source: str | Path) -> ModelConfig:
    """The model a fine-tune from a pretraining run trains: that run's architecture (`source`, its config.yaml's
    `model`), with the fine-tuning config's dropouts."""
    if not isinstance(pretrain_model, dict):
        raise ConfigError(f"{source}: model: expected a mapping, got {pretrain_model!r}")
    return model_config({**pretrain_model, **{k: getattr(own, k) for k in _TUNABLE}}, source)


def inert_settings(cfg) -> list[str]:
    """Values a user set that this fine-tune never reads: accepted without a word, such a run trained exactly as
    without them (best_model.pt identical) while its config and metrics.json recorded them."""
    f, default, out = cfg.finetune, FinetuneConfig(), []
    if f.mode != "all" and f.fusion != default.fusion:
        out.append(f"finetune.fusion={f.fusion} (only mode all fuses modalities)")
    if f.distill == "none" and f.distill_weight != default.distill_weight:
        out.append(f"finetune.distill_weight={f.distill_weight} (finetune.distill none)")
    if f.init == "scratch":
        out += [f"finetune.{k}={getattr(f, k)} (init scratch)" for k in ("pretrain_seed", "allow_unknown_seed")
                if getattr(f, k) != getattr(default, k)]
        if f.freeze_encoders:
            out.append("finetune.freeze_encoders=true (init scratch: only the head trains, on random encoders)")
    reads_periodic = resolve(cfg.model).lc_encoder == "periodic" and f.mode in ("photo", "all")
    if not reads_periodic:
        model = ModelConfig()
        out += [f"model.{k}={getattr(cfg.model, k)} (no periodic light-curve encoder in this run)"
                for k in vars(model) if k.startswith("periodic_") and getattr(cfg.model, k) != getattr(model, k)]
    return out


def check_pretrained(init_dir: Path, seed: int, store: str, pretrain_seed: int | None = None,
                     allow_unknown_seed: bool = False, warn: bool = True) -> dict:
    """The pretraining run's config, after refusing runs that would leak test objects.

    The seed and the store identity are read from the best weights' own metadata (written with them), not
    only from config.yaml, which a later run in the same directory could have rewritten; the store is compared
    by content (checksum fingerprint, object count, source), so a store rebuilt in place is caught too.
    Imported weights (import_weights) know neither: the caller must name the seed (`pretrain_seed`, then
    checked like a recorded one) or accept the risk (`allow_unknown_seed`); their store cannot be compared.
    """
    from ..data.store import Store

    pre = read_run_config(init_dir)
    require_pretraining(init_dir, "finetune.init")
    if not (init_dir / BEST_MODEL).exists():
        raise FileNotFoundError(f"pretraining run {init_dir} has no {BEST_MODEL} (did it finish?)")
    imported = import_record(init_dir)
    if imported is None and not (init_dir / "metrics.json").exists():
        # Its best weights are those of an attempt still running, preempted or failed: a fine-tune took them as
        # the seed's encoder, and its "clip" result then measured a pretraining stopped anywhere.
        raise FileNotFoundError(f"pretraining run {init_dir} has not finished (no metrics.json): resume it (the "
                                f"same command again) and fine-tune from it once it has")
    if imported is None:
        pseed, pstore = pretrained_provenance(init_dir, pre, load_weights(init_dir / BEST_MODEL).get("meta", {}))
    else:
        pseed, pstore = imported.get("split_seed"), None
    if pretrain_seed is not None:
        if pseed is not None and pseed != pretrain_seed:
            raise PretrainLeakError(f"--pretrain-seed {pretrain_seed} contradicts pretraining run {init_dir}, "
                                    f"which recorded split seed {pseed}")
        pseed = pretrain_seed
    if pseed is None:
        if not allow_unknown_seed:
            raise PretrainLeakError(
                f"pretraining run {init_dir} holds imported weights ({imported.get('source_file')}) whose split "
                f"seed is unknown: a checkpoint does not say on which split's train set it was pretrained, and a "
                f"wrong guess puts its pretraining objects in the test set. Pass --pretrain-seed S (the seed the "
                f"weights were pretrained on; fine-tuning must then use --seed S) or --allow-unknown-seed to "
                f"accept the risk.")
        if warn:  # every rank checks; one says so
            log.warning("fine-tuning from %s, whose split seed is unknown (--allow-unknown-seed): test metrics may "
                        "include objects its pretraining saw", init_dir)
    elif pseed != seed:
        raise PretrainLeakError(
            f"pretraining run {init_dir} used split seed {pseed}, but fine-tuning asks for seed {seed}: its "
            f"pretraining saw objects that are in the seed-{seed} test set (test leak). Fine-tune with "
            f"--seed {pseed} or pretrain with seed {seed}.")
    if pstore is not None:
        why = same_store(pstore, Store(store, check_chunks=False))
        if why:
            raise PretrainLeakError(f"pretraining run {init_dir} was trained on another store than {store} "
                                    f"({why}): split indices would not mean the same objects (possible test leak)")
    return pre


def global_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                         label_smoothing: float) -> torch.Tensor:
    """This rank's term of the global batch's cross-entropy: the mean over ranks (DeepSpeed's gradient average)
    is the loss of the whole global batch, whatever the world size. Class-weighted, torch's mean divides by this
    rank's own sum of weights, and a mean of per-rank ratios is not the global one (gradients 0.85 % off at 2
    ranks, more with more ranks and rarer classes): divide by the ranks' mean sum of weights instead. Unweighted,
    every rank holds as many rows, so torch's mean is already the global one."""
    if weight is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    total = F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing, reduction="sum")
    return total / adist.all_reduce_mean(weight[labels].sum())


def balanced_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" class weights, n / (n_classes * n_c), over the labelled rows; a class absent from
    the training rows gets weight 0 (it contributes no loss term anyway)."""
    y = labels[labels >= 0]
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    n_seen = max(int((counts > 0).sum()), 1)
    w = np.where(counts > 0, len(y) / (n_seen * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


class Finetuner(Trainer):
    kind = "finetune"

    def run_job(self) -> int:
        from ..data.store import Store

        # Before set-up makes the run directory and fills the store's caches: a split nothing can be learnt from
        # is one line and no leftover directory, not an error after training (or a perfect score).
        d = self.cfg.data
        Store(d.store, check_chunks=False).check_classifier_splits(d.seed, d.subset)
        return super().run_job()

    def setup_data(self) -> None:
        f = self.cfg.finetune
        init = f.init
        if init != "scratch":
            pre = check_pretrained(Path(init), self.cfg.data.seed, self.cfg.data.store, f.pretrain_seed,
                                   f.allow_unknown_seed, warn=self.is_main)
            arch = pretrained_architecture(pre.get("model"), self.cfg.model, Path(init) / "config.yaml")
            dropped = [f"model.{k} {getattr(self.cfg.model, k)!r} (pretraining: {getattr(arch, k)!r})"
                       for k in vars(arch) if getattr(arch, k) != getattr(self.cfg.model, k)]
            if dropped and self.is_main:  # a --set model.* value would otherwise vanish without a word
                log.warning("finetune.init %s: the pretraining's architecture is trained, not the fine-tuning "
                            "config's: %s", init, "; ".join(dropped))
            self.cfg.model = arch
            self.init_sha = weights_digest(Path(init) / BEST_MODEL)
        inert = inert_settings(self.cfg)
        if inert and self.is_main:  # not refused: a sweep's --set serves every mode, each reading its own keys
            log.warning("settings this run does not use (recorded in its config, no effect): %s", "; ".join(inert))
        self.read_spectra = f.mode in ("spectra", "all")
        super().setup_data()
        held = self.store.attrs.get("modalities") or []
        if self.is_main and f.mode == "all" and not set(held) <= set(self.cfg.model.modalities):
            # "all" is every modality the encoders were trained on; a table would otherwise put this run beside
            # the paper's trimodal "all" column without a word.
            why = "model.modalities" if init == "scratch" else f"the modalities {init} was pretrained on"
            log.warning("finetune.mode all reads %s only: %s (the store holds %s)",
                        ", ".join(self.cfg.model.modalities), why, ", ".join(held))
        self.train_batches = self.loader("train", train=True, read_spectra=self.read_spectra)
        self.val_batches = self.loader("val", train=False, read_spectra=self.read_spectra)
        # On the compute device once: a copy to it inside every step makes the host wait for the GPU.
        self.class_weight = balanced_weights(self.train_batches.labels[self.train_batches.rows],
                                             len(self.store.class_names)).to(self.device) \
            if f.class_weights == "balanced" else None
        self.teacher = self.teacher_probabilities().to(self.device) if f.distill == "baseline" else None
        if f.average_baseline:
            self.check_baseline_inputs("finetune.average_baseline")
        source = self.store.attrs.get("provenance", {}).get("source", {}).get("kind")
        if self.is_main and source == "lightcurves" and f.mode == "photo" and \
                resolve(self.cfg.model).lc_encoder != "periodic":
            # The paper encoder sees positions, not time, and never the period: on a survey's light curves
            # alone it is the weakest choice, and the default config is the paper's.
            log.warning("%s holds light curves only and this run uses the paper's photometry encoder; the "
                        "periodic preset (--config configs/periodic_finetune.yaml) and `astrom3 baseline` are "
                        "the models measured for such stores (docs/lightcurves.md)", self.cfg.data.store)

    def read_modalities(self) -> tuple[list[str], str]:
        from ..model.classifier import mode_modalities

        mode = self.cfg.finetune.mode
        return list(mode_modalities(self.cfg.model.modalities, mode)), f"finetune.mode {mode}"

    def teacher_probabilities(self) -> torch.Tensor:
        """Cross-fitted baseline probabilities for every training object, as a (n_objects, n_classes) table looked
        up by the batches' store rows (rows outside the train split stay 0 and are never looked up)."""
        from .baseline import cached_teacher

        self.check_baseline_inputs("finetune.distill baseline")
        t0 = time.perf_counter()
        rows = np.sort(self.train_batches.rows)
        n_classes = len(self.store.class_names)
        table = np.zeros((len(self.store.labels), n_classes), dtype=np.float32)
        table[rows] = cached_teacher(
            self.store, rows, n_classes, seed=self.cfg.data.seed, threads=self.fold_workers(),
            what=f"train split of {self.cfg.data.store} (seed {self.cfg.data.seed}, {self.cfg.data.subset})")
        if self.is_main:
            log.info("distilling from the classical baseline: cross-fitted probabilities for %d training objects "
                     "(%.1f s)", len(rows), time.perf_counter() - t0)
        return torch.from_numpy(table)

    def fold_workers(self) -> int:
        """Processes for the teacher's five fits: this rank's share of the cores (train.threads, 0: automatic)."""
        from .engine import cpu_threads

        return cpu_threads(self.cfg.train.threads, self.env.local_world_size)

    def check_baseline_inputs(self, what: str) -> None:
        """Before training, on every rank: what the classical baseline needs (it is fitted on rank 0 only)."""
        if "photo" not in (self.store.attrs.get("modalities") or []):
            raise ValueError(f"{what}: {self.cfg.data.store} holds no light curves")
        require_scikit_learn(what)

    def baseline_probabilities(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The classical baseline fitted on this run's train split, as `astrom3 baseline` fits it: its class
        probabilities for each set's rows (same order)."""
        from .baseline import baseline_probabilities, fit_baseline

        d, threads = self.cfg.data, self.cfg.train.threads or 1
        clf, seconds = fit_baseline(self.store, d.seed, d.subset, threads=threads)
        log.info("averaging with the classical baseline (features %.1f s, fit %.1f s)", seconds["features_train"],
                 seconds["fit"])
        return {key: baseline_probabilities(clf, self.store, r, threads=threads) for key, r in rows.items()}

    def identity_extra(self) -> dict[str, Any]:
        return {} if self.cfg.finetune.init == "scratch" else {INIT_WEIGHTS: self.init_sha}

    def build_model(self) -> torch.nn.Module:
        from ..model import load_pretrained_encoders

        f = self.cfg.finetune
        model = finetune_classifier(self.cfg, len(self.store.class_names), self.model_seed)
        self.loaded_keys = []
        if f.init != "scratch":
            ckpt = load_weights(Path(f.init) / BEST_MODEL)
            for member in each_member(model):  # every member starts from the same pretrained encoders
                self.loaded_keys = load_pretrained_encoders(member, ckpt["state_dict"],
                                                            include_projections=f.mode == "all")
            if self.is_main:
                log.info("loaded %d pretrained tensors from %s%s", len(self.loaded_keys), f.init,
                         f" into each of {f.members} members" if f.members > 1 else "")
        if f.freeze_encoders:
            for member in each_member(model):
                for p in member.encoders.parameters():
                    p.requires_grad_(False)
        return model

    def compute_loss(self, batch: dict) -> torch.Tensor:
        with self.autocast():
            logits = self.engine(batch)
        labels, index = batch["label"], batch["index"]
        if logits.dim() == 3:  # members: each its own loss on the same batch, the mean of those losses
            n = logits.shape[0]
            logits, labels, index = logits.flatten(0, 1), labels.repeat(n), index.repeat(n)
        loss = global_cross_entropy(logits.float(), labels, self.class_weight, self.cfg.finetune.label_smoothing)
        if self.teacher is None:
            return loss
        a = self.cfg.finetune.distill_weight
        target = self.teacher[index]
        soft = -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()
        return (1.0 - a) * loss + a * soft

    @torch.no_grad()
    def predict(self, batches, with_probs: bool = False, what: str = ""):
        """(y_true, y_pred, mean loss), plus (object ids, class probabilities) with `with_probs`: y_pred is then
        those probabilities' class, as `astrom3 predict` gives it, and objects without finite ones (`what`
        names the split) are an error."""
        self.engine.eval()
        preds, labels, loss_sum, ids, probs = [], [], 0.0, [], []
        for batch in batches.iter_epoch(0):
            if not len(batch["index"]):  # a split of fewer objects than ranks leaves some ranks none to classify
                continue
            b = to_device(batch, self.device, self.float_dtype)
            with evaluation_forward(self.device):  # as `astrom3 predict` classifies
                logits = self.engine(b)
            # With members, the model is their mean probability: its loss, its class.
            logp = log_probabilities(logits)
            # Unlabelled objects (label -1) are classified, not scored.
            loss_sum += float(F.nll_loss(logp, b["label"], reduction="sum", ignore_index=-1))
            preds.append(logp.argmax(1).cpu().numpy())
            labels.append(batch["label"].numpy())
            if with_probs:
                ids.append(batch["index"].numpy())
                probs.append(class_probabilities(logits).cpu().numpy())
        extra = (ids, probs) if with_probs else ()
        parts = gather_objects((preds, labels, loss_sum, *extra))
        y_pred, y_true = joined(parts, 0), joined(parts, 1)
        loss = sum(p[2] for p in parts) / max(len(y_true), 1)
        if not with_probs:
            return y_true, y_pred, loss  # validation: a NaN row makes its loss NaN, which stops training
        rows, probs = joined(parts, 3), joined(parts, 4)
        return y_true, predicted_classes(probs, self.store, rows, f"{self.run.path}, {what}"), loss, rows, probs

    def validate(self) -> dict[str, float]:
        y_true, y_pred, loss = self.predict(self.val_batches)
        # Macro-F1 beside the loss: the loss picks the epoch; macro-F1 is the metric options are compared by
        # (an unweighted loss penalises class weighting, which trades majority-class confidence for recall).
        rep = classification_report(y_true, y_pred, self.store.class_names)
        return {"loss": loss, "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"]}

    def finish(self) -> dict[str, Any]:
        self.load_best()
        f, d = self.cfg.finetune, self.cfg.data
        out: dict[str, Any] = {"kind": "finetune", "mode": f.mode, "modalities": self.read_modalities()[0],
                               "fusion": f.fusion, "subset": d.subset,
                               "seed": d.seed,
                               "init": "scratch" if f.init == "scratch" else "clip",
                               "init_dir": None if f.init == "scratch" else str(Path(f.init).resolve()),
                               "use_rfr_score": d.use_rfr_score, "best_val": self.best_val,
                               "class_weights": None if self.class_weight is None else
                               [round(float(w), 6) for w in self.class_weight],
                               "distill": f.distill, "label_smoothing": f.label_smoothing,
                               "average_baseline": f.average_baseline,
                               "weight_seeds": member_seeds(self.model_seed, f.members),
                               "epochs_run": self.state.epoch, "world_size": self.world}
        sets = [("test", d.subset)] + ([("test_full", "full")] if d.subset != "full" else [])
        preds = {key: self.predict(self.loader("test", train=False, subset=subset, read_spectra=self.read_spectra),
                                   with_probs=True, what=f"{key} objects") for key, subset in sets}
        # The kept model's validation predictions: what `astrom3 ensemble` and the paired bootstrap compare
        # options on without looking at test.
        preds["val"] = self.predict(self.val_batches, with_probs=True, what="val objects")
        if len(self.store.unlabelled_rows()):
            preds[UNLABELLED] = self.predict(self.loader(UNLABELLED, train=False, read_spectra=self.read_spectra),
                                             with_probs=True, what=f"{UNLABELLED} objects")
        names = self.store.class_names
        baseline = None
        if f.average_baseline and self.is_main:
            baseline = self.baseline_probabilities({key: p[3] for key, p in preds.items()})
        for key, (y_true, y_net, loss, rows, probs) in preds.items():
            y_pred = y_net
            if baseline is not None:
                probs = (probs + baseline[key]) / 2
                y_pred = predicted_classes(probs, self.store, rows, f"{self.run.path}, {key} objects with the "
                                           "baseline")
            if key == UNLABELLED:  # classified, not scored
                out[key] = unlabelled_summary(y_pred, names)
            else:
                rep = classification_report(y_true, y_net, names) | {"loss": loss}
                if baseline is not None:
                    out.setdefault("network", {})[key] = rep
                    y_base = predicted_classes(baseline[key], self.store, rows, f"{self.run.path}, {key} objects "
                                               "(baseline)")
                    out.setdefault("baseline", {})[key] = classification_report(y_true, y_base, names)
                    nll = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)).mean()
                    rep = classification_report(y_true, y_pred, names) | {"loss": float(nll)}
                out[key] = rep
                if key != "val":
                    out[f"{key}_accuracy"] = rep["accuracy"]
                    if self.is_main:
                        plot_confusion(rep, self.run.path / f"confusion_{key}.png",
                                       f"{f.mode} {d.subset} seed {d.seed} ({out['init']}"
                                       f"{' + baseline' if baseline is not None else ''}) - {dict(sets)[key]} "
                                       "test set")
            if self.is_main:
                write_predictions(self.run.path / predictions_file(key), self.store, rows, y_true, y_pred, probs)
        if "test_full" not in out:
            out["test_full"], out["test_full_accuracy"] = out["test"], out["test_accuracy"]
        return out

    def summary(self, metrics: dict[str, Any]) -> str:
        test, val = metrics["test"], metrics["val"]
        kept = f"best epoch {metrics['best_val'].get('epoch')} of {metrics['epochs_run']} run"
        n = len(metrics["weight_seeds"])
        return (f"{metrics['mode']} {metrics['subset']} seed {metrics['seed']} ({metrics['init']}"
                f"{f', {n} members' if n > 1 else ''}{' + baseline' if metrics['average_baseline'] else ''}, "
                f"{kept}): test accuracy "
                f"{test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}; validation macro-F1 {val['macro_f1']:.3f}")
