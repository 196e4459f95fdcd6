"""Facts of the AstroM3 data set that every stage agrees on (spec sections 1 and 2)."""

from __future__ import annotations

import numpy as np

# Class order is the index order of labels in every store and model head.
CLASS_NAMES: tuple[str, ...] = ("EW", "SR", "EA", "RRAB", "EB", "ROT", "RRC", "HADS", "M", "DSCT")
# Counts over all splits in the published data set; the synthetic generator draws with these frequencies.
CLASS_COUNTS: dict[str, int] = {
    "EW": 6168, "SR": 4590, "EA": 2916, "RRAB": 2351, "EB": 1976,
    "ROT": 1839, "RRC": 796, "HADS": 281, "M": 268, "DSCT": 255,
}
N_CLASSES = len(CLASS_NAMES)
# The store's modalities, in the order of its per-object presence mask (`present`, one column each).
MODALITIES: tuple[str, ...] = ("photo", "spectra", "meta")

SPLIT_SEEDS: tuple[int, ...] = (42, 0, 66, 12, 123)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# Beside train/val/test: the objects without a class (label -1), in no split; runs classify them.
UNLABELLED = "unlabelled"
# Every valid object of a store, split or not: what `astrom3 predict` classifies.
ALL_OBJECTS = "all"
# Seed of the paper preset's evaluation-time attention-key sampler, re-seeded per batch wherever an embedding is
# computed (a run's own evaluation, evaluate-embeddings, embed, search): an object's vector is then its own.
SAMPLE_SEED = 0
SUBSET_FACTORS: dict[str, int] = {"full": 1, "sub50": 2, "sub25": 4, "sub10": 10}
# What a fine-tune classifies from: one modality, or all three fused.
MODES: tuple[str, ...] = ("photo", "spectra", "meta", "all")

# Metadata columns in the order the metadata encoder sees them.
META_COLUMNS: tuple[str, ...] = (
    "mean_vmag", "phot_g_mean_mag", "e_phot_g_mean_mag", "phot_bp_mean_mag",
    "e_phot_bp_mean_mag", "phot_rp_mean_mag", "e_phot_rp_mean_mag", "bp_rp", "parallax", "parallax_error",
    "parallax_over_error", "pmra", "pmra_error", "pmdec", "pmdec_error", "j_mag", "e_j_mag", "h_mag", "e_h_mag",
    "k_mag", "e_k_mag", "w1_mag", "e_w1_mag", "w2_mag", "e_w2_mag", "w3_mag", "w4_mag", "j_k", "w1_w2",
    "w3_w4", "pm", "ruwe", "l", "b",
)
# Apparent magnitudes that become absolute magnitudes before z-scoring.
ABS_MAG_COLUMNS: tuple[str, ...] = (
    "mean_vmag", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "j_mag", "h_mag", "k_mag",
    "w1_mag", "w2_mag", "w3_mag", "w4_mag",
)
# Photometric auxiliary features fed to the light-curve encoder. rfr_score is the ASAS-SN catalogue's own
# random-forest score (a likely label leak): the loader can zero it out.
AUX_COLUMNS: tuple[str, ...] = ("amplitude", "period", "lksl_statistic", "rfr_score")

# Light curves.
SEQ_LEN = 200
LC_CHANNELS = 9  # time, flux, flux_err + 4 aux + log10 MAD + delta_t

# Spectra: LAMOST LRS resampled onto a fixed linear grid.
SPEC_GRID_START = 3850.0
SPEC_GRID_STOP = 8998.0
SPEC_GRID_STEP = 2.0
SPEC_CHANNELS = 3


def spectrum_grid() -> np.ndarray:
    """The 2575-point wavelength grid 3850, 3852, ..., 8998 Angstrom."""
    n = int(round((SPEC_GRID_STOP - SPEC_GRID_START) / SPEC_GRID_STEP)) + 1
    return SPEC_GRID_START + SPEC_GRID_STEP * np.arange(n, dtype=np.float64)


SPEC_LEN = len(spectrum_grid())
