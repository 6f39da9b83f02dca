"""Statistics the study reports need, on plain numpy arrays (no training, no torch).

- `first_crossing`: the first epoch at which a curve reaches a level (NaN when it never does);
- `correlation`: Pearson and Spearman r with 95% confidence intervals (Fisher z; Spearman with the
  Fieller-Hartley-Pearson variance 1.06 / (n - 3));
- `slope_bootstrap`: least-squares slope of y against x, with a bootstrap over seeds (rows), so the
  uncertainty reflects how much the answer changes with the networks that happened to be trained.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

Z95 = 1.959963984540054


def first_crossing(curve: np.ndarray, level: float, epochs: np.ndarray | None = None) -> np.ndarray:
    """Epoch at which each curve first reaches `level`; curves along the last axis. NaN where never reached."""
    curve = np.asarray(curve, dtype=float)
    epochs = np.arange(1, curve.shape[-1] + 1) if epochs is None else np.asarray(epochs, dtype=float)
    reached = curve >= level
    first = reached.argmax(-1)
    out = epochs[first].astype(float)
    return np.where(reached.any(-1), out, np.nan)


def _fisher_ci(r: float, n: int, variance: float) -> tuple[float, float]:
    if n <= 3 or not np.isfinite(r):
        return (math.nan, math.nan)
    if abs(r) >= 1.0:
        return (r, r)
    z, half = math.atanh(r), Z95 * math.sqrt(variance / (n - 3))
    return (math.tanh(z - half), math.tanh(z + half))


def correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson and Spearman correlation of paired samples, with 95% confidence intervals."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant series has no defined correlation
        return {"n": n, "pearson": math.nan, "pearson_ci": (math.nan, math.nan),
                "spearman": math.nan, "spearman_ci": (math.nan, math.nan)}
    pearson = float(np.corrcoef(x, y)[0, 1])
    spearman = float(sps.spearmanr(x, y).statistic)
    return {"n": n, "pearson": pearson, "pearson_ci": _fisher_ci(pearson, n, 1.0),
            "spearman": spearman, "spearman_ci": _fisher_ci(spearman, n, 1.06)}


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x over the finite pairs (NaN with fewer than two distinct x)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def slope_bootstrap(x: np.ndarray, y_per_seed: np.ndarray, reduce=np.nanmean, samples: int = 2000,
                    seed: int = 0) -> dict:
    """Slope of reduce(y over seeds) against x, and its bootstrap over seeds.

    y_per_seed: [seeds, len(x)]. Each bootstrap sample redraws the seeds with replacement, reduces them
    per x and fits the slope again. Returns the point estimate, the 95% percentile interval and the
    fraction of samples with a positive slope."""
    y = np.asarray(y_per_seed, dtype=float)
    x = np.asarray(x, dtype=float)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a layer no seed trained to the level
            point = slope(x, reduce(y, axis=0))
            rng = np.random.default_rng(seed)
            draws = rng.integers(0, len(y), size=(samples, len(y)))
            boot = np.array([slope(x, reduce(y[d], axis=0)) for d in draws])
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return {"slope": point, "ci": (math.nan, math.nan), "p_positive": math.nan, "samples": 0}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"slope": point, "ci": (float(lo), float(hi)), "p_positive": float((boot > 0).mean()),
            "samples": int(len(boot))}


def mean_std(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return (math.nan, math.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
