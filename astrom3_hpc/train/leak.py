"""What a pretrained model was trained on, read from its weights, and whether a store is that same store."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PretrainLeakError(ValueError):
    """Fine-tuning would evaluate on objects the pretrained model saw."""

    same_on_every_rank = True


def pretrained_provenance(init_dir: Path, config: dict, meta: dict) -> tuple[int, dict[str, Any]]:
    """(split seed, store identity) of a pretraining run. The weights' metadata wins; a config.yaml that says
    otherwise means the directory mixes two runs, which is refused (the weights are what would leak)."""
    cseed = config["data"]["seed"]
    wseed = meta.get("seed", cseed)
    if wseed != cseed:
        raise PretrainLeakError(f"pretraining run {init_dir}: its weights were trained with split seed {wseed}, "
                                f"its config.yaml says {cseed}: the directory mixes two runs; pretrain again "
                                f"into a new directory")
    ident = meta.get("store_identity")
    if ident is None:  # weights written before store identities: what config.yaml and the store say
        from ..data.store import Store
        from .fingerprint import store_identity

        path = Path(meta.get("store") or config["data"]["store"])
        ident = store_identity(Store(path, check_chunks=False)) if path.exists() else {"path": str(path)}
    return wseed, ident


def same_store(pre: dict[str, Any], store) -> str | None:
    """None when `store` holds what the pretraining store held, else why not (compared by content)."""
    from .fingerprint import same_source, store_identity

    now = store_identity(store)
    if "n_objects" not in pre:
        return f"the pretraining store {pre.get('path')} no longer exists, so its content cannot be compared"
    if pre["n_objects"] != now["n_objects"]:
        return f"{pre['n_objects']} objects at pretraining, {now['n_objects']} now"
    if not same_source(pre.get("source"), now.get("source")):
        return "built from different sources"
    if pre.get("fingerprint") and now.get("fingerprint") and pre["fingerprint"] != now["fingerprint"]:
        return f"content fingerprint {pre['fingerprint'][:12]} at pretraining, {now['fingerprint'][:12]} now"
    return None


def check_weights_store(weights: Path, store) -> None:
    """Refuse to score weights on a store other than the one they were trained on (compared by content, as
    fine-tuning does): embedding_eval.json would hold another store's numbers under the run's name. Weights
    without a store identity (imported ones) are taken as they are."""
    from .checkpoint import load_weights

    pre = load_weights(weights).get("meta", {}).get("store_identity")
    why = same_store(pre, store) if pre is not None else None
    if why:
        raise ValueError(f"{weights} was trained on another store than {store.path} ({why}): pass the store it was "
                         f"trained on (--store, or data.store in the run's config.yaml)")


def scored_seed(run_dir: Path, recorded: int, pretrain_seed: int | None, allow_unknown_seed: bool) -> int | None:
    """The split whose test objects a pretraining run's embeddings are scored on: the run's own seed, or for
    imported weights (their seed unknown) the one the caller names; None where the caller accepts not knowing
    (then the recorded placeholder is scored). As for fine-tuning from them (finetune.check_pretrained): a wrong
    guess scores objects the weights were pretrained on."""
    from .import_weights import import_record

    imported = import_record(run_dir)
    known = recorded if imported is None else imported.get("split_seed")
    if pretrain_seed is not None and known is not None and pretrain_seed != known:
        raise PretrainLeakError(f"--pretrain-seed {pretrain_seed} contradicts {run_dir}, which was pretrained on "
                                f"split seed {known}")
    if pretrain_seed is not None or known is not None:
        return known if pretrain_seed is None else pretrain_seed
    if not allow_unknown_seed:
        raise PretrainLeakError(
            f"{run_dir} holds imported weights ({imported.get('source_file')}) whose split seed is unknown: their "
            f"test split cannot be told from the objects they were pretrained on. Pass --pretrain-seed S (the seed "
            f"the weights were pretrained on) or --allow-unknown-seed to accept the risk.")
    return None
