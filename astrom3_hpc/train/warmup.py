"""Build DeepSpeed's JIT ops once (into TORCH_EXTENSIONS_DIR, inside the venv) so jobs and tests don't each
pay ~45 s for it. `python -m astrom3_hpc.train.warmup`; a second run returns in seconds."""

from __future__ import annotations

import os
import time


def main() -> None:
    from ..distributed.env import find_free_port
    from .engine import deepspeed_environment

    deepspeed_environment()  # the engine's op cache and accelerator

    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(find_free_port())})
    t0 = time.perf_counter()
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend="gloo")
    dist.destroy_process_group()
    print(f"[warmup] DeepSpeed ops ready in {os.environ['TORCH_EXTENSIONS_DIR']} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
