"""The GPU check: everything `benchmarks/gpu_check.sh` measures and verifies, one PASS/FAIL line per item.

    python benchmarks/gpu_check.py --out DIR            # on a CUDA machine (gpu_check.sh prepares the venv)
    python benchmarks/gpu_check.py --out DIR --dry-run  # the same items on CPU with tiny sizes (CI)

Items: a synthetic store; the loader alone (samples/s); paper-preset pretraining steps at batch 512 in bf16 and
fp32 (TF32), eager and compiled (inductor; aot_eager in the dry run), with samples/s (loader included) and peak GPU
memory; the loss of the same first batch against the CPU fp32 loss (dropout and ProbSparse sampling off, so
both see the same function); a 1-rank job and a 2-rank job (NCCL; gloo in the dry run), each stopped by
--stop-after-steps (checkpoint), resumed, validated and finished. Exit code 1 if any item failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS: list[tuple[str, str, str]] = []  # (PASS|FAIL|SKIP, item, detail)


def report(status: str, item: str, detail: str) -> None:
    RESULTS.append((status, item, detail))
    print(f"{status} {item}: {detail}", flush=True)


def item(name: str):
    """Run one check; an exception is that item's FAIL line, and the next item still runs."""
    def deco(fn):
        def run(*a, **kw):
            try:
                return fn(*a, **kw)
            except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
                traceback.print_exc()
                report("FAIL", name, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                return None
        return run
    return deco


@dataclasses.dataclass
class Sizes:
    objects: int
    batch: int
    steps: int  # timed training steps per configuration
    warmup: int
    config: str
    job_steps: int  # steps per epoch of the job items
    layout: dict | None


GPU = Sizes(objects=20000, batch=512, steps=200, warmup=20, config="configs/paper.yaml", job_steps=10, layout=None)
DRY = Sizes(objects=640, batch=32, steps=4, warmup=1, config="configs/test.yaml", job_steps=3,
            layout=dict(chunk_objects=16, table_chunk=64, lc_chunk=4096))


def cfg_for(sz: Sizes, store: Path, *sets: str):
    from astrom3_hpc.core.config import load_config

    return load_config(ROOT / sz.config, [f"data.store={store}", f"train.batch_size={sz.batch}",
                                          "train.deterministic=false", *sets])


@item("store")
def build_store(sz: Sizes, out: Path) -> Path:
    from astrom3_hpc.data.ingest import IngestOptions, ingest
    from astrom3_hpc.data.synthetic import SyntheticSource

    path = out / f"synthetic-{sz.objects}.zarr"
    t0 = time.perf_counter()
    if not path.exists():
        kw = {"layout_kw": sz.layout} if sz.layout else {}
        ingest(SyntheticSource(sz.objects, seed=0), path, IngestOptions(on_error="skip", progress=False, **kw))
    report("PASS", "store", f"{sz.objects} synthetic objects at {path} ({time.perf_counter() - t0:.1f} s)")
    return path


@item("loader")
def loader_alone(sz: Sizes, store: Path, cuda: bool) -> float:
    import torch

    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches, epoch_loader

    cfg = cfg_for(sz, store)
    workers = cfg.data.workers(cuda)
    b = TrimodalBatches(LoaderSpec(store=str(store), seed=cfg.data.seed, subset="full", split="train",
                                   batch_size=sz.batch, train=True, world_size=1, rank=0,
                                   buffer_chunks=cfg.data.buffer_chunks, streams=cfg.data.streams))
    n, t0 = 0, time.perf_counter()
    for epoch in range(3):
        for batch in epoch_loader(b, epoch, 0, workers):
            if cuda:  # what training pays: the copy to the GPU included
                batch = {k: v.to("cuda", non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
            n += sz.batch
    if cuda:
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - t0)
    report("PASS" if n else "FAIL", "loader", f"{rate:,.0f} samples/s alone ({workers} workers, {n} samples)")
    return rate


def first_batch_loss(sz: Sizes, store: Path, device: str, precision: str, tf32: bool) -> float:
    """The untrained model's loss on the first training batch, deterministic (dropout off, no sampling)."""
    import torch

    from astrom3_hpc.data.loader import LoaderSpec, TrimodalBatches
    from astrom3_hpc.train.loss import ContrastiveLoss
    from astrom3_hpc.model import build_clip
    from astrom3_hpc.train.engine import autocast, seed_everything, to_device
    from astrom3_hpc.train.pretrain import presence

    cfg = cfg_for(sz, store, f"train.precision={precision}", "model.deterministic_eval=true")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    seed_everything(cfg.data.seed)
    model = build_clip(cfg.model).to(device).eval()
    b = TrimodalBatches(LoaderSpec(store=str(store), seed=cfg.data.seed, subset="full", split="train",
                                   batch_size=sz.batch, train=True, world_size=1, rank=0))
    batch = to_device(next(iter(b.iter_epoch(0))), torch.device(device))
    with torch.no_grad():
        with autocast(cfg, torch.device(device)):
            emb = model(batch)
        loss, _ = ContrastiveLoss(list(model.modalities))({m: e.float() for m, e in emb.items()},
                                                          model.logit_scales(), presence(batch, model.modalities))
    return float(loss)


@item("train")
def train_throughput(sz: Sizes, store: Path, out: Path, precision: str, compiled: bool, cuda: bool) -> dict:
    import torch

    from astrom3_hpc.data.loader import epoch_loader
    from astrom3_hpc.train.preempt import Preemption
    from astrom3_hpc.train.pretrain import Pretrainer

    # The dry run compiles with aot_eager: the graphs are traced forward and backward as on the GPU, without
    # inductor's C++ build (75 s of a 112 s dry run on 2 cores), which the GPU run does not use (Triton) and
    # tests/test_compile.py checks at the encoder level.
    backend = "inductor" if cuda else "aot_eager"
    name = f"train {precision}{' (TF32)' if precision == 'fp32' and cuda else ''} " \
           f"{f'compiled ({backend})' if compiled else 'eager'}"
    sets = [f"train.precision={precision}"] + (["train.compile=true", f"train.compile_backend={backend}"]
                                               if compiled else [])
    cfg = cfg_for(sz, store, *sets)
    t = Pretrainer(cfg, out / f"throughput-{precision}-{'c' if compiled else 'e'}", resume=False)
    if not torch.distributed.is_initialized():  # one one-rank group for every configuration (DeepSpeed keeps it)
        for k in _LAUNCHER_VARS:
            os.environ.pop(k, None)
    t.setup_distributed()
    try:
        t.setup_data()
        t.setup_engine()
        t.preempt = Preemption(signals=())
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        losses, n, t0, warm_peak = [], 0, None, float("nan")
        epoch = 0
        while n < sz.warmup + sz.steps:
            for batch in epoch_loader(t.train_batches, epoch, 0, cfg.data.workers(cuda)):
                if n == sz.warmup:  # warm-up steps (compilation, cuDNN autotuning, allocator) excluded
                    if cuda:
                        torch.cuda.synchronize()
                        warm_peak = torch.cuda.max_memory_allocated() / 2**30
                        torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                loss = t.train_step(batch)
                if len(losses) < 3:
                    losses.append(loss)
                n += 1
                if n >= sz.warmup + sz.steps:
                    break
            epoch += 1
        if cuda:
            torch.cuda.synchronize()
        rate = sz.steps * sz.batch / (time.perf_counter() - t0)
        first = [float(x) for x in losses]
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    finally:
        del t
        if cuda:
            torch.cuda.empty_cache()
    ok = all(math.isfinite(x) for x in first)
    report("PASS" if ok else "FAIL", name,
           f"{rate:,.0f} samples/s at batch {sz.batch} (loader included), peak GPU memory "
           f"{f'{peak:.2f} GiB (warm-up {warm_peak:.2f})' if cuda else 'n/a (CPU)'}, "
           f"first losses {', '.join(f'{x:.4f}' for x in first)}")
    return {"rate": rate, "peak_gib": peak, "first_losses": first}


@item("loss vs CPU fp32")
def loss_matches_cpu(sz: Sizes, store: Path, precision: str, cuda: bool, cpu_loss: float) -> None:
    device = "cuda" if cuda else "cpu"
    got = first_batch_loss(sz, store, device, precision, tf32=True)
    tol = 2e-2 if precision == "bf16" else 5e-3  # TF32 keeps 10 mantissa bits, bf16 8
    rel = abs(got - cpu_loss) / abs(cpu_loss)
    what = f"{precision}, TF32" if cuda and precision == "fp32" else precision
    report("PASS" if rel < tol else "FAIL", f"loss vs CPU fp32 ({what})",
           f"first batch {got:.5f} on {device} vs {cpu_loss:.5f} on CPU fp32: relative difference {rel:.2e} "
           f"(tolerance {tol:.0e})")


def _job_cmd(world: int, sz: Sizes, store: Path, run: Path, extra: list[str]) -> list[str]:
    args = ["--config", str(ROOT / sz.config), "--run-dir", str(run), "--set", f"data.store={store}",
            f"train.batch_size={sz.batch}", "train.epochs=2", f"train.max_steps_per_epoch={sz.job_steps}",
            "train.eval_max_batches=2", "train.log_every_steps=2", "train.deterministic=false", *extra]
    job = str(ROOT / "jobs" / "pretrain.py")
    if world == 1:
        return [sys.executable, job, *args]
    # --standalone: torchrun's own store binds port 0 and tells the workers which port it got. A port picked
    # free here and bound there later can be taken in between (by another test's or the last job's sockets).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), job,
            *args]


_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "ASTROM3_DIST_LAUNCHER")


def clean_env() -> dict[str, str]:
    """This process's environment without the rank variables an in-process Trainer exported."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def child_failure(stderr: str) -> str:
    """The part of a failed job's stderr that says why: torchrun's own summary ends in a box of '=' whose last
    line names nothing, so report the ranks' exit codes and the last exception line a rank printed."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip() and "torch/_dynamo" not in x]
    codes = sorted({x.split(":", 1)[1].split()[0] for x in lines if x.startswith("exitcode")})
    errors = [x for x in lines if re.search(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception|Exit)\b", x)
              and "ChildFailedError" not in x]
    why = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"{why}" + (f" (rank exit codes {', '.join(codes)})" if codes else "") + \
        (f"; last lines: {' | '.join(lines[-6:])}" if not errors and len(lines) > 1 else "")


def _run_job(world: int, sz: Sizes, store: Path, run: Path, extra: list[str], env: dict[str, str],
             stage: str) -> subprocess.CompletedProcess:
    """One launch of the job, its whole output kept in RUN/launch-STAGE.log: every rank's stderr passes through
    torchrun, and a rank that dies at exit (a signal, not an exception) leaves its last words only there."""
    r = subprocess.run(_job_cmd(world, sz, store, run, extra), env=env, capture_output=True, text=True,
                       timeout=900)
    run.mkdir(parents=True, exist_ok=True)
    (run / f"launch-{stage}.log").write_text(r.stdout + r.stderr)
    return r


@item("job")
def job_stop_resume(sz: Sizes, store: Path, out: Path, world: int, cuda: bool) -> None:
    import torch

    backend = "nccl" if cuda else "gloo"
    gpus = f", {min(world, torch.cuda.device_count())} GPU(s)" if cuda else ""
    name = f"{world}-rank job ({backend}{gpus})"
    run = out / f"job-{world}rank"
    env = clean_env()
    stop = sz.job_steps + 1  # in the second epoch: after a validation and an epoch checkpoint
    r1 = _run_job(world, sz, store, run, ["--stop-after-steps", str(stop)], env, "stopped")
    stopped = json.loads((run / "checkpoints" / "latest.json").read_text())["step"] \
        if (run / "checkpoints" / "latest.json").exists() else None
    if stopped != stop:
        if world > 1 and cuda and "Duplicate GPU" in r1.stderr:
            report("SKIP", name, "NCCL refuses two ranks on one GPU (Duplicate GPU detected): needs 2 GPUs")
            return
        raise RuntimeError(f"the stopped run has no checkpoint at step {stop} (exit {r1.returncode}): "
                           f"{child_failure(r1.stderr)} (whole output: {run / 'launch-stopped.log'})")
    r2 = _run_job(world, sz, store, run, [], env, "resumed")
    if r2.returncode != 0:
        raise RuntimeError(f"resumed run exited {r2.returncode}: {child_failure(r2.stderr)} "
                           f"(whole output: {run / 'launch-resumed.log'})")
    m = json.loads((run / "metrics.json").read_text())
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ok = (m["steps"] == 2 * sz.job_steps and m["world_size"] == world and len(epochs) == 2
          and all(math.isfinite(e["val_loss"]) for e in epochs) and (run / "best_model.pt").exists())
    vals = ", ".join(f"{e['val_loss']:.4f}" for e in epochs)
    report("PASS" if ok else "FAIL", name,
           f"stopped at step {stop} (checkpoint), resumed, {m['steps']} steps, validations {vals}, "
           f"best_model.pt written")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work directory (store, runs)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI)")
    a = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not a.dry_run
    if not a.dry_run and not cuda:
        report("FAIL", "cuda", f"torch {torch.__version__} sees no GPU (CUDA build {torch.version.cuda})")
        return 1
    sz = DRY if a.dry_run else GPU
    a.out.mkdir(parents=True, exist_ok=True)
    dev = torch.cuda.get_device_name() if cuda else "CPU (dry run)"
    report("PASS", "device", f"{dev}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                              f"{torch.cuda.device_count() if cuda else 0} GPU(s)")
    store = build_store(sz, a.out)
    if store is None:
        return 1
    loader_alone(sz, store, cuda)
    cpu_loss = first_batch_loss(sz, store, "cpu", "fp32", tf32=False)
    rates = {}
    # Eager runs, the loss checks and the jobs first, torch.compile last: compilation is the slow, least certain
    # part, and a time limit that cuts the check should cut it rather than the items that prove the path works.
    for precision in ("bf16", "fp32"):
        r = train_throughput(sz, store, a.out, precision, False, cuda)
        if r:
            rates[(precision, False)] = r["rate"]
        loss_matches_cpu(sz, store, precision, cuda, cpu_loss)
    # The jobs are child processes with their own process group; this one's stays for the compiled runs
    # (DeepSpeed keeps its communication backend for the process's life).
    job_stop_resume(sz, store, a.out, 1, cuda)
    if cuda and torch.cuda.device_count() < 2:
        report("SKIP", "2-rank job (nccl)", "one GPU visible: NCCL refuses two ranks on one GPU")
    else:
        job_stop_resume(sz, store, a.out, 2, cuda)
    # The CPU dry run compiles once (fp32, aot_eager).
    for precision in ("bf16", "fp32") if cuda else ("fp32",):
        r = train_throughput(sz, store, a.out, precision, True, cuda)
        if r:
            rates[(precision, True)] = r["rate"]
    from astrom3_hpc import distributed as adist

    adist.cleanup()
    if rates:
        (p, c), best = max(rates.items(), key=lambda kv: kv[1])
        print(f"best samples/s: {best:,.0f} ({p}{' compiled' if c else ''}, batch {sz.batch}, "
              f"1 {'GPU' if cuda else 'CPU'})")
    fails = [r for r in RESULTS if r[0] == "FAIL"]
    print(f"gpu_check: {len(RESULTS) - len(fails)} ok, {len(fails)} failed", flush=True)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
