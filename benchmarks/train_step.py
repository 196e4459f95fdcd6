"""Contrastive training step of the `paper` preset on all CPU cores: the reference baseline vs the project.

Every execution runs in its own fresh process (process-wide settings such as the fast path's malloc tuning
cannot leak into another), at global batch `--batch`, fp32, forward + contrastive loss + backward + Adam with
gradient-norm clipping, on random inputs of the real shapes (the loader has its own benchmark):

  reference       benchmarks/reference_model.py: the reference implementation's computation (expanded sampled
                  keys, Conv1d feed-forward with transposes, nn.Dropout, full-logit loss), plain Adam loop,
                  one process with all cores as threads
  engine-plain    the project's DeepSpeed engine, `train.kernels=plain` (stock torch ops), 1 rank, all cores
  engine-fast     the same with `train.kernels=fast` (the default: model/fast_ops.py), 1 rank, all cores
  engine-fast-x2  `train.kernels=fast`, one rank per core (torchrun, gloo, global-batch negatives), 1 thread each

The executions alternate (A B C D A B C D ...) for `--rounds` rounds, because the machine may be shared; the
median step time per execution is reported, with the load average. The all-core fp32 matmul rate (2048^3) is
measured in the same run between rounds; MFU = model FLOPs of one global step (torch's FlopCounterMode on the
stock path, i.e. what the reference computes) / step time / that rate. The fast kernels skip work the reference
does (model/sparse_attention.py); the FLOPs they do execute are printed beside it. The last line names the fastest
project execution:

    best samples/s: <number> (<configuration>)

    python benchmarks/train_step.py [--batch 64] [--steps 4] [--warmup 1] [--rounds 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from astrom3_hpc.core.processes import usable_cores  # noqa: E402

EXECUTIONS = {  # name: (kind, ranks, train.kernels)
    "reference": ("reference", 1, "plain"),
    "engine-plain": ("engine", 1, "plain"),
    "engine-fast": ("engine", 1, "fast"),
    "engine-fast-x2": ("engine", 2, "fast"),
}


def make_batch(b: int, gen: torch.Generator) -> dict:
    mask = torch.ones(b, 200)
    mask[:, 150:] = 0
    return {"lc": torch.randn(b, 200, 9, generator=gen), "lc_mask": mask,
            "spec": torch.randn(b, 3, 2575, generator=gen), "meta": torch.randn(b, 34, generator=gen),
            "present": torch.ones(b, 3, dtype=torch.bool)}


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """fp32 FLOP/s of an n^3 matmul with the current thread count (best of `reps`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def step_flops(batch_size: int, kernels: str = "plain") -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.loss import ContrastiveLoss
    from astrom3_hpc.model import build_clip

    from astrom3_hpc.model.fast_ops import set_fast_kernels

    cfg = load_config(None, ["model.preset=paper"])
    model = build_clip(cfg.model)
    set_fast_kernels(model, kernels == "fast")
    batch = make_batch(batch_size, torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as fc:
        loss, _ = ContrastiveLoss(cfg.model.modalities, gather=False)(model(batch), model.logit_scales())
        loss.backward()
    return float(fc.get_total_flops())


def make_step(kind: str, cfg, device: torch.device | None = None):
    """One training step on a batch, and the rank: the reference's plain Adam loop, or the project's engine
    (forward under the config's autocast, loss in fp32, the trainer's gradient clipping, engine step)."""
    torch.manual_seed(0)
    if kind == "reference":
        from reference_model import RefCLIP, reference_loss

        model = RefCLIP(cfg.model).to(device or "cpu").train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=tuple(cfg.optim.betas),
                               weight_decay=cfg.optim.weight_decay)

        def step(batch):
            loss = reference_loss(model(batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, 0
    from astrom3_hpc import distributed as adist
    from astrom3_hpc.model import build_clip
    from astrom3_hpc.train.engine import autocast, build_engine, clip_gradients
    from astrom3_hpc.train.loss import ContrastiveLoss

    model = build_clip(cfg.model)
    loss_fn = ContrastiveLoss(cfg.model.modalities)
    env = adist.init(force_group=True)
    engine, _ = build_engine(model, cfg, env.world_size, env.local_world_size)
    engine.train()
    where = device or torch.device("cpu")

    def step(batch):  # as Pretrainer.compute_loss and train_step
        with autocast(cfg, where):
            emb = engine(batch)
        loss, _ = loss_fn({m: e.float() for m, e in emb.items()}, engine.module.logit_scales())
        engine.backward(loss)
        clip_gradients(engine.module, cfg)
        engine.step()
    return step, env.rank


def worker(args) -> None:
    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.engine import cpu_threads

    kind, ranks, kernels = EXECUTIONS[args.mode]
    local = args.batch // ranks
    cfg = load_config(None, ["model.preset=paper", f"train.batch_size={args.batch}", "optim.grad_clip=45.0",
                             f"train.kernels={kernels}", "train.threads=0"])
    batches = [make_batch(local, torch.Generator().manual_seed(i)) for i in range(2)]
    if kind == "reference":
        torch.set_num_threads(cpu_threads(0, 1))
    step, rank = make_step(kind, cfg)
    for i in range(args.warmup):
        step(batches[i % 2])
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(batches[i % 2])
        times.append(time.perf_counter() - t0)
    res = {"mode": args.mode, "rank": rank, "step_s": statistics.median(times), "threads": torch.get_num_threads()}
    Path(args.out).with_suffix(f".rank{rank}.json").write_text(json.dumps(res))


def launch(mode: str, args, out: Path) -> dict:
    kind, ranks, _ = EXECUTIONS[mode]
    me = [sys.executable, __file__, "--worker", "--mode", mode, "--batch", str(args.batch),
          "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", str(out)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "DS_ACCELERATOR": "cpu"}
    env.pop("OMP_NUM_THREADS", None)
    if kind == "engine":
        from astrom3_hpc.distributed.env import find_free_port

        me = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(ranks), "--master_port",
              str(find_free_port()), *me[1:]]
    r = subprocess.run(me, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    rs = [json.loads(p.read_text()) for p in sorted(out.parent.glob(f"{out.name}.rank*.json"))]
    return {"step_s": max(x["step_s"] for x in rs), "threads": rs[0]["threads"], "ranks": len(rs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="global batch")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per execution and round (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=list(EXECUTIONS), help="measure these executions only")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="reference", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    names = args.only or list(EXECUTIONS)
    # What an execution would refuse deep inside torchrun, after the others had run for minutes: refuse it here.
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        ap.error("--steps and --rounds must be at least 1, --warmup at least 0")
    if args.batch < 2:
        ap.error(f"--batch {args.batch}: the contrastive loss needs a global batch of at least 2 (train.batch_size)")
    for n in names:
        ranks = EXECUTIONS[n][1]
        if args.batch % ranks:
            ap.error(f"--batch {args.batch}: {n} runs {ranks} ranks and splits the global batch evenly between them: "
                     f"give a multiple of {ranks} (or leave {n} out with --only)")
    n_cores = usable_cores()
    torch.set_num_threads(n_cores)
    flops = step_flops(args.batch)  # the model's FLOPs, as the reference computes them: MFU's numerator
    flops_fast = step_flops(args.batch, "fast")
    rates: list[float] = []
    steps: dict[str, list[float]] = {n: [] for n in names}
    info: dict[str, dict] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            rates.append(matmul_rate())
            for n in names:
                res = launch(n, args, Path(d) / f"{n}-{r}")
                steps[n].append(res["step_s"])
                info[n] = res
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{args.rounds} {n:<15} {res['step_s']:.3f} s/step", flush=True)
        rates.append(matmul_rate())
    rate = max(rates)
    print(f"\npaper preset, global batch {args.batch}, fp32, {n_cores} cores, {args.rounds} alternating rounds x "
          f"{args.steps} timed steps (median); load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print(f"FLOPs per step (fwd+bwd): {flops / 1e9:.1f} GFLOP (the fast kernels execute {flops_fast / 1e9:.1f} GFLOP "
          f"of matmuls for the same step: ProbSparse through its projections); all-core fp32 matmul (2048^3): "
          f"{rate / 1e9:.1f} GFLOP/s (best of {len(rates)} measurements in this run)")
    print(f"{'execution':<16}{'ranks x threads':>16}{'step s':>9}{'samples/s':>11}{'x reference':>13}{'MFU':>7}")
    sps = {n: args.batch / statistics.median(v) for n, v in steps.items()}
    ref = sps.get("reference")
    for n in names:
        st = statistics.median(steps[n])
        x_ref = f"{sps[n] / ref:.2f}x" if ref else "-"
        print(f"{n:<16}{info[n]['ranks']:>9} x {info[n]['threads']:<4}{st:>9.3f}{sps[n]:>11.1f}{x_ref:>13}"
              f"{flops / st / rate:>7.1%}")
    project = [n for n in names if n != "reference"]
    if project:
        best = max(project, key=sps.get)
        extra = f", {sps[best] / ref:.2f}x reference" if ref else ""
        print(f"best samples/s: {sps[best]:.1f} ({best}: {info[best]['ranks']} rank(s) x {info[best]['threads']} "
              f"thread(s){extra}, MFU {flops / statistics.median(steps[best]) / rate:.1%})")


if __name__ == "__main__":
    main()
