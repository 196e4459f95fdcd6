"""Data: raw sources (synthetic generator, survey file readers) -> preprocessing -> Zarr store -> loader."""
