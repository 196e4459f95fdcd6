"""Contrastive (CLIP) pretraining over all pairs of the configured modalities, global-batch negatives."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import write_json
from ..core.constants import SAMPLE_SEED
from ..data.store import MODALITIES
from ..distributed.collectives import gather_objects, mean_over_ranks
from .evaluate import averaged_embedding, centroid_accuracy, knn1_accuracy, retrieval_top1
from .loss import ContrastiveLoss
from .engine import to_device
from .predict import evaluation_forward
from .trainer import Trainer, joined

log = logging.getLogger("astrom3")



def presence(batch: dict, modalities) -> dict[str, torch.Tensor]:
    """Per-modality presence from the store's (B, 3) mask; modalities the store lacks count as present."""
    p = batch.get("present")
    out = {}
    for m in modalities:
        if p is not None and m in MODALITIES:
            out[m] = p[:, MODALITIES.index(m)]
    return out


def encode_seeded(model, modality: str, batch: dict, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """`model.encode` with the key sampler re-seeded: an object's vector is a function of the object (not of its
    batch, its rank or what ran before, which made `evaluate-embeddings` disagree with the run's own evaluation),
    and the caller's random stream is left as it was."""
    with evaluation_forward(next(model.parameters()).device, seed):
        return model.encode(modality, batch)


@torch.no_grad()
def embed_batches(model, batches, device, float_dtype=None, modalities=None) -> dict[str, np.ndarray]:
    """Embeddings of one rank's share of a split, gathered from every rank (rank order = split order)."""
    model.eval()
    mods = modalities or list(model.modalities)
    local: dict[str, list] = {m: [] for m in mods}
    local.update(label=[], index=[], present=[])
    for batch in batches.iter_epoch(0):
        if not len(batch["index"]):  # a split of fewer objects than ranks leaves some ranks none
            continue
        b = to_device(batch, device, float_dtype)
        for m in mods:
            local[m].append(encode_seeded(model, m, b).float().cpu().numpy())
        local["label"].append(batch["label"].numpy())
        local["index"].append(batch["index"].numpy())
        local["present"].append(batch["present"].numpy())
    parts = gather_objects(local)
    return {k: joined(parts, k) for k in local}


class Pretrainer(Trainer):
    kind = "pretrain"

    def __init__(self, cfg, run_dir, **kw):
        from ..core.config import check_pretraining

        super().__init__(check_pretraining(cfg), run_dir, **kw)

    def build_model(self) -> torch.nn.Module:
        from ..model import build_clip

        self.modalities = list(self.cfg.model.modalities)
        self.loss_fn = ContrastiveLoss(self.modalities)
        return build_clip(self.cfg.model)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        with self.autocast():
            emb = self.engine(batch)
        # The loss, its gather (forward and backward) and the temperatures in fp32, outside autocast.
        emb = {m: e.float() for m, e in emb.items()}
        local = self.cfg.train.batch_size // self.world  # training batches are equal on every rank
        total, _ = self.loss_fn(emb, self.model.logit_scales(), presence(batch, self.modalities),
                                sizes=[local] * self.world)
        return total

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.engine.eval()
        loss_sum, n_batches = 0.0, 0
        embs: dict[str, list] = {m: [] for m in self.modalities}
        pres: list = []
        for batch in self.val_batches.iter_epoch(0):
            if self.cfg.train.eval_max_batches and n_batches >= self.cfg.train.eval_max_batches:
                break
            if len(batch["index"]):
                batch = to_device(batch, self.device, self.float_dtype)
                # The paper preset samples attention keys here too: seeded, validation neither reads nor moves
                # training's random stream, so its numbers do not depend on the rank or on what ran before.
                with evaluation_forward(self.device):
                    emb = {m: e.float() for m, e in self.engine(batch).items()}
            else:  # no share of the last global batch (fewer objects than ranks): the loss's gather still needs us
                emb = {m: torch.zeros((0, self.model.embed_dim), device=self.device) for m in self.modalities}
            loss, _ = self.loss_fn(emb, self.model.logit_scales(), presence(batch, self.modalities))
            loss_sum += float(loss)
            n_batches += 1
            for m in self.modalities:
                embs[m].append(emb[m].float().cpu().numpy())
            pres.append(batch["present"].cpu().numpy())
        # loss_r averages to the global-batch loss over ranks; every rank ran the same number of batches.
        out = {"loss": mean_over_ranks(loss_sum / max(n_batches, 1))}
        gathered = gather_objects({m: np.concatenate(v) for m, v in embs.items()} | {"present": np.concatenate(pres)})
        allemb = {m: np.concatenate([g[m] for g in gathered]) for m in self.modalities}
        present = np.concatenate([g["present"] for g in gathered])
        for a, b in self.loss_fn.pairs:
            ok = np.ones(len(present), bool)
            for m in (a, b):
                if m in MODALITIES:
                    ok &= present[:, MODALITIES.index(m)]
            out[f"top1_{a}_{b}"] = retrieval_top1(allemb[a][ok], allemb[b][ok]) if ok.sum() else float("nan")
        return out

    def finish(self) -> dict[str, Any]:
        self.load_best()
        # fp32 and eager (encode_seeded), as `astrom3 evaluate-embeddings` reproduces it.
        emb_eval = evaluate_embeddings(self.model, self, write_to=self.run.path if self.is_main else None,
                                       extra={"split_seed": self.cfg.data.seed})
        return {"kind": "pretrain", "seed": self.cfg.data.seed, "epochs_run": self.state.epoch,
                "steps": self.state.step, "world_size": self.world, "best_epoch": self.best_val.get("epoch"),
                "best_val": self.best_val, "embedding_eval": emb_eval}

    def summary(self, metrics: dict[str, Any]) -> str:
        best, emb = metrics["best_val"], metrics["embedding_eval"]
        return (f"best validation loss {best.get('loss', float('nan')):.4f} at epoch {best.get('epoch')} of "
                f"{metrics['epochs_run']}; averaged embedding, test accuracy: class centroid "
                f"{emb['centroid_average']:.3f}, 1-NN {emb['knn1_average']:.3f}")



def evaluate_embeddings(model, trainer: Trainer, write_to: Path | None = None,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Frozen-embedding classification (spec section 4): class-centroid and 1-nearest-neighbour accuracy on the
    test split from train-split embeddings, per modality and for the averaged embedding. `extra`: what the
    caller records beside the numbers (which split was scored)."""
    from ..core.constants import N_CLASSES

    kw = {"read_spectra": True}
    train = embed_batches(model, trainer.loader("train", train=False, subset="full", **kw), trainer.device,
                          trainer.float_dtype)
    test = embed_batches(model, trainer.loader("test", train=False, subset="full", **kw), trainer.device,
                         trainer.float_dtype)
    mods = list(model.modalities)
    out: dict[str, Any] = {**(extra or {}), "n_train": int(len(train["label"])), "n_test": int(len(test["label"]))}
    views = {m: (train[m], test[m]) for m in mods}
    views["average"] = (averaged_embedding({m: train[m] for m in mods}), averaged_embedding({m: test[m] for m in mods}))
    for name, (tr, te) in views.items():
        out[f"centroid_{name}"] = centroid_accuracy(tr, train["label"], te, test["label"], N_CLASSES)
        out[f"knn1_{name}"] = knn1_accuracy(tr, train["label"], te, test["label"])
    if write_to is not None:
        write_json(Path(write_to) / "embedding_eval.json", out)
    return out


def evaluate_run(run_dir: str | Path, *, store: str | Path | None = None, batch_size: int | None = None,
                 pretrain_seed: int | None = None, allow_unknown_seed: bool = False) -> dict[str, Any] | None:
    """`astrom3 evaluate-embeddings RUN`: a pretraining run's best weights scored by evaluate_embeddings on its
    seed's test split (another `store` by content checks, e.g. the same one moved), written to the run's
    embedding_eval.json. The scores on rank 0, None on the other ranks."""
    from .. import distributed as adist
    from ..core.config import config_from_dict
    from ..distributed.env import exports_restored
    from .fingerprint import require_pretraining
    from .leak import check_weights_store, scored_seed
    from .rundir import read_run_config

    cfg = config_from_dict(read_run_config(run_dir), Path(run_dir) / "config.yaml")
    require_pretraining(run_dir, "run dir")
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    if store is not None:
        cfg.data.store = str(Path(store).resolve())
    seed = scored_seed(Path(run_dir), cfg.data.seed, pretrain_seed, allow_unknown_seed)
    if seed is None:
        log.warning("%s: imported weights of unknown split seed (--allow-unknown-seed): seed %d's test split may "
                    "hold objects they were pretrained on", run_dir, cfg.data.seed)
    cfg.data.seed = cfg.data.seed if seed is None else seed
    t = Pretrainer(cfg, run_dir)
    # As a training job: the process group and its exported variables end with the command, so that a caller
    # that goes on (a notebook, a test) does not hand them to the next job or subprocess it starts.
    with exports_restored():
        t.setup_distributed()
        try:
            with t.run.log.recording(f"evaluate-embeddings on rank {t.rank}"):  # into the run's train.log
                t.setup_data()
                check_weights_store(t.run.path / "best_model.pt", t.store)
                t.setup_engine()
                t.load_best()
                unknown = {"split_seed_unknown": True} if seed is None else {}
                out = evaluate_embeddings(t.model, t, write_to=t.run.path if t.is_main else None,
                                          extra={"split_seed": cfg.data.seed, **unknown})
        finally:
            t.run.close()
            adist.cleanup()
    return out if t.is_main else None
