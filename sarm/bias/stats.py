"""Small statistics the bias audit shares: correlations, slopes, intervals, quantiles."""

from __future__ import annotations

import math

import numpy as np

CI_LEVEL = 0.95
SPREAD_LEVEL = 0.90
_Z95 = 1.959963984540054


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or there are < 3 values."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def fisher_interval(r: float, n: int) -> list[float] | None:
    """95% interval of a Pearson correlation from Fisher's z (None when undefined)."""
    if not math.isfinite(r) or n < 4:
        return None
    z, half = math.atanh(min(max(r, -0.999999), 0.999999)), _Z95 / math.sqrt(n - 3)
    return [math.tanh(z - half), math.tanh(z + half)]


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` (with intercept); NaN when ``x`` is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    var = x.var()
    return (
        math.nan
        if len(x) < 2 or var == 0
        else float(((x - x.mean()) * (y - y.mean())).mean() / var)
    )


def cluster_bootstrap(
    x: np.ndarray, y: np.ndarray, units: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> dict[str, list[float] | None]:
    """95% percentile intervals of ``corr`` and ``slope`` of ``y`` on ``x``, resampling units.

    Units (e.g. prompts) are drawn with replacement, ``rng.integers(0, U, U)`` per
    resample from ``default_rng(seed)``; a drawn unit brings all its rows, so a
    resample is the rows weighted by how often their unit was drawn.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _, inverse = np.unique(units, return_inverse=True)
    n_units = int(inverse.max()) + 1 if len(inverse) else 0
    if n_units < 3:
        return {"corr": None, "slope": None}
    rng = np.random.default_rng(seed)
    corr, slopes = [], []
    for start in range(0, n_resamples, 100):
        size = min(100, n_resamples - start)
        draws = rng.integers(0, n_units, size=(size, n_units))
        counts = np.stack([np.bincount(d, minlength=n_units) for d in draws])
        w = counts[:, inverse].astype(np.float64)
        c, s = _weighted_corr_slope(x, y, w)
        corr.append(c)
        slopes.append(s)
    return {
        "corr": _percentile_interval(np.concatenate(corr)),
        "slope": _percentile_interval(np.concatenate(slopes)),
    }


def _weighted_corr_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted correlation and slope of ``y`` on ``x``, one per row of weights ``w``."""
    total = w.sum(axis=1)
    mx, my = (w @ x) / total, (w @ y) / total
    vx = (w @ (x * x)) / total - mx * mx
    vy = (w @ (y * y)) / total - my * my
    cov = (w @ (x * y)) / total - mx * my
    with np.errstate(divide="ignore", invalid="ignore"):
        return cov / np.sqrt(vx * vy), cov / vx


def _percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def spread(values: np.ndarray, level: float = SPREAD_LEVEL) -> list[float] | None:
    """The central ``level`` range of ``values`` (5th and 95th percentiles at 0.90)."""
    return _percentile_interval(np.asarray(values, np.float64), level)


def median_interval(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> list[float] | None:
    """95% percentile-bootstrap interval of the median of ``values``."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(n_resamples, len(values)))
    return _percentile_interval(np.median(values[draws], axis=1))
