"""Fine-tuning a classifier from scratch or from a pretraining run, evaluated on the sub-X and full test sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..evaluate import classification_report, plot_confusion, write_predictions
from .engine import to_device
from .checkpoint import BEST_MODEL, load_weights
from .rundir import read_run_config
from .trainer import Trainer, gather_objects

log = logging.getLogger("astrom3")

# Architecture fields come from the pretraining run; dropouts stay the fine-tuning config's own.
_TUNABLE = {"lc_dropout", "spec_dropout", "meta_dropout"}


class PretrainLeakError(ValueError):
    """Fine-tuning would evaluate on objects the pretrained model saw."""


def check_pretrained(init_dir: Path, seed: int, store: str) -> dict:
    """The pretraining run's config, after refusing runs that would leak test objects."""
    pre = read_run_config(init_dir)
    pseed = pre["data"]["seed"]
    if pseed != seed:
        raise PretrainLeakError(
            f"pretraining run {init_dir} used split seed {pseed}, but fine-tuning asks for seed {seed}: its "
            f"pretraining saw objects that are in the seed-{seed} test set (test leak). Fine-tune with "
            f"--seed {pseed} or pretrain with seed {seed}.")
    pstore, fstore = Path(pre["data"]["store"]).resolve(), Path(store).resolve()
    if pstore != fstore:
        from ..data.store import Store

        a, b = Store(pstore, check_chunks=False).attrs, Store(fstore, check_chunks=False).attrs
        if a.get("provenance", {}).get("source") != b.get("provenance", {}).get("source"):
            raise PretrainLeakError(f"pretraining run {init_dir} used store {pstore}, fine-tuning uses {fstore}, "
                                    f"built from different sources: split indices would not mean the same objects")
    if not (init_dir / BEST_MODEL).exists():
        raise FileNotFoundError(f"pretraining run {init_dir} has no {BEST_MODEL} (did it finish?)")
    return pre


class Finetuner(Trainer):
    kind = "finetune"

    def setup_data(self) -> None:
        f = self.cfg.finetune
        init = f.init
        if init != "scratch":
            pre = check_pretrained(Path(init), self.cfg.data.seed, self.cfg.data.store)
            merged = {**pre["model"], **{k: getattr(self.cfg.model, k) for k in _TUNABLE}}
            self.cfg.model = ModelConfig(**merged)
        self.read_spectra = f.mode in ("spectra", "all")
        super().setup_data()
        self.train_batches = self.loader("train", train=True, read_spectra=self.read_spectra)
        self.val_batches = self.loader("val", train=False, read_spectra=self.read_spectra)

    def build_model(self) -> torch.nn.Module:
        from ..model import build_classifier, load_pretrained_encoders

        f = self.cfg.finetune
        model = build_classifier(self.cfg.model, f.mode, len(self.store.class_names), f.fusion)
        self.loaded_keys = []
        if f.init != "scratch":
            ckpt = load_weights(Path(f.init) / BEST_MODEL)
            self.loaded_keys = load_pretrained_encoders(model, ckpt["state_dict"], include_projections=f.mode == "all")
            if self.is_main:
                log.info("loaded %d pretrained tensors from %s", len(self.loaded_keys), f.init)
        if f.freeze_encoders:
            for p in model.encoders.parameters():
                p.requires_grad_(False)
        return model

    def compute_loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.engine(batch).float(), batch["label"])

    @torch.no_grad()
    def predict(self, batches, with_probs: bool = False):
        """(y_true, y_pred, mean loss), plus (object ids, class probabilities) with `with_probs`."""
        self.engine.eval()
        preds, labels, loss_sum, ids, probs = [], [], 0.0, [], []
        for batch in batches.iter_epoch(0):
            b = to_device(batch, self.device, self.float_dtype)
            logits = self.engine(b).float()
            loss_sum += float(F.cross_entropy(logits, b["label"], reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
            labels.append(batch["label"].numpy())
            if with_probs:
                ids.append(batch["index"].numpy())
                probs.append(torch.softmax(logits, 1).cpu().numpy())
        extra = (np.concatenate(ids), np.concatenate(probs)) if with_probs else ()
        parts = gather_objects((np.concatenate(preds), np.concatenate(labels), loss_sum, *extra))
        y_pred = np.concatenate([p[0] for p in parts])
        y_true = np.concatenate([p[1] for p in parts])
        loss = sum(p[2] for p in parts) / max(len(y_true), 1)
        if not with_probs:
            return y_true, y_pred, loss
        return y_true, y_pred, loss, np.concatenate([p[3] for p in parts]), np.concatenate([p[4] for p in parts])

    def validate(self) -> dict[str, float]:
        y_true, y_pred, loss = self.predict(self.val_batches)
        return {"loss": loss, "accuracy": float((y_true == y_pred).mean())}

    def finish(self) -> dict[str, Any]:
        self.load_best()
        f, d = self.cfg.finetune, self.cfg.data
        out: dict[str, Any] = {"kind": "finetune", "mode": f.mode, "fusion": f.fusion, "subset": d.subset,
                               "seed": d.seed,
                               "init": "scratch" if f.init == "scratch" else "clip",
                               "init_dir": None if f.init == "scratch" else str(Path(f.init).resolve()),
                               "use_rfr_score": d.use_rfr_score, "best_val": self.best_val,
                               "epochs_run": self.state.epoch, "world_size": self.world}
        sets = [("test", d.subset)] + ([("test_full", "full")] if d.subset != "full" else [])
        for key, subset in sets:
            y_true, y_pred, loss, rows, probs = self.predict(
                self.loader("test", train=False, subset=subset, read_spectra=self.read_spectra), with_probs=True)
            rep = classification_report(y_true, y_pred, self.store.class_names)
            rep["loss"] = loss
            out[key] = rep
            out[f"{key}_accuracy"] = rep["accuracy"]
            if self.is_main:
                plot_confusion(rep, self.run.path / f"confusion_{key}.png",
                               f"{f.mode} {d.subset} seed {d.seed} ({out['init']}) - {subset} test set")
                write_predictions(self.run.path / ("predictions.csv" if key == "test" else f"predictions_{key}.csv"),
                                  self.store, rows, y_true, y_pred, probs)
        if "test_full" not in out:
            out["test_full"], out["test_full_accuracy"] = out["test"], out["test_accuracy"]
        return out
