"""Contrastive training step of the `paper` preset on CPU: DeepSpeed engine vs a plain PyTorch loop.

Measures samples/s, peak RSS and model FLOP utilisation (FLOPs of one step counted by torch's FlopCounterMode,
against a float32 matrix-multiply peak measured in the same run, per thread) for:
  baseline  plain loop: model + torch Adam + ContrastiveLoss (no gather) + grad-norm clipping, one process
  engine-1  the project's DeepSpeed engine (ZeRO 0, client Adam, gradient clipping), world size 1
  engine-2  the same at world size 2 (torchrun, gloo, global-batch negatives), local batch unchanged
Every process uses one thread, so per-rank numbers compare directly. Inputs are random tensors of the real
shapes (the loader has its own benchmark).

    python benchmarks/train_step.py [--batch 64] [--steps 6] [--warmup 2] [--preset paper]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_batch(b: int, gen: torch.Generator) -> dict:
    mask = torch.ones(b, 200)
    mask[:, 150:] = 0
    return {"lc": torch.randn(b, 200, 9, generator=gen), "lc_mask": mask,
            "spec": torch.randn(b, 3, 2575, generator=gen), "meta": torch.randn(b, 34, generator=gen),
            "present": torch.ones(b, 3, dtype=torch.bool)}


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step_flops(model, loss_fn, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        emb = model(batch)
        loss, _ = loss_fn(emb, model.logit_scales())
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def worker(args) -> None:
    torch.set_num_threads(1)
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.loss import ContrastiveLoss
    from astrom3_hpc.model import build_clip

    cfg = load_config(None, [f"model.preset={args.preset}", f"train.batch_size={args.batch * args.world}",
                             "optim.grad_clip=45.0"])
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(args.batch, gen) for _ in range(2)]
    torch.manual_seed(0)
    model = build_clip(cfg.model)
    loss_fn = ContrastiveLoss(cfg.model.modalities)
    peak = matmul_peak()
    flops = step_flops(model, ContrastiveLoss(cfg.model.modalities, gather=False), batches[0])
    if args.mode == "baseline":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=tuple(cfg.optim.betas),
                               weight_decay=cfg.optim.weight_decay)

        def step(batch):
            emb = model(batch)
            loss, _ = loss_fn(emb, model.logit_scales())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        rank = 0
    else:
        from astrom3_hpc import distributed as adist
        from astrom3_hpc.train.engine import build_engine

        env = adist.init()
        rank = env.rank
        engine, _ = build_engine(model, cfg, env.world_size)

        def step(batch):
            emb = engine(batch)
            loss, _ = loss_fn(emb, engine.module.logit_scales())
            engine.backward(loss)
            engine.step()
    for i in range(args.warmup):
        step(batches[i % 2])
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % 2])
    dt = (time.perf_counter() - t0) / args.steps
    res = {"mode": args.mode, "world": args.world, "rank": rank, "step_s": dt, "samples_s_rank": args.batch / dt,
           "flops_step": flops, "peak_flops": peak, "mfu": flops / dt / peak,
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(args.out).with_suffix(f".rank{rank}.json").write_text(json.dumps(res))


def launch(mode: str, world: int, args, tmp: Path) -> list[dict]:
    out = tmp / f"{mode}-{world}"
    me = [sys.executable, __file__, "--worker", "--mode", mode, "--world", str(world), "--batch", str(args.batch),
          "--steps", str(args.steps), "--warmup", str(args.warmup), "--preset", args.preset, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "DS_ACCELERATOR": "cpu"}
    if mode == "engine":
        from astrom3_hpc.distributed.env import find_free_port

        me = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(world), "--master_port",
              str(find_free_port()), *me[1:]]
    r = subprocess.run(me, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} x{world} failed:\n{r.stderr[-3000:]}")
    return [json.loads(p.read_text()) for p in sorted(tmp.glob(f"{mode}-{world}.rank*.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="local batch per rank")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="baseline", help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = launch("baseline", 1, args, tmp)[0]
        e1 = launch("engine", 1, args, tmp)[0]
        e2 = launch("engine", 2, args, tmp)
    print(f"\n{args.preset} preset, local batch {args.batch}, 1 thread per process, {args.steps} timed steps")
    print(f"FLOPs per step (fwd+bwd, one rank's batch): {base['flops_step'] / 1e9:.1f} GFLOP; "
          f"matmul peak {base['peak_flops'] / 1e9:.1f} GFLOP/s per thread")
    print(f"{'path':<26}{'world':>6}{'step s':>9}{'samples/s/rank':>16}{'samples/s total':>17}{'MFU':>7}"
          f"{'peak RSS MB':>13}")
    rows = [("baseline: plain loop", 1, [base]), ("DeepSpeed engine", 1, [e1]), ("DeepSpeed engine", 2, e2)]
    for name, w, rs in rows:
        step = max(r["step_s"] for r in rs)
        per_rank = args.batch / step
        print(f"{name:<26}{w:>6}{step:>9.3f}{per_rank:>16.1f}{per_rank * w:>17.1f}"
              f"{sum(r['mfu'] for r in rs) / len(rs):>7.1%}{max(r['rss_mb'] for r in rs):>13.0f}")
    s1 = args.batch / e1["step_s"]
    s2 = args.batch * 2 / max(r["step_s"] for r in e2)
    print(f"\nengine vs plain loop at world 1: {base['step_s'] / e1['step_s']:.3f}x throughput "
          f"(target >= 0.95x)")
    print(f"world 2 scaling efficiency: {s2 / (2 * s1):.1%} (total samples/s at 2 ranks / 2x world-1 samples/s)")


if __name__ == "__main__":
    main()
