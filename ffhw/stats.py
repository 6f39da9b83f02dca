"""Statistics the study reports need, on plain numpy arrays (no training, no torch).

Inference is at the level of independent runs (seeds): a statistic is computed per seed, and its interval
comes from the spread across seeds (`t_interval`, `paired_t`, `welch_t`, `fisher_mean`); `verdict` applies
a rule declared in the study definition (confidence, minimum seeds, the paper's direction).

- `crossings`: when a curve first reaches a level, interpolated between measurements, with left-censored
  (at or above the level at the first measurement) and right-censored (never reached) curves marked, not
  dropped;
- `censored_concordance`: Kendall-type concordance of layer index and crossing time that counts a pair only
  where censoring still decides its order (Gehan's rule);
- `correlation`: pooled Pearson and Spearman r with Fisher-z intervals (points treated as independent:
  descriptive only); `partial_r` removes a shared progress trend first; `diff_r` correlates changes;
- `slope`: least squares over finite pairs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

Z95 = 1.959963984540054


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


def mean_std(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return (math.nan, math.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))


# ---------------------------------------------------------------------------------------------- seed level
VERDICTS = ("reproduced", "not reproduced", "contradicted", "not testable with this grid")


def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean of per-seed values with a t interval across seeds (n - 1 degrees of freedom)."""
    v = np.asarray([x for x in np.ravel(values) if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": math.nan, "ci": (math.nan, math.nan), "n": 0, "sd": math.nan}
    if n == 1:
        return {"mean": float(v[0]), "ci": (math.nan, math.nan), "n": 1, "sd": math.nan}
    sd = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": float(v.mean()), "ci": (float(v.mean() - half), float(v.mean() + half)), "n": n, "sd": sd}


def paired_t(a, b, confidence: float = 0.95) -> dict:
    """b - a for runs paired by seed (entries of a and b at the same position share a seed)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return t_interval(b - a, confidence)


def welch_t(a, b, confidence: float = 0.95) -> dict:
    """mean(b) - mean(a) for independent runs, Welch-Satterthwaite degrees of freedom."""
    a = np.asarray([x for x in np.ravel(a) if np.isfinite(x)], dtype=float)
    b = np.asarray([x for x in np.ravel(b) if np.isfinite(x)], dtype=float)
    n = min(len(a), len(b))
    diff = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return {"mean": diff, "ci": (math.nan, math.nan), "n": n, "sd": math.nan}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"mean": diff, "ci": (diff, diff), "n": n, "sd": 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return {"mean": diff, "ci": (diff - half, diff + half), "n": n, "sd": se}


def fisher_mean(rs, confidence: float = 0.95) -> dict:
    """Per-seed correlations combined: mean of atanh(r) with a t interval across seeds, back-transformed."""
    r = np.asarray([x for x in np.ravel(rs) if x is not None and np.isfinite(x)], dtype=float)
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    out = t_interval(z, confidence)
    lo, hi = out["ci"]
    return {"r": math.tanh(out["mean"]) if out["n"] else math.nan,
            "ci": (math.tanh(lo), math.tanh(hi)) if np.isfinite(lo) else (math.nan, math.nan), "n": out["n"]}


def verdict(estimate: dict, direction: str, rule: dict, reference: float = 0.0) -> str:
    """The declared rule applied to a seed-level estimate {"ci", "n"}: reproduced when the interval lies
    beyond `reference` in the paper's direction ("positive" or "negative"), contradicted when it lies
    beyond it the other way, not reproduced when it contains it; not testable with fewer than
    rule["min_seeds"] runs or no interval."""
    lo, hi = estimate.get("ci", (math.nan, math.nan))
    if estimate.get("n", 0) < int(rule.get("min_seeds", 2)) or not (np.isfinite(lo) and np.isfinite(hi)):
        return "not testable with this grid"
    above, below = lo > reference, hi < reference
    if direction not in ("positive", "negative"):
        raise ValueError(f"direction {direction!r} must be positive or negative")
    if (above and direction == "positive") or (below and direction == "negative"):
        return "reproduced"
    return "contradicted" if above or below else "not reproduced"


# ---------------------------------------------------------------------------------------------- crossings
LEFT, OBSERVED, RIGHT = "left", "observed", "right"


def crossings(times: np.ndarray, curves: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """When each curve (last axis, measured at `times`) first reaches `level`, linearly interpolated
    between the measurement below and the first at or above it. Returns (time, status): status "left"
    when the first measurement is already at the level (time = that first time, an upper bound),
    "right" when it is never reached (time = the last time, a lower bound), else "observed"."""
    t = np.asarray(times, dtype=float)
    c = np.asarray(curves, dtype=float)
    flat = c.reshape(-1, c.shape[-1])
    out_t, out_s = np.empty(len(flat)), np.empty(len(flat), dtype=object)
    for i, curve in enumerate(flat):
        reached = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= level)
        if not len(reached):
            out_t[i], out_s[i] = t[np.flatnonzero(np.isfinite(curve))[-1]] if np.isfinite(curve).any() else np.nan, RIGHT
            continue
        j = reached[0]
        if j == 0 or not np.isfinite(curve[j - 1]):
            out_t[i], out_s[i] = t[j], LEFT
            continue
        frac = (level - curve[j - 1]) / (curve[j] - curve[j - 1])
        out_t[i], out_s[i] = t[j - 1] + frac * (t[j] - t[j - 1]), OBSERVED
    return out_t.reshape(c.shape[:-1]), out_s.reshape(c.shape[:-1])


def censored_concordance(time: np.ndarray, status: np.ndarray) -> float:
    """Concordance of position (layer index) with crossing time, in [-1, 1]: over pairs i < j, +1 when j
    certainly crosses later, -1 when certainly earlier, 0 when censoring leaves the order open (Gehan);
    NaN when censoring leaves every pair open.
    An observed or left-censored time t means "at t" or "by t"; right-censored means "after t"."""
    time, status = np.asarray(time, dtype=float), np.asarray(status)
    n = len(time)
    if n < 2:
        return math.nan
    lo = np.where(status == LEFT, -np.inf, time)  # the crossing lies in [lo, hi]
    hi = np.where(status == RIGHT, np.inf, time)
    score = decided = 0
    for i in range(n):
        for j in range(i + 1, n):
            later, earlier = int(hi[i] < lo[j]), int(hi[j] < lo[i])
            score, decided = score + later - earlier, decided + later + earlier
    return score / (n * (n - 1) / 2) if decided else math.nan  # no decidable pair: no evidence either way


# ---------------------------------------------------------------------------------------------- progress
def progress_basis(epochs: np.ndarray) -> np.ndarray:
    """Training progress as regressors: 1, log(epoch), log(epoch)^2 (learning curves are smooth in it)."""
    u = np.log(np.asarray(epochs, dtype=float))
    return np.stack([np.ones_like(u), u, u * u], axis=1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def partial_r(x: np.ndarray, y: np.ndarray, epochs: np.ndarray) -> float:
    """Correlation of x and y after removing from each what training progress (progress_basis) explains:
    two curves that only share the shape of learning give about 0."""
    x, y, basis = np.asarray(x, dtype=float), np.asarray(y, dtype=float), progress_basis(epochs)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() <= basis.shape[1] + 2:
        return math.nan
    b = basis[keep]
    resid = [v[keep] - b @ np.linalg.lstsq(b, v[keep], rcond=None)[0] for v in (x, y)]
    return _pearson(*resid)


def diff_r(x: np.ndarray, y: np.ndarray) -> float:
    """Correlation of epoch-to-epoch changes of x and y."""
    return _pearson(np.diff(np.asarray(x, dtype=float)), np.diff(np.asarray(y, dtype=float)))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return _pearson(np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel())
