"""Science tools on the embeddings of a pretrained AstroM3 model (spec section 5). See docs/science.md.

    astrom3 embed RUN_DIR       embeddings of every valid object -> RUN_DIR/science/embeddings.zarr
    astrom3 search RUN_DIR      top-k cosine neighbours within and across modalities; retrieval recall@k
    astrom3 outliers RUN_DIR    class-centroid distances (mislabel candidates) and k-NN anomaly scores
    astrom3 umap RUN_DIR        2-D UMAP of the averaged embeddings, coloured by class
    astrom3 subtypes RUN_DIR    k=2 clustering of one class against its hidden sub-types (ARI)

Every output goes below the run's `science/` directory unless `--out-dir` says otherwise, written atomically.
Optional dependencies (scikit-learn, umap-learn, faiss-cpu) come with the `science` extra; code that needs one
calls `require(...)`, which names the extra when the import fails.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "science"
_PIP_NAMES = {"sklearn": "scikit-learn", "umap": "umap-learn", "faiss": "faiss-cpu"}


class MissingExtraError(ImportError):
    """An optional dependency of a science tool is not installed; the message names the extra."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingExtraError naming the pip package and the `science` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pip_name = _PIP_NAMES.get(module.split(".")[0], module)
        raise MissingExtraError(
            f"{purpose} needs the optional package '{pip_name}' (import {module!r} failed: {e}); install the "
            f"science extra: pip install 'astrom3-hpc[{EXTRA}]' (or: pip install {pip_name})") from e


def has_module(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
