"""The suite's figures: matplotlib on the Agg backend (batch nodes have no display), text drawn as written, saved
atomically."""

from __future__ import annotations

from pathlib import Path

from .atomic import atomic_path


def pyplot():
    """matplotlib.pyplot, headless, with mathtext off: class names, run names and titles are users' strings, and a
    pair of `$` in one (a survey's `$\\alpha$ Cyg`) was parsed as math: drawn as another name, or a parse error that
    lost a finished fine-tune its metrics."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write `fig` as a PNG to `path` (temporary file, then rename) and free it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
