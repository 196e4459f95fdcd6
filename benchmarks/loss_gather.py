"""Per-step cost of cross-rank negatives: encoders vs gather vs loss, next to the byte cost model.

    python benchmarks/loss_gather.py                       # spawns --world 2 ranks (gloo, CPU) itself
    python benchmarks/loss_gather.py --model standin --batch 256
    torchrun --nproc_per_node 2 benchmarks/loss_gather.py  # or srun / mpiexec: uses the launcher's ranks

Each rank, per step: encoder forward -> barrier (so the gather below measures communication, not the load
imbalance of the encoders) -> ContrastiveLoss forward (which gathers the packed embeddings + presence masks
once, plus a tiny shape exchange) -> backward (the gather's backward is one reduce-scatter of the gathered
gradient; all-reduce + slice on backends without reduce-scatter). Collective times come from timing wrappers around
torch.distributed.all_gather_single / all_reduce; "compute" columns are the phase minus its collectives.
The table shows, for each timed step, every phase of the rank whose step took longest (so the phases add up to
its step, the barrier's wait for the other ranks' encoders included), averaged over the timed steps. Cost model:
modalities x world x batch x 512 x 4 bytes (fp32 embeddings gathered per step); "gathered" is what the collective
actually moved into each rank's output buffer (includes the presence-mask columns when --masked).

--model paper: the real AstroM3 CLIP (astrom3_hpc.model.build_clip, paper preset) on random inputs, with the
kernels a training job runs (train.kernels, default fast, set as train/engine.py apply_execution sets them;
--kernels plain for the stock torch ops); --model standin: one MLP per modality (input -> --hidden -> 512);
--model auto: paper if importable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2, help="ranks to spawn when not started by a launcher")
    ap.add_argument("--batch", type=int, default=32, help="local batch per rank")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--model", choices=("auto", "paper", "standin"), default="auto")
    ap.add_argument("--kernels", choices=("fast", "plain"), default="fast",
                    help="train.kernels of the paper model (fast: the training default)")
    ap.add_argument("--hidden", type=int, default=1024, help="stand-in encoder hidden width")
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--masked", action="store_true", help="random presence masks (70%% present)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--json", type=str, default="", help="also write the results here (rank 0)")
    ap.add_argument("--timeout", type=float, default=900)
    return ap.parse_args(argv)


# --------------------------------------------------------------------------------------------- worker

class _CollectiveTimer:
    """Wrap torch.distributed collectives to time them and count bytes (benchmark only)."""

    def __init__(self):
        import torch.distributed as tdist
        self.tdist = tdist
        self.acc = defaultdict(float)
        self._orig = {}
        for name in ("all_gather_single", "all_gather_into_tensor", "all_reduce", "reduce_scatter_single",
                     "reduce_scatter_tensor"):
            orig = getattr(tdist, name, None)
            if orig is None:
                continue
            self._orig[name] = orig
            setattr(tdist, name, self._wrap(name, orig))

    def _wrap(self, name, orig):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = orig(*args, **kwargs)
            self.acc[f"{name}_s"] += time.perf_counter() - t0
            # gather: the output buffer (what lands here); reduce-scatter: the input being reduced; all_reduce: it.
            t = args[1] if name.startswith("reduce_scatter") else args[0]
            self.acc[f"{name}_bytes"] += t.numel() * t.element_size()
            self.acc[f"{name}_calls"] += 1
            return out
        return timed

    def take(self):
        out, self.acc = dict(self.acc), defaultdict(float)
        return out


def build_model(kind: str, embed_dim: int, hidden: int, kernels: str = "fast", threads: int = 1):
    import torch
    from torch import nn
    import torch.nn.functional as F

    if kind in ("auto", "paper"):
        try:
            from astrom3_hpc.core.config import ModelConfig
            from astrom3_hpc.core.constants import LC_CHANNELS, META_COLUMNS, SEQ_LEN, SPEC_CHANNELS, SPEC_LEN
            from astrom3_hpc.model import build_clip
        except ImportError:
            if kind == "paper":
                raise
        else:
            from astrom3_hpc.core.config import load_config
            from astrom3_hpc.train.engine import apply_execution

            model = build_clip(ModelConfig(preset="paper", embed_dim=embed_dim))
            # What a training job's rank does to its model (kernels, malloc tuning, threads): without it this
            # timed the stock kernels while training runs the fast ones by default.
            apply_execution(model, load_config(None, [f"train.kernels={kernels}", f"train.threads={threads}"]))

            def make_batch(b, g):
                return {"lc": torch.randn(b, SEQ_LEN, LC_CHANNELS, generator=g),
                        "lc_mask": torch.ones(b, SEQ_LEN),
                        "spec": torch.randn(b, SPEC_CHANNELS, SPEC_LEN, generator=g),
                        "meta": torch.randn(b, len(META_COLUMNS), generator=g)}

            return "paper", model, list(model.modalities), make_batch, model.logit_scales

    dims = {"photo": 200 * 9, "spectra": 3 * 2575, "meta": 34}

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))
                                      for m, d in dims.items()})
            self.log_scale = nn.Parameter(torch.full((3,), 4.6))

        def forward(self, batch):
            return {m: F.normalize(self.enc[m](batch[m]), dim=-1) for m in dims}

        def logit_scales(self):
            s = self.log_scale.exp().clamp(1, 100)
            return {("photo", "spectra"): s[0:1], ("photo", "meta"): s[1:2], ("spectra", "meta"): s[2:3]}

    model = StandIn()

    def make_batch(b, g):
        return {m: torch.randn(b, d, generator=g) for m, d in dims.items()}

    return "standin", model, list(dims), make_batch, model.logit_scales


def worker(args) -> int:
    import torch
    import torch.distributed as tdist

    from astrom3_hpc.distributed import env as denv
    from astrom3_hpc.train.loss import ContrastiveLoss

    torch.set_num_threads(args.threads)
    e = denv.init(backend="gloo", timeout=args.timeout)
    torch.manual_seed(0)
    kind, model, mods, make_batch, scales_fn = build_model(args.model, args.embed_dim, args.hidden, args.kernels,
                                                           args.threads)
    model.train()
    loss_fn = ContrastiveLoss(mods)
    g = torch.Generator().manual_seed(1 + e.rank)
    timer = _CollectiveTimer()
    rows = []
    for step in range(args.warmup + args.steps):
        batch = make_batch(args.batch, g)
        present = None
        if args.masked:
            present = {m: torch.rand(args.batch, generator=g) < 0.7 for m in mods}
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        emb = model(batch)
        t1 = time.perf_counter()
        denv.barrier()
        timer.take()
        t2 = time.perf_counter()
        total, _ = loss_fn(emb, scales_fn(), present)
        t3 = time.perf_counter()
        fwd_comm = timer.take()
        total.backward()
        t4 = time.perf_counter()
        bwd_comm = timer.take()
        ag = "all_gather_single" if hasattr(tdist, "all_gather_single") else "all_gather_into_tensor"
        rs = "reduce_scatter_single" if hasattr(tdist, "reduce_scatter_single") else "reduce_scatter_tensor"
        gather_fwd = fwd_comm.get(f"{ag}_s", 0.0)
        gather_bwd = bwd_comm.get("all_reduce_s", 0.0) + bwd_comm.get(f"{rs}_s", 0.0)
        if step >= args.warmup:
            rows.append({
                "enc_fwd": t1 - t0,
                "barrier": t2 - t1,
                "gather_fwd": gather_fwd,
                "gather_fwd_calls": fwd_comm.get(f"{ag}_calls", 0.0),
                "loss_fwd": (t3 - t2) - gather_fwd,
                "gather_bwd": gather_bwd,
                "bwd_compute": (t4 - t3) - gather_bwd,
                # Bytes landing in this rank's gathered output buffers (shape exchange + embeddings/masks).
                "gathered_bytes": fwd_comm.get(f"{ag}_bytes", 0.0),
                "bwd_comm_bytes": bwd_comm.get("all_reduce_bytes", 0.0) + bwd_comm.get(f"{rs}_bytes", 0.0),
                "step": t4 - t0,
            })
    gathered = [{"rank": 0, "rows": rows}]
    if e.world_size > 1:
        gathered = [None] * e.world_size
        tdist.all_gather_object(gathered, {"rank": e.rank, "rows": rows})
    if e.rank == 0:
        report(args, kind, mods, e.world_size, gathered, model)
    denv.cleanup()
    return 0


def report(args, kind, mods, world, gathered, model):
    keys = ["enc_fwd", "barrier", "gather_fwd", "loss_fwd", "gather_bwd", "bwd_compute", "step"]
    n = len(gathered[0]["rows"])
    # Per step, all phases of one rank (the one whose step took longest): a per-phase maximum over ranks would mix
    # ranks, and the shares would no longer add up to the step.
    slow_ranks = [max(gathered, key=lambda r: r["rows"][i]["step"])["rank"] for i in range(n)]
    by_rank = {r["rank"]: r["rows"] for r in gathered}
    slowest = {k: statistics.mean(by_rank[slow_ranks[i]][i][k] for i in range(n)) for k in keys}
    rows0 = gathered[0]["rows"]
    gathered_bytes = statistics.mean(r["gathered_bytes"] for r in rows0)
    bwd_bytes = statistics.mean(r["bwd_comm_bytes"] for r in rows0)
    calls = statistics.mean(r["gather_fwd_calls"] for r in rows0)
    model_bytes = len(mods) * world * args.batch * args.embed_dim * 4
    nparams = sum(p.numel() for p in model.parameters())
    kernels = f" (train.kernels={args.kernels})" if kind == "paper" else ""
    print(f"\nloss_gather: model={kind}{kernels} ({nparams / 1e6:.2f} M params), modalities={mods}, world={world}, "
          f"local batch={args.batch} (global {world * args.batch}), embed={args.embed_dim}, "
          f"masked={args.masked}, threads/rank={args.threads}, steps={args.steps} (+{args.warmup} warm-up)")
    print(f"{'phase':<34}{'ms/step (slowest rank)':>24}{'share':>8}")
    labels = {"enc_fwd": "encoders forward", "barrier": "barrier (waits for other ranks)",
              "gather_fwd": "gather forward (all_gather)",
              "loss_fwd": "loss forward (compute)", "gather_bwd": "gather backward (reduce-scatter)",
              "bwd_compute": "backward compute (loss+encoders)", "step": "step total"}
    for k in keys:
        print(f"{labels[k]:<34}{1e3 * slowest[k]:>24.2f}{100 * slowest[k] / slowest['step']:>7.1f}%")
    print(f"{'gather collectives / step':<34}{calls:>24.0f}  (1 shape exchange + 1 packed embedding gather)")
    print(f"{'bytes gathered / step / rank':<34}{gathered_bytes:>24,.0f}")
    print(f"{'cost model M*W*B*512*4':<34}{model_bytes:>24,.0f}  ({gathered_bytes / model_bytes:.3f}x)")
    print(f"{'backward reduced bytes / rank':<34}{bwd_bytes:>24,.0f}")
    print(f"{'logits per pair per direction':<34}{args.batch:>12} x {world * args.batch:<10}"
          f"  ({args.batch * world * args.batch * 4:,} bytes fp32)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "model": kind, "kernels": args.kernels if kind == "paper" else None, "world": world,
            "batch": args.batch, "modalities": mods, "masked": args.masked,
            "ms_slowest_rank": {k: 1e3 * v for k, v in slowest.items()}, "slowest_rank_per_step": slow_ranks,
            "gathered_bytes": gathered_bytes,
            "cost_model_bytes": model_bytes, "bwd_comm_bytes": bwd_bytes, "per_rank": gathered,
        }, indent=2))


# ------------------------------------------------------------------------------------------ launcher

def spawn(args, argv) -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(args.world):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "OMPI_"))}
        env.update(RANK=str(r), WORLD_SIZE=str(args.world), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(args.world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS=str(args.threads), DS_ACCELERATOR="cpu",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, __file__, *argv], env=env))
    deadline = time.monotonic() + args.timeout
    rc = 0
    for p in procs:
        try:
            rc = rc or p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            return 124
    return rc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from astrom3_hpc.distributed.env import detect
    if detect(use_mpi4py=False).world_size > 1 or args.world == 1:
        return worker(args)
    return spawn(args, argv)


if __name__ == "__main__":
    sys.exit(main())
