"""Turn a reference AstroM3 checkpoint (a state_dict saved by the authors' code) into a pretraining run dir.

The result has the layout a finished `astrom3 pretrain` leaves, so `finetune --init`, `embed`,
`evaluate-embeddings` and the science tools take it as they are:

    config.yaml      resolved RunConfig; model shapes inferred from the state_dict (model.keymap.infer_config)
    best_model.pt    the weights under project keys (checkpoint.save_weights format), meta.kind "pretrain"
    run.json         kind "pretrain", imported: true
    imported.json    source file, its sha256 and format, split_seed: null, what was assumed (heads)
    checkpoints/     empty (nothing to resume)

A checkpoint file does not say on which split's train set it was pretrained, so the split seed is recorded as
unknown, and fine-tuning from the run demands an explicit acknowledgement (see finetune.check_pretrained).
config.yaml's data.seed is the default only because the config type requires a valid seed; imported.json
overrides it. The directory is built under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.atomic import atomic_dir, write_json
from ..core.config import RunConfig, dump_config
from ..core.digests import file_sha256
from ..model.clip import AstroM3CLIP
from ..model.keymap import KeyMapError, from_reference, infer_config
from .checkpoint import BEST_MODEL, save_weights

IMPORT_RECORD = "imported.json"
DEFAULT_HEADS = 4  # the paper's; attention heads leave no trace in any weight shape


def _strip_wrapper(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers of the authors' training loop
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, format) of a `.safetensors` file or a torch file (loaded with weights_only=True).

    A torch file may hold the state_dict itself or a dict with it under "state_dict" / "model_state_dict".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _strip_wrapper(dict(load_file(str(path)))), "safetensors"
        except SafetensorError as e:
            raise KeyMapError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors of every kind: one clear message
        raise KeyMapError(f"{path}: not a torch checkpoint loadable with weights_only=True "
                          f"({type(e).__name__}: {e})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeyMapError(f"{path}: holds no state_dict (a mapping of parameter names to tensors)")
    return _strip_wrapper(dict(obj)), "torch"


def import_weights(file: str | Path, out: str | Path, *, n_heads: int = DEFAULT_HEADS,
                   store: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Validate `file` against the model its shapes describe and write the run dir `out`; returns the record.

    Raises KeyMapError naming the file and the key when the shapes do not fit; nothing is written then.
    """
    file = Path(file).resolve()
    out = Path(out)
    where = str(file)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out} already exists: pass --overwrite to replace an imported run there")
        if not (out / IMPORT_RECORD).is_file():
            # The swap deletes what is there: a folder of runs named by mistake went whole.
            raise ValueError(f"--out {out} exists and is not an imported run (no {IMPORT_RECORD}): --overwrite "
                             f"replaces only one; give another --out")
    sd, fmt = read_checkpoint(file)
    model_cfg = infer_config(sd, n_heads=n_heads, where=where)
    cfg = RunConfig(name=f"imported-{file.stem}")
    cfg.model = model_cfg
    if store is not None:
        cfg.data.store = str(Path(store).resolve())
    cfg.validate()
    model = AstroM3CLIP(model_cfg)
    model.load_state_dict(from_reference(sd, model.state_dict(), where=where), strict=True)
    record = {
        "source_file": str(file), "sha256": file_sha256(file), "format": fmt,
        "split_seed": None,  # unknown: the file does not say which split's train set it saw
        "n_heads": n_heads, "n_heads_assumed": n_heads == DEFAULT_HEADS,
        "parameters": sum(p.numel() for p in model.parameters()),
        "imported": time.strftime("%Y-%m-%dT%H:%M:%S"), "astrom3_hpc_version": __version__,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the run from a shared project's group
        (tmp / "checkpoints").mkdir()
        dump_config(cfg, tmp / "config.yaml")
        save_weights(model, tmp / BEST_MODEL, {"kind": "pretrain", "epoch": None, "val": None, "seed": None,
                                               "store": None, "imported_from": str(file)})
        write_json(tmp / "run.json", {"kind": "pretrain", "imported": True, "world_size": 1,
                                      "started": record["imported"]})
        write_json(tmp / IMPORT_RECORD, record)
    return record


def import_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The import record of a run dir made by import_weights, else None."""
    import json

    p = Path(run_dir) / IMPORT_RECORD
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
