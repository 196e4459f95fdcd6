"""Training-step speed on one GPU: the reference implementation's computation vs the project's engine.

The GPU counterpart of benchmarks/train_step.py. Random inputs of the real shapes already on the GPU (the loader
has its own numbers in gpu_check.sh), the `paper` preset, forward + contrastive loss + backward + Adam with
gradient-norm clipping, at each global batch of `--batch`. Executions, each in its own fresh process (peak
memory, cuDNN autotuning and compile caches cannot leak from one into the next):

  reference             benchmarks/reference_model.py (the reference's costly choices kept), plain Adam, fp32 (TF32)
  engine-fp32           the project's DeepSpeed engine, fp32 with TF32 matmuls
  engine-bf16           the same under bf16 autocast (fp32 weights, loss and communication)
  engine-bf16-compiled  the same with train.compile (torch.compile per encoder)
  engine-fp32-compiled  fp32 with train.compile; only when named in --only (on the CPU: train.compile against the
                        fast kernels, `--cpu --only engine-fp32 engine-fp32-compiled`)

Each batch runs the reference first, whatever the order of `--only`, and every row's "x ref" is against it.

Step time is the mean over `--steps` steps after `--warmup` (one synchronisation at the end, so host-device
overlap counts as it does in training); peak memory is over the timed steps only (cuDNN's autotuning workspaces
in the warm-up are not the steady state). MFU: the model's FLOPs per step (torch's FlopCounterMode) / step time /
the dense bf16 matmul rate measured in this run. `--profile` adds, per execution, the fraction of the step
during which GPU kernels ran (the rest: the host launching work), the three ops with the most host time, and
the source lines where a step makes the host wait for the GPU (torch.cuda.set_sync_debug_mode).

    python benchmarks/gpu_step.py [--batch 512 2048] [--steps 30] [--warmup 10] [--profile] [--json FILE]
    python benchmarks/gpu_step.py --cpu --batch 8 --steps 2 --warmup 1    # smoke run without a GPU
    python benchmarks/gpu_step.py --cpu --batch 32 --steps 4 --warmup 2 --only engine-fp32 engine-fp32-compiled
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import make_batch, make_step  # noqa: E402

EXECUTIONS = {  # name: (kind, precision, compiled)
    "reference": ("reference", "fp32", False),
    "engine-fp32": ("engine", "fp32", False),
    "engine-bf16": ("engine", "bf16", False),
    "engine-bf16-compiled": ("engine", "bf16", True),
    "engine-fp32-compiled": ("engine", "fp32", True),
}
DEFAULT = ["reference", "engine-fp32", "engine-bf16", "engine-bf16-compiled"]  # a GPU run's rows, as before


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Dense matmul FLOP/s: bf16 on the GPU (MFU's denominator), fp32 on the CPU smoke run."""
    if device.type == "cpu":
        n, reps = 1024, 3
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step_flops(cfg, batch: dict, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from astrom3_hpc.model import build_clip
    from astrom3_hpc.train.loss import ContrastiveLoss

    model = build_clip(cfg.model).to(device)
    with FlopCounterMode(display=False) as fc:
        loss, _ = ContrastiveLoss(cfg.model.modalities, gather=False)(model(batch), model.logit_scales())
        loss.backward()
    return float(fc.get_total_flops())


def worker(args) -> None:
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.engine import configure_cuda, to_device

    kind, precision, compiled = EXECUTIONS[args.mode]
    device = torch.device("cpu" if args.cpu else "cuda")
    cfg = load_config(None, ["model.preset=paper", f"train.batch_size={args.batch}", "optim.grad_clip=45.0",
                             f"train.precision={precision}", f"train.compile={str(compiled).lower()}",
                             "train.deterministic=false"])
    batches = [to_device(make_batch(args.batch, torch.Generator().manual_seed(i)), device) for i in range(2)]
    configure_cuda(cfg)
    step, _ = make_step(kind, cfg, device)

    t_warm = time.perf_counter()
    for i in range(args.warmup):
        step(batches[i % 2])
    sync(device)
    warmup_s = time.perf_counter() - t_warm
    if device.type == "cuda":
        warm_peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % 2])
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    res = {"mode": args.mode, "batch": args.batch, "step_s": step_s, "warmup_s": warmup_s,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
           "warmup_peak_gib": warm_peak if device.type == "cuda" else None}
    if args.profile:
        res.update(profile(step, batches, device, args.profile_steps))
    Path(args.out).write_text(json.dumps(res))


def profile(step, batches, device: torch.device, n: int) -> dict:
    """The fraction of the step's wall time with a GPU kernel running, and the ops with most host time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(n):
            step(batches[i % 2])
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    # Kernels are the events on the device; an op's own device time is its kernels' again, so only these count.
    kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    kernel_us = sum(e.self_device_time_total for e in kernels)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:3]
    return {"gpu_busy": kernel_us / 1e6 / wall if device.type == "cuda" else None,
            "kernels_per_step": sum(e.count for e in kernels) / n,
            "top_host_ops": [(e.key, e.self_cpu_time_total / 1e3 / n) for e in top],
            "syncs": host_syncs(step, batches[0]) if device.type == "cuda" else []}


def host_syncs(step, batch) -> list[str]:
    """The source lines where one step makes the host wait for the GPU (torch's sync debug mode)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sorted({f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})


def launch(mode: str, batch: int, args, d: Path) -> dict:
    out = d / f"{mode}-{batch}.json"
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--batch", str(batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--out", str(out), "--profile-steps", str(args.profile_steps)]
    cmd += ["--cpu"] * args.cpu + ["--profile"] * args.profile
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    if args.cpu:
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu", GLOO_SOCKET_IFNAME="lo")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return {"mode": mode, "batch": batch, "error": (r.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[512, 2048], help="global batches to measure")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per execution (mean)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--only", nargs="+", choices=list(EXECUTIONS), help="measure these executions only")
    ap.add_argument("--profile", action="store_true", help="GPU-busy fraction and top host ops per execution")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="smoke run on the CPU (no GPU needed)")
    ap.add_argument("--json", type=Path, help="also write every result here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="reference", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.batch = args.batch[0]
        return worker(args)
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.cpu:
        raise SystemExit("gpu_step: torch sees no GPU; --cpu for a smoke run")
    from astrom3_hpc.core.config import load_config

    rate = matmul_rate(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    # A CPU's rate in TFLOP/s rounds to 0.0: GFLOP/s there.
    rate_text = f"bf16 matmul {rate / 1e12:.1f} TFLOP/s" if device.type == "cuda" else \
        f"fp32 matmul {rate / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)"
    print(f"gpu_step: {name}, torch {torch.__version__}; dense {rate_text} (measured now)", flush=True)
    names = args.only or DEFAULT
    results = []
    with tempfile.TemporaryDirectory() as d:
        for batch in args.batch:
            flops = step_flops(load_config(None, ["model.preset=paper"]),
                               make_batch(batch, torch.Generator().manual_seed(0)) if device.type == "cpu" else
                               {k: v.to(device)
                                for k, v in make_batch(batch, torch.Generator().manual_seed(0)).items()},
                               device)
            ref = None
            # The reference first whatever the order of --only: every later row's ratio is against it.
            for n in sorted(names, key=lambda n: n != "reference"):
                r = launch(n, batch, args, Path(d))
                r["flops"] = flops
                results.append(r)
                if "error" in r:
                    print(f"batch {batch:>5} {n:<22} FAILED: {r['error']}", flush=True)
                    continue
                sps = batch / r["step_s"]
                ref = sps if n == "reference" else ref
                extra = ""
                if r.get("gpu_busy") is not None:
                    extra = f"  GPU busy {r['gpu_busy']:.0%}, {r['kernels_per_step']:.0f} kernels/step"
                peak = f"{r['peak_gib']:.2f} GiB (warm-up {r['warmup_peak_gib']:.2f})" if r["peak_gib"] is not None \
                    else "n/a"
                print(f"batch {batch:>5} {n:<22} {r['step_s'] * 1e3:8.1f} ms/step {sps:>9,.0f} samples/s "
                      f"{f'{sps / ref:.2f}x ref' if ref else '-':>9}  MFU {flops / r['step_s'] / rate:6.1%}  "
                      f"peak {peak}  warm-up {r['warmup_s']:.1f} s{extra}", flush=True)
                if r.get("top_host_ops"):
                    print("      most host time: " + ", ".join(f"{k} {ms:.2f} ms" for k, ms in r["top_host_ops"]))
                if r.get("syncs"):
                    print("      host waits for the GPU at: " + ", ".join(r["syncs"]))
    if args.json:
        args.json.write_text(json.dumps({"device": name, "matmul_flops": rate, "results": results}, indent=1))


if __name__ == "__main__":
    main()
