"""Where one `paper` training step spends its CPU time: torch.profiler, ops ranked by self CPU time.

One process, all cores as threads, global batch `--batch`, forward + contrastive loss + backward + gradient
clipping + Adam, random inputs of the real shapes; `--kernels plain` is the stock-torch path, `fast` the
default one (train.kernels); `--reference` profiles benchmarks/reference_model.py instead.

    python benchmarks/profile_step.py [--kernels fast|plain] [--reference] [--batch 64] [--steps 2] [--top 10]
        [--shapes]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_step import make_batch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", choices=["fast", "plain"], default="fast")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--shapes", action="store_true", help="rank (op, input shapes) pairs instead of ops")
    args = ap.parse_args()

    from astrom3_hpc.core.config import load_config
    from astrom3_hpc.train.loss import ContrastiveLoss
    from astrom3_hpc.model import build_clip
    from astrom3_hpc.train.engine import apply_execution, build_optimizer

    cfg = load_config(None, ["model.preset=paper", f"train.kernels={args.kernels}", "train.threads=0"])
    batch = make_batch(args.batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    if args.reference:
        from reference_model import RefCLIP, reference_loss

        from astrom3_hpc.train.engine import cpu_threads

        torch.set_num_threads(cpu_threads(0, 1))
        model = RefCLIP(cfg.model).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def loss_of(b):
            return reference_loss(model(b))
    else:
        model = build_clip(cfg.model).train()
        opt = build_optimizer(model, cfg, apply_execution(model, cfg))
        loss_fn = ContrastiveLoss(cfg.model.modalities, gather=False)

        def loss_of(b):
            return loss_fn(model(b), model.logit_scales())[0]

    def step():
        loss_of(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            step()
    rows = sorted(prof.key_averages(group_by_input_shape=args.shapes), key=lambda e: e.self_cpu_time_total,
                  reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    name = "reference" if args.reference else f"project, kernels={args.kernels}"
    print(f"{name}: {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} steps, "
          f"self CPU {total / 1e6 / args.steps:.2f} s per step")
    print("| op | share of self CPU | ms per step | calls per step |\n|---|---|---|---|")
    for e in rows[: args.top]:
        key = f"{e.key} {e.input_shapes}" if args.shapes else e.key
        print(f"| `{key}` | {e.self_cpu_time_total / total:.1%} | {e.self_cpu_time_total / 1e3 / args.steps:.0f} "
              f"| {e.count // args.steps} |")


if __name__ == "__main__":
    main()
