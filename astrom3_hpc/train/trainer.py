"""One Trainer for every training job, in small named steps; pretraining and fine-tuning fill in the task.

    setup_distributed -> setup_data -> build_model -> setup_engine -> resume
    for epoch: train_epoch (train_step ..., loss and preemption flag read every log_every_steps) -> validate
               -> end_epoch
    finish (final evaluation, metrics.json)

Exact resume: a checkpoint holds the engine (weights, optimizer), the schedule and early-stopping state, the
position (epoch, batch in epoch, step), the running epoch sums, and every rank's RNG states; the loader's order
and windows are functions of (seed, epoch, rank, batch). A resumed run therefore replays the same steps.

No host sync per step: step losses stay on the device and are read, with the ranks' preemption flags, in one
all-reduce every ``train.log_every_steps`` steps, at the end of an epoch and at ``stop_after_steps``; a signal
therefore stops the job at the next log boundary, whose state is what the checkpoint holds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .. import distributed as adist
from ..distributed import device as ddev
# pretrain and finetune take these two from here, beside `joined`.
from ..distributed.env import exports_restored
from ..core.config import ConfigError, RunConfig
from ..core.errors import EXIT_PREEMPTED
from ..data.loader import LoaderSpec, TrimodalBatches, epoch_loader
from ..data.store import MODALITIES, Store, StoreError, modalities_held
from ..core.progress import Progress
from ..model.members import each_member
from ..model.presets import preset_values, resolve
from ..model.registry import cached_inputs
from . import checkpoint
from .engine import (autocast, build_engine, clip_gradients, configure_cuda, seed_everything, set_deterministic, set_lr,
                     to_device)
from .finite import FiniteGuard, NonFiniteError
from .fingerprint import RunMismatchError, check_run_dir, run_identity, store_identity, write_identity
from .preempt import Preemption
from .rundir import RunDir, env_info, writing
from .schedule import EarlyStopping, LRSchedule
from .weight_average import WeightAverage

log = logging.getLogger("astrom3")


@dataclass
class TrainState:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_batches: int = 0
    finished_training: bool = False


class Trainer:
    kind = "train"

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, stop_after_steps: int | None = None,
                 resume: bool = True):
        self.cfg = cfg
        self.run_path = Path(run_dir)
        self.stop_after_steps = stop_after_steps
        self.resume_enabled = resume
        self.state = TrainState()

    # -- setup ---------------------------------------------------------------------------------------------
    def setup_distributed(self) -> None:
        import os

        # The GPU job scripts export ASTROM3_TRAIN_DEVICE=cuda (slurm/pretrain.sh GPUS=...).
        want = os.environ.get("ASTROM3_TRAIN_DEVICE") or self.cfg.train.device
        if want == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"a GPU was requested (train.device / ASTROM3_TRAIN_DEVICE) but torch "
                             f"{torch.__version__} sees no GPU (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, CUDA build "
                             f"{torch.version.cuda}): not training on the CPU instead")

        self.env = adist.init(force_group=True)
        self.rank, self.world = self.env.rank, self.env.world_size
        self.is_main = self.rank == 0
        self.device = ddev.compute_device()
        set_deterministic(self.cfg.train.deterministic)
        configure_cuda(self.cfg)
        self.run = RunDir(self.run_path, self.is_main, self.rank)
        if dist.is_initialized():
            dist.barrier()

    def loader(self, split: str, train: bool, subset: str | None = None, **kw) -> TrimodalBatches:
        d = self.cfg.data
        # Inputs only some encoders read (the periodic encoder's classical features and full-curve folds) are
        # prepared only for them.
        for key, wanted in cached_inputs(resolve(self.cfg.model)).items():
            kw.setdefault(key, wanted)
        if train and kw["lc_fold"]:
            kw.setdefault("lc_fold_resamples", d.lc_fold_resamples)
            kw.setdefault("lc_fold_resample_fraction", d.lc_fold_resample_fraction)
        elif train and d.lc_fold_resamples and not d.lc_feature_resampling and self.is_main:
            log.warning("data.lc_fold_resamples=%d is ignored: this model has no full-curve fold view "
                        "(model.periodic_views without fold_full)", d.lc_fold_resamples)
        if train and kw["lc_features"]:
            kw.setdefault("lc_feature_resampling", d.lc_feature_resampling)
            kw.setdefault("lc_fold_resamples", d.lc_fold_resamples)
            kw.setdefault("lc_fold_resample_fraction", d.lc_fold_resample_fraction)
        elif train and d.lc_feature_resampling and self.is_main:
            log.warning("data.lc_feature_resampling is ignored: this model has no classical-feature input "
                        "(model.periodic_features false)")
        return TrimodalBatches(LoaderSpec(
            store=d.store, seed=d.seed, subset=subset or d.subset, split=split,
            batch_size=self.cfg.train.batch_size // self.world, train=train, world_size=self.world,
            rank=self.rank, buffer_chunks=d.buffer_chunks, streams=d.streams, use_rfr_score=d.use_rfr_score,
            in_memory=d.in_memory, **kw))

    def setup_data(self) -> None:
        self.store = Store(self.cfg.data.store)
        self.train_batches = self.loader("train", train=True)
        self.val_batches = self.loader("val", train=False)
        self.check_modalities(self.train_batches)
        if self.train_batches.num_batches() == 0:
            raise ConfigError(f"train split of {self.cfg.data.store} (seed {self.cfg.data.seed}, "
                              f"{self.cfg.data.subset}) has fewer objects than one global batch "
                              f"({self.cfg.train.batch_size}); lower train.batch_size")

    def read_modalities(self) -> tuple[list[str], str]:
        """The store modalities the model reads, and the setting that chooses them."""
        return list(self.cfg.model.modalities), "model.modalities"

    def check_modalities(self, batches: TrimodalBatches) -> None:
        """A modality the model reads that no training object has would be learnt from zero-filled inputs: a run
        that exits 0 with chance-level scores (fine-tuning spectra on a light-curve store did). Refused, naming
        what the store does hold."""
        held = modalities_held(batches.present[batches.rows])
        mods, setting = self.read_modalities()
        for m in mods:
            if m in MODALITIES and m not in held:
                d = self.cfg.data
                raise StoreError(
                    f"{d.store}: no object of the train split (seed {d.seed}, {d.subset}) has {m}, which this run "
                    f"reads ({setting}); the store holds {', '.join(held) or 'nothing'} (source: "
                    f"{self.store.attrs.get('provenance', {}).get('source', {}).get('kind', 'unknown')})")

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def model_seed(self) -> int:
        """The initial weights' seed (train.model_seed, else the split seed)."""
        return self.cfg.data.seed if self.cfg.train.model_seed is None else self.cfg.train.model_seed

    def setup_engine(self) -> None:
        # Same seed on every rank for the weights; per-rank seeds for dropout and sampling afterwards.
        seed = self.model_seed
        seed_everything(seed)
        model = self.build_model()
        self.engine, self.optimizer = build_engine(model, self.cfg, self.world, self.env.local_world_size)
        self.model = self.engine.module
        self.n_members = len(each_member(self.model))
        seed_everything(seed * 1000 + 17 + self.rank)
        self.schedule = LRSchedule.from_config(self.cfg.optim, self.cfg.train.epochs)
        self.early = EarlyStopping(self.cfg.train.early_stop_patience)
        self.float_dtype = None  # inputs stay fp32; bf16 is autocast (engine.autocast)
        self.best_val: dict = {}
        self.guard = FiniteGuard(self.device)
        t = self.cfg.train
        steps = min(self.train_batches.num_batches(), t.max_steps_per_epoch or math.inf)
        self.average = WeightAverage(self.model, t.ema_epochs, steps) if t.ema_epochs > 0 else None

    def evaluated_weights(self):
        """The weights validation judges and the best model keeps: the average with train.ema_epochs."""
        return self.average.swapped_in(self.model) if self.average is not None else contextlib.nullcontext()

    def resume(self) -> bool:
        tag = checkpoint.latest_tag(self.run.ckpt_dir) if self.resume_enabled else None
        if tag is None:
            return False
        client = checkpoint.load(self.engine, self.run.ckpt_dir, tag)
        self.state = TrainState(**client["state"])
        self.schedule.load_state_dict(client["schedule"])
        self.early.load_state_dict(client["early"])
        self.load_task_state(client.get("task", {}))
        if self.average is not None:
            if "weight_average" not in client:
                raise ValueError(f"checkpoint {tag} in {self.run.ckpt_dir} holds no weight average "
                                 f"(train.ema_epochs): it was written without one")
            self.average.load_state_dict(client["weight_average"])
        self.run.truncate_after(self.state.step, self.state.epoch)
        if self.is_main:
            if checkpoint.restore_best(self.run.ckpt_dir / tag, self.run.path / checkpoint.BEST_MODEL):
                log.info("%s: the best weights of %s put back (a later attempt had replaced them)",
                         checkpoint.BEST_MODEL, tag)
            log.info("resumed from %s: epoch %d, batch %d, step %d", tag, self.state.epoch,
                     self.state.batch_in_epoch, self.state.step)
        return True

    def task_state(self) -> dict:
        return {"best_val": self.best_val}

    def load_task_state(self, d: dict) -> None:
        self.best_val = d.get("best_val", {})

    # -- steps ---------------------------------------------------------------------------------------------
    def autocast(self):
        """The mixed-precision region for forward passes (bf16 autocast, or nothing for fp32)."""
        return autocast(self.cfg, self.device)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimizer step; returns the loss as a 0-dim fp32 device tensor (not read: no host sync)."""
        self.engine.train()
        ids = batch.get("object_id")
        batch = to_device(batch, self.device, self.float_dtype)
        loss = self.compute_loss(batch)
        # Members (finetune.members) report their mean loss; each is trained on its own loss, as if alone (the
        # sum's gradient: the mean's would shrink each member's gradient against Adam's L2 term and the clip).
        self.engine.backward(loss * self.n_members if self.n_members > 1 else loss)
        st = self.state
        self.guard.observe(st.step, st.epoch, st.batch_in_epoch, ids, loss, self.model)  # no host sync
        clip_gradients(self.model, self.cfg)
        self.engine.step()
        if self.average is not None:
            self.average.update(self.model)
        return loss.detach().float().reshape(())

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def save_checkpoint(self) -> None:
        self.guard.check(self.model, "before writing a checkpoint")
        client = {"state": asdict(self.state), "schedule": self.schedule.state_dict(),
                  "early": self.early.state_dict(), "task": self.task_state(), "kind": self.kind}
        if self.average is not None:
            client["weight_average"] = self.average.state_dict()
        checkpoint.save(self.engine, self.run.ckpt_dir, f"step{self.state.step}", client,
                        best=self.run.path / checkpoint.BEST_MODEL)

    def on_best(self, epoch: int, val: dict) -> None:
        """Validation loss improved: keep these weights (the model that later stages and the test use)."""
        self.guard.check(self.model, "before keeping the best weights")
        self.best_val = {"epoch": epoch, **val}
        if self.is_main:
            checkpoint.save_weights(self.model, self.run.path / checkpoint.BEST_MODEL,
                                    {"epoch": epoch, "val": val, "seed": self.cfg.data.seed,
                                     "store": str(Path(self.cfg.data.store).resolve()), "kind": self.kind,
                                     "store_identity": store_identity(self.store), "world_size": self.world})

    def load_best(self) -> None:
        if dist.is_initialized():
            dist.barrier()
        state = checkpoint.load_weights(self.run.path / checkpoint.BEST_MODEL)["state_dict"]
        own = self.model.state_dict()
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})

    def flush_steps(self, pending: list[tuple[int, int, torch.Tensor]], bar) -> bool:
        """Read the pending steps' losses (mean over ranks) and agree on the preemption flag: one all-reduce
        and one host sync. Adds every step's loss to the epoch sum in step order (as a per-step read would, so a
        resumed run sums identically) and logs the rows due. Returns True when some rank asks to stop."""
        st = self.state
        self.guard.check()  # where the losses are read back anyway (see train/finite.py)
        stop = torch.tensor([1.0 if self.preempt.requested else 0.0], device=self.device)
        packed = torch.cat([torch.stack([loss for _, _, loss in pending]), stop]) if pending else stop
        if dist.is_initialized() and self.world > 1:
            dist.all_reduce(packed)
            packed[:-1] /= self.world
        values = packed.tolist()
        lr = self.optimizer.param_groups[0]["lr"]
        for (step, batch_in_epoch, _), value in zip(pending, values):
            st.epoch_loss_sum += value
            if step % self.cfg.train.log_every_steps == 0 or batch_in_epoch == 1:
                self.run.log_step({"step": step, "epoch": st.epoch, "loss": value, "lr": lr})
        if pending:
            bar.update(0, loss=f"{values[-2]:.4f}")
        pending.clear()
        return values[-1] > 0

    def train_epoch(self) -> str:
        """Runs the rest of the current epoch; returns "done" or "preempted"."""
        st = self.state
        set_lr(self.optimizer, self.schedule.lr(st.epoch))
        n = self.train_batches.num_batches()
        t0 = time.perf_counter()
        pending: list[tuple[int, int, torch.Tensor]] = []  # (step, batch in epoch, device loss) not read yet
        workers = self.cfg.data.workers(self.device.type == "cuda")
        with Progress(n - st.batch_in_epoch, f"epoch {st.epoch}", enabled=self.is_main) as bar:
            for batch in epoch_loader(self.train_batches, st.epoch, st.batch_in_epoch, workers):
                if self.cfg.train.max_steps_per_epoch and st.batch_in_epoch >= self.cfg.train.max_steps_per_epoch:
                    break
                loss = self.train_step(batch)
                st.step += 1
                st.batch_in_epoch += 1
                st.epoch_batches += 1
                pending.append((st.step, st.batch_in_epoch, loss))
                bar.update(1)
                # stop_after_steps is the same on every rank: it needs no agreement, only a flush.
                stop_here = self.stop_after_steps is not None and st.step >= self.stop_after_steps
                if st.step % self.cfg.train.log_every_steps == 0 or stop_here:
                    if self.flush_steps(pending, bar) or stop_here:
                        return "preempted"
            if self.flush_steps(pending, bar):
                return "preempted"
        self.epoch_seconds = time.perf_counter() - t0
        self.guard.check(what="at the end of the epoch")
        return "done"

    def end_epoch(self, val: dict[str, float]) -> None:
        st = self.state
        train_loss = st.epoch_loss_sum / max(st.epoch_batches, 1)
        if not math.isfinite(val["loss"]):
            # NaN is never below the best loss: no epoch would be kept, early stopping would count the epochs as
            # ordinary ones, and the run would end, its budget spent, on a missing best_model.pt. The value is
            # reduced over ranks, so every rank stops here.
            raise NonFiniteError(f"training stopped after epoch {st.epoch}: the validation loss is {val['loss']} "
                                 f"(training loss {train_loss:.4g}, weights finite): `astrom3 verify` on the store "
                                 f"names validation objects whose values are not finite; otherwise lower optim.lr")
        improved = self.early.update(st.epoch, val["loss"])
        if improved:
            self.on_best(st.epoch, val)
        self.schedule.end_epoch(st.epoch, val["loss"])
        row = {"epoch": st.epoch, "step": st.step, "train_loss": train_loss,
               "lr": self.optimizer.param_groups[0]["lr"], **{f"val_{k}": v for k, v in val.items()},
               "best": improved, "seconds": round(getattr(self, "epoch_seconds", 0.0), 3)}
        self.run.log_epoch(row)
        if self.is_main:
            log.info("epoch %d: train loss %.4f, val %s", st.epoch, train_loss,
                     ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        st.epoch += 1
        st.batch_in_epoch = 0
        st.epoch_loss_sum = 0.0
        st.epoch_batches = 0

    def finish(self) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any]) -> str:
        """The log's last line: the numbers a user looks for first (metrics.json has the rest)."""
        raise NotImplementedError

    # -- the job -------------------------------------------------------------------------------------------
    def identity_extra(self) -> dict[str, Any]:
        """What identifies this kind of run beyond its config and store (fingerprint.run_identity)."""
        return {}

    def info(self) -> dict[str, Any]:
        # threads: what train.threads 0 (automatic) came to here, which sets the CPU's rounding; cells_file: which
        # cells file chose the values (config.yaml holds them with `cells: null`, so a reload applies none again).
        return {"kind": self.kind, "world_size": self.world, "launcher": self.env.launcher,
                "store": str(Path(self.cfg.data.store).resolve()),
                "store_provenance": self.store.attrs.get("provenance"),
                "threads": None if self.device.type == "cuda" else torch.get_num_threads(),
                "cells_file": self.cfg.cells, "model_preset_values": preset_values(self.cfg.model), **env_info()}

    def run_job(self) -> int:
        """Returns the process exit code: 0 done, EXIT_PREEMPTED after a preemption checkpoint."""
        with exports_restored():
            self.setup_distributed()
            try:
                # Held to the end, from before the run-dir check: another job in this run dir is refused at once.
                with self.run.log.recording(f"{self.kind} on rank {self.rank}"), \
                        writing(self.run.path, take=self.is_main, agree=adist.broadcast_object):
                    return self._run_job()
            finally:
                # On every path: a job refused in its set-up (another run's dir, a bad --init) left its group, and
                # the next job in this process (a sweep's, a notebook's) silently joined it; a failed job's loader
                # workers lived on while anything held its traceback (a notebook's last error).
                for batches in (getattr(self, "train_batches", None), getattr(self, "val_batches", None)):
                    if batches is not None:
                        batches.close()
                adist.cleanup()

    def _run_job(self) -> int:
        # Listening before the data set-up: a signal that arrives while the store's caches or distillation's
        # teacher are computed, or waited for (minutes on a large store), sets the flag and the first steps end in
        # a checkpoint and exit 75. Installed after it, the signal's default action killed the job, and SLURM
        # failed the task instead of requeueing it.
        self.preempt = Preemption()
        try:
            return self._set_up_and_train()
        finally:
            self.preempt.restore()

    def _set_up_and_train(self) -> int:
        self.setup_data()
        # Before any write (the engine's setup is collective, so no rank sees this run's own identity.json).
        identity = {**run_identity(self.cfg, self.store, self.world, kind=self.kind), **self.identity_extra()}
        check_run_dir(self.run.path, identity, self.resume_enabled)
        self.run.open_checkpoints()
        self.setup_engine()
        resumed = self.resume()
        if not resumed and (self.run.path / "metrics.json").exists():
            # Its checkpoints deleted (to free disk): training again overwrote best_model.pt under the old
            # metrics.json, which the collector and --resume-missing take as the finished run's.
            from .metrics_file import BadMetrics, read_metrics

            try:
                read_metrics(self.run.path / "metrics.json", self.kind)
                what, then = "a finished run (metrics.json)", "its results stand; to train it again, use"
            except BadMetrics as e:  # "its results stand" said of a truncated file that nothing counts
                what, then = f"a damaged metrics.json ({e})", "move the run dir aside, or use"
            raise RunMismatchError(f"{self.run.path} holds {what} and no checkpoint to resume: {then} a new "
                                   "--run-dir")
        if not resumed:
            self.run.truncate_after(0, 0)  # rows of an attempt of this same run that died before a checkpoint
            if self.is_main:
                write_identity(self.run.path, identity)
            self.run.write_config(self.cfg, self.info())
        else:
            self.run.record_resumption(self.cfg, self.info())
        st = self.state
        while not st.finished_training and st.epoch < self.cfg.train.epochs:
            if self.train_epoch() == "preempted":
                self.save_checkpoint()
                if self.is_main:
                    log.warning("stopped at step %d (%s); checkpoint written, exit %d for requeue",
                                st.step, self.preempt.signal_name or "stop_after_steps", EXIT_PREEMPTED)
                return EXIT_PREEMPTED
            with self.evaluated_weights():
                self.end_epoch(self.validate())
            if self.early.should_stop:
                st.finished_training = True
                if self.is_main:
                    log.info("early stopping after epoch %d (best epoch %d)", st.epoch - 1, self.early.best_epoch)
            if st.finished_training or st.epoch % self.cfg.train.checkpoint_every_epochs == 0 \
                    or st.epoch == self.cfg.train.epochs:
                self.save_checkpoint()
        st.finished_training = True
        metrics = self.finish()
        self.run.finish(metrics)
        if self.is_main:
            log.info("finished: %s (%s)", self.summary(metrics), self.run.path / "metrics.json")
        # Leave together: rank 0 still writes the run's files while the others reach the teardown, and a rank
        # destroying its group (or exiting) beside one still in it once aborted the other (gpu_check's 2-rank
        # gloo job, SIGABRT after "finished"). Only on success: after a failure a barrier would wait.
        adist.barrier()
        return 0


# ------------------------------------------------------------------------------------------------ helpers

def joined(parts: list, key) -> np.ndarray:
    """gather_objects' parts (each a rank's list of per-batch arrays under `key`) as one array in rank order. A
    rank with no rows (a split of fewer objects than ranks) holds an empty list: its shape is taken from the others'."""
    arrays = [a for p in parts for a in p[key]]
    return np.concatenate(arrays) if arrays else np.zeros(0)
