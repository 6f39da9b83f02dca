import math

import numpy as np

from ffhw import stats


def test_first_crossing_finds_a_planted_epoch_and_nan_when_never_reached():
    curve = np.array([[0.5, 0.6, 0.71, 0.8], [0.5, 0.5, 0.5, 0.69]])
    out = stats.first_crossing(curve, 0.7, epochs=np.array([1, 2, 3, 4]))
    assert out[0] == 3 and math.isnan(out[1])


def test_perfectly_correlated_series_give_r_1():
    x = np.linspace(0.5, 0.9, 50)
    c = stats.correlation(x, 2 * x + 1)
    assert c["pearson"] == 1.0 or abs(c["pearson"] - 1) < 1e-12
    assert abs(c["spearman"] - 1) < 1e-12
    assert abs(stats.correlation(x, -x)["pearson"] + 1) < 1e-12


def test_confidence_interval_covers_the_true_correlation():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        x = rng.normal(size=60)
        y = 0.5 * x + math.sqrt(1 - 0.25) * rng.normal(size=60)  # true r = 0.5
        lo, hi = stats.correlation(x, y)["pearson_ci"]
        covered += lo <= 0.5 <= hi
    assert 0.88 <= covered / 200 <= 0.99  # nominal 95%


def test_constant_series_has_no_correlation():
    c = stats.correlation(np.ones(10), np.arange(10))
    assert math.isnan(c["pearson"]) and math.isnan(c["spearman"])


def test_slope_bootstrap_recovers_a_planted_delay():
    rng = np.random.default_rng(1)
    layers = np.arange(8)
    y = 2.0 + 1.5 * layers + rng.normal(0, 0.3, size=(10, 8))  # 1.5 epochs later per layer, noisy seeds
    out = stats.slope_bootstrap(layers, y, samples=500)
    assert abs(out["slope"] - 1.5) < 0.1
    assert out["ci"][0] < 1.5 < out["ci"][1] and out["ci"][0] > 0 and out["p_positive"] == 1.0


def test_slope_ignores_layers_that_never_reached_the_level():
    y = np.array([[1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 3.0, np.nan]])
    assert abs(stats.slope_bootstrap(np.arange(4), y, samples=50)["slope"] - 1.0) < 1e-12
