"""A light-curve encoder that sees periodicity (the `periodic` preset; `paper` stays the reference's Informer).

The paper's encoder gets time as an index and the period as one z-scored number repeated on every step: a 0.3-day
pulsation over a multi-year span is invisible to it. This encoder recovers each point's time in days (the store
keeps time scaled to [0, 1] over the span, and the span in years as input channel 8) and the period in days (batch
key `lc_period`: the catalogue's or the Lomb-Scargle one, see docs/lightcurves.md), and builds up to four views,
chosen by `model.periodic_views` (the preset's: time, phase, fold_full):

- "time":  continuous-time features: sin/cos(2 pi t / tau) for log-spaced tau from 0.05 to 500 days, as extra
           token channels (the positions stay the Informer's indices);
- "phase": sin/cos of the phase at P and at 2P as extra token channels, so attention can relate points by phase
           (eclipsing and ellipsoidal variables show two minima per orbit: their Lomb-Scargle peak is at P/2);
- "fold":  the window folded at P and at 2P, binned into FOLD_BINS phase bins (masked means and occupancy), rolled
           so the brightest bin comes first (data/lc_folds.py), encoded by a small convolutional net: a second view
           beside the tokens;
- "fold_full": the same fold of every point of the light curve (batch key `lc_fold`, computed once per store),
           through its own convolutional net: the window holds 200 of a ZTF curve's ~500 points.

Tokens go through the Informer (masked, mean-pooled, standard head layout); `model.periodic_tokens: false` leaves
the Informer out (and with it time and phase), an order of magnitude faster to train. The output is the pooled
tokens, the fold features (each fold view's), a projection of the per-object channels 3-8 (amplitude, period, ...,
span) with the Lomb-Scargle search (batch key `lc_period_search`: the second peak tells aliases apart) and, with
`model.periodic_features`, an MLP of the classical baseline's feature vector (batch key `lc_features`: the same 35
features, data/lc_features.py, quantile-normalised by the loader), concatenated. With them the network has at least
the information the baseline classifies from.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtri
from torch import nn

from ..core.constants import LC_CHANNELS, SEQ_LEN
from ..data.lc_features import CLIP, FEATURE_NAMES
from ..data.lc_folds import FOLD_BINS, FULL_FOLD_BINS, fold_at_period_and_double, phase, usable_period
from ..data.preprocess import DAYS_PER_YEAR  # the span unit lc/stats was written with
from .informer import InformerEncoder

VIEWS = ("time", "phase", "fold", "fold_full")
FEATURE_EMBEDDINGS = ("linear", "periodic", "piecewise")
TIME_SCALES_DAYS = tuple(0.05 * 10 ** (k * 4 / 7) for k in range(8))  # 0.05 .. 500 days
_SPAN_CH = 8  # lc channel: time span in years (raw, from lc/stats)
_OBJECT_CH = slice(3, 9)  # per-object channels: 4 z-scored aux features, log10 MAD, span


class PeriodicEncoder(nn.Module):
    """forward(lc (B, L, 9), lc_mask (B, L), lc_period (B,) days, lc_period_search (B, 4): log10 best period, its
    power, log10 second period, its power; zeros when the store has no search[, lc_features (B, n_features)]
    [, lc_fold (B, 4, FULL_FOLD_BINS)]) -> (B, out_features): the optional inputs as optional_keys() names them."""

    def __init__(self, *, views: tuple[str, ...] = VIEWS, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 d_ff: int = 128, factor: int = 1, dropout: float = 0.1, deterministic_eval: bool = True,
                 n_features: int = 0, feature_embedding: str = "linear", fold_period: bool = False,
                 tokens: bool = True):
        super().__init__()
        bad = set(views) - set(VIEWS)
        if bad:
            raise ValueError(f"unknown periodic views {sorted(bad)}; choose from {VIEWS}")
        if not tokens and {"time", "phase"} & set(views):
            raise ValueError("the periodic views time and phase are channels of the Informer's tokens; "
                             "without tokens choose from fold, fold_full")
        self.views = tuple(views)
        extra = (2 * len(TIME_SCALES_DAYS) if "time" in views else 0) + (4 if "phase" in views else 0)
        self.register_buffer("scales", torch.tensor(TIME_SCALES_DAYS, dtype=torch.float32), persistent=False)
        self.tokens = InformerEncoder(c_in=LC_CHANNELS + extra, seq_len=SEQ_LEN, d_model=d_model, n_layers=n_layers,
                                      n_heads=n_heads, d_ff=d_ff, factor=factor, dropout=dropout,
                                      deterministic_eval=deterministic_eval, padding_mask=True, pooling="mean",
                                      head_layout="standard") if tokens else None
        self.object = nn.Sequential(nn.Linear(6 + 4, d_model), nn.GELU())
        out = (2 if tokens else 1) * d_model
        self.n_features = n_features
        if n_features:
            if feature_embedding not in FEATURE_EMBEDDINGS:
                raise ValueError(f"unknown feature embedding {feature_embedding!r}; choose from {FEATURE_EMBEDDINGS}")
            first: list[nn.Module] = [nn.Linear(n_features, d_model)]
            if feature_embedding == "periodic":
                first = [PeriodicFeatureEmbedding(n_features), nn.Linear(n_features * PeriodicFeatureEmbedding.D,
                                                                          d_model)]
            elif feature_embedding == "piecewise":
                first = [PiecewiseLinearEncoding(), nn.Linear(n_features * PiecewiseLinearEncoding.BINS, d_model)]
            self.features = nn.Sequential(*first, nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(d_model, d_model), nn.GELU())
            out += d_model
        self.fold_period = fold_period
        fold_channels = 5 if fold_period else 4
        if "fold" in views:
            self.fold = _fold_net(d_model, dropout, FOLD_BINS, fold_channels)
            out += d_model
        if "fold_full" in views:
            self.fold_full = _fold_net(d_model, dropout, FULL_FOLD_BINS, fold_channels)
            out += d_model
        self.out_features = out
        self.optional_keys = optional_keys(self.views, bool(n_features))

    def forward(self, lc: torch.Tensor, lc_mask: torch.Tensor, lc_period: torch.Tensor,
                lc_period_search: torch.Tensor, *optional: torch.Tensor) -> torch.Tensor:
        # The model passes batch values positionally in input_keys() order; the optional ones depend on the
        # config, so they are named here from the same function.
        if len(optional) != len(self.optional_keys):
            raise ValueError(f"the periodic encoder reads {self.optional_keys} after lc_period_search, got "
                             f"{len(optional)} more inputs")
        extra = dict(zip(self.optional_keys, optional))
        lc_features, lc_fold = extra.get("lc_features"), extra.get("lc_fold")
        dtype = self.object[0].weight.dtype
        lc = lc.to(dtype)
        w = lc_mask.to(dtype)
        t_days = lc[:, :, 0] * lc[:, :, _SPAN_CH] * DAYS_PER_YEAR
        period = usable_period(lc_period.to(dtype))
        chans = [lc]
        if "time" in self.views:
            arg = 2 * math.pi * t_days[:, :, None] / self.scales.to(dtype)
            chans += [torch.sin(arg), torch.cos(arg)]
        if "phase" in self.views:
            a1, a2 = 2 * math.pi * phase(t_days, period), 2 * math.pi * phase(t_days, 2 * period)
            chans.append(torch.stack([a1.sin(), a1.cos(), a2.sin(), a2.cos()], dim=-1))
        objects = torch.cat([lc[:, 0, _OBJECT_CH], lc_period_search.to(dtype)], dim=-1)
        feats = [self.object(objects)]
        if self.tokens is not None:
            feats.insert(0, self.tokens(torch.cat(chans, dim=-1) * w[:, :, None], lc_mask))
        if self.n_features:
            if lc_features.shape[-1] != self.n_features:
                raise ValueError(f"the periodic encoder was built for {self.n_features} per-object features "
                                 f"(batch key lc_features), got shape {tuple(lc_features.shape)}")
            feats.append(self.features(lc_features.to(dtype)))
        if "fold" in self.views:
            feats.append(self.fold(self._with_period(fold_at_period_and_double(t_days, lc[:, :, 1], w, period),
                                                     period)))
        if "fold_full" in self.views:
            # finite: the loader zero-fills objects without one; folded at the same (store) period as lc_period
            feats.append(self.fold_full(self._with_period(lc_fold.to(dtype), period)))
        return torch.cat(feats, dim=-1)

    def _with_period(self, folds: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
        """(B, 4, bins) -> (B, 5, bins) with log10(period / day) on every bin, when fold_period is on."""
        if not self.fold_period:
            return folds
        lp = torch.log10(period).to(folds.dtype)[:, None, None].expand(-1, 1, folds.shape[-1])
        return torch.cat([folds, lp], dim=1)


class PeriodicFeatureEmbedding(nn.Module):
    """Per-feature embedding of standardised scalars: sin/cos of K learned frequencies, then a per-feature linear
    map to D values and a ReLU (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
    Learning", PLR). A plain linear first layer can only cut each feature once per unit; trees split features
    at many thresholds, which is where they beat MLPs on small tabular sets. (B, F) -> (B, F * D)."""

    K, D, SIGMA = 8, 8, 0.5

    def __init__(self, n_features: int):
        super().__init__()
        self.freq = nn.Parameter(torch.randn(n_features, self.K) * self.SIGMA)
        self.weight = nn.Parameter(torch.randn(n_features, 2 * self.K, self.D) / math.sqrt(2 * self.K))
        self.bias = nn.Parameter(torch.zeros(n_features, self.D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 2 * math.pi * x[:, :, None] * self.freq
        e = torch.cat([v.sin(), v.cos()], dim=-1)
        return torch.relu(torch.einsum("bfk,fkd->bfd", e, self.weight) + self.bias).flatten(1)


class PiecewiseLinearEncoding(nn.Module):
    """Each feature as BINS values: how far it has climbed through each of BINS equal-count slices of its train
    distribution, 0 below the slice, 1 above, linear inside (the PLE of Gorishniy et al. 2022, with quantile bins).
    The loader already maps every feature through its train quantiles onto a standard normal
    (data/lc_features.standardise), so the slices' edges are the standard normal's quantiles: fixed, no fitting.
    Like a tree's splits, the next layer can weigh each slice of a feature on its own. (B, F) -> (B, F * BINS)."""

    BINS = 8

    def __init__(self):
        super().__init__()
        inner = ndtri(np.arange(1, self.BINS) / self.BINS)
        edges = torch.tensor(np.concatenate([[-CLIP], inner, [CLIP]]), dtype=torch.float32)
        self.register_buffer("lower", edges[:-1].clone(), persistent=False)
        self.register_buffer("width", edges.diff(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x[:, :, None] - self.lower.to(x.dtype)) / self.width.to(x.dtype)).clamp(0, 1).flatten(1)


def optional_keys(views, features: bool) -> tuple[str, ...]:
    """Batch keys the encoder reads after lc_period_search, in order."""
    return (("lc_features",) if features else ()) + (("lc_fold",) if "fold_full" in views else ())


def _fold_net(d_model: int, dropout: float, bins: int, channels: int = 4) -> nn.Sequential:
    """Two circular convolutions over (B, channels, bins) folds (phase has no edges), then a projection."""
    c = 32
    return nn.Sequential(
        nn.Conv1d(channels, c, 5, padding=2, padding_mode="circular"), nn.GELU(),
        nn.Conv1d(c, c, 5, padding=2, padding_mode="circular"), nn.GELU(),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * bins, d_model), nn.GELU())


def build_periodic(cfg) -> PeriodicEncoder:
    return PeriodicEncoder(views=tuple(cfg.periodic_views), d_model=cfg.d_model, n_layers=cfg.n_layers,
                           n_heads=cfg.n_heads, d_ff=cfg.d_ff, factor=cfg.prob_factor, dropout=cfg.lc_dropout,
                           deterministic_eval=bool(cfg.deterministic_eval),
                           n_features=len(FEATURE_NAMES) if cfg.periodic_features else 0,
                           feature_embedding=cfg.periodic_feature_embedding,
                           fold_period=cfg.periodic_fold_period, tokens=cfg.periodic_tokens)
