"""AstroM3 (trimodal CLIP for variable stars) as an HPC batch job suite.

Data flow: raw files -> ingest -> Zarr store -> loader -> encoders -> loss -> engine
-> checkpoints and metrics -> collector.
"""

__version__ = "0.1.0"
