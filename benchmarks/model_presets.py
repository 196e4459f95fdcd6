"""Benchmark the two model presets: parameter counts, forward+backward time per batch, eval determinism.

    python benchmarks/model_presets.py [--batch 64] [--repeats 3] [--device cpu] [--threads N] [--kernels plain fast]

Synthetic inputs with the loader's shapes (lc (B, 200, 9) with ragged zero padding, spec (B, 3, 2575),
meta (B, 34)); the loss is the plain single-process sum over pairs of symmetric cross-entropies. The models run
the kernels a training job runs (train.kernels, default fast on CPU, set as train/engine.py apply_execution sets
them); `--kernels plain` times the stock torch ops.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# The checkout this file sits in, not whatever astrom3_hpc the venv has installed (another branch's tree).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from astrom3_hpc.core.config import ModelConfig  # noqa: E402
from astrom3_hpc.model import build_clip, parameter_breakdown  # noqa: E402
from astrom3_hpc.model.fast_ops import set_fast_kernels, tune_malloc  # noqa: E402


def synthetic_batch(B: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_real = torch.randint(40, 201, (B,), generator=g)
    mask = (torch.arange(200)[None, :] < n_real[:, None]).float()
    batch = {
        "lc": torch.randn(B, 200, 9, generator=g) * mask[..., None],
        "lc_mask": mask,
        "spec": torch.randn(B, 3, 2575, generator=g),
        "meta": torch.randn(B, 34, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def clip_loss(model, emb):
    total = 0.0
    for (a, b), scale in model.logit_scales().items():
        logits = scale * emb[a] @ emb[b].T
        t = torch.arange(logits.shape[0], device=logits.device)
        total = total + F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(preset: str, B: int, repeats: int, device: torch.device, kernels: str = "fast") -> dict:
    torch.manual_seed(0)
    model = build_clip(ModelConfig(preset=preset)).to(device)
    if device.type == "cpu":  # apply_execution's CPU half: on CUDA training runs the stock kernels
        set_fast_kernels(model, kernels == "fast")
        if kernels == "fast":
            tune_malloc()
    batch = synthetic_batch(B, device)
    bd = parameter_breakdown(model)

    model.train()
    times = []
    for i in range(repeats + 1):  # first iteration is warm-up
        model.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        loss = clip_loss(model, model(batch))
        loss.backward()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)

    model.eval()
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        e1 = model(batch)
        sync(device)
        t_eval = time.perf_counter() - t0
        e2 = model(batch)
    diff = max((e1[m] - e2[m]).abs().max().item() for m in e1)
    return {
        "preset": preset, "params": bd["total"], "lc_proj": bd["projection.photo"],
        "fb_mean": sum(times) / len(times), "fb_min": min(times), "eval": t_eval, "eval_maxdiff": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--kernels", choices=("fast", "plain"), nargs="+", default=["fast"],
                    help="train.kernels on CPU (fast: the training default; plain: stock torch ops); both: "
                         "plain first, then fast, and each fast row's speed-up over plain")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    # Plain first: the fast path's malloc tuning is process-wide and would also speed up a later plain row.
    kernels = sorted(set(args.kernels), key=("plain", "fast").index) if device.type == "cpu" else ["stock (CUDA)"]
    print(f"torch {torch.__version__}, device {name}, batch {args.batch}, repeats {args.repeats}, "
          f"kernels {' then '.join(kernels)}, load average {os.getloadavg()[0]:.2f}")
    rows = [{**bench(p, args.batch, args.repeats, device, k), "kernels": k}
            for k in kernels for p in ("paper", "det_masked_pooled")]
    plain = {r["preset"]: r["fb_mean"] for r in rows if r["kernels"] == "plain"}
    print()
    print("| preset | kernels | parameters | LC projection | fwd+bwd s/batch (mean, min) | x plain | eval fwd s/batch "
          "| eval twice: max abs diff | deterministic eval |")
    print("|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        x = f"{plain[r['preset']] / r['fb_mean']:.2f}x" if r["preset"] in plain else "-"
        print(f"| {r['preset']} | {r['kernels']} | {r['params']:,} | {r['lc_proj']:,} | {r['fb_mean']:.3f}, "
              f"{r['fb_min']:.3f} | {x} | {r['eval']:.3f} | {r['eval_maxdiff']:.2e} "
              f"| {'yes' if r['eval_maxdiff'] == 0 else 'no'} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
