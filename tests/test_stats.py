import math

import numpy as np

from ffhw import stats


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


def test_t_interval_matches_the_t_distribution_and_covers_the_mean():
    from scipy import stats as sps
    values = [1.0, 2.0, 4.0]
    out = stats.t_interval(values)
    half = sps.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert abs(out["ci"][1] - out["mean"] - half) < 1e-12 and out["n"] == 3
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0.3 <= hi for lo, hi in (stats.t_interval(rng.normal(0.3, 1, 4))["ci"] for _ in range(400)))
    assert 0.91 <= covered / 400 <= 0.99  # nominal 95% with 4 runs


def test_paired_differences_remove_what_seeds_share():
    a, b = np.array([0.90, 0.80, 0.95]), np.array([0.91, 0.81, 0.96])  # b is a + 0.01 in every seed
    paired = stats.paired_t(a, b)
    assert abs(paired["mean"] - 0.01) < 1e-12 and paired["ci"][0] > 0
    assert stats.welch_t(a, b)["ci"][0] < 0  # unpaired, the seed-to-seed spread hides it


def test_verdict_follows_the_declared_rule():
    rule = {"min_seeds": 5}
    assert stats.verdict({"ci": (0.1, 0.3), "n": 5}, "positive", rule) == "reproduced"
    assert stats.verdict({"ci": (0.1, 0.3), "n": 5}, "negative", rule) == "contradicted"
    assert stats.verdict({"ci": (-0.1, 0.3), "n": 5}, "positive", rule) == "not reproduced"
    assert stats.verdict({"ci": (0.1, 0.3), "n": 3}, "positive", rule) == "not testable with this grid"
    assert stats.verdict({"ci": (0.85, 0.95), "n": 6}, "positive", rule, reference=0.8) == "reproduced"


def test_fisher_mean_combines_per_seed_correlations():
    out = stats.fisher_mean([0.9, 0.9, 0.9, 0.9])
    assert abs(out["r"] - 0.9) < 1e-9 and out["n"] == 4
    assert stats.fisher_mean([0.2, 0.9, 0.5])["ci"][0] < 0.2 < stats.fisher_mean([0.2, 0.9, 0.5])["ci"][1]


def test_crossings_interpolate_and_mark_censoring():
    t = np.array([0.0, 0.5, 1.0, 2.0])
    curves = np.array([[0.5, 0.6, 0.8, 0.9], [0.75, 0.8, 0.9, 0.9], [0.5, 0.5, 0.6, 0.65]])
    time, status = stats.crossings(t, curves, 0.7)
    assert abs(time[0] - 0.75) < 1e-12 and list(status) == ["observed", "left", "right"]
    assert time[1] == 0.0 and time[2] == 2.0  # the bounds: by the first measurement, after the last


def test_censored_concordance_counts_only_decided_pairs():
    time = np.array([1.0, 2.0, 3.0])
    assert stats.censored_concordance(time, np.array(["observed"] * 3)) == 1.0
    assert stats.censored_concordance(time[::-1], np.array(["observed"] * 3)) == -1.0
    # layer 2 never reached the level by 1.5 (right-censored at 1.5): later than layer 0 (1.0) for certain, but
    # not decidably later or earlier than layer 1 (2.0)
    out = stats.censored_concordance(np.array([1.0, 2.0, 1.5]), np.array(["observed", "observed", "right"]))
    assert abs(out - 2 / 3) < 1e-12
    assert math.isnan(stats.censored_concordance(np.array([1.0, 1.0]), np.array(["left", "left"])))


def test_partial_r_removes_a_shared_progress_trend():
    rng = np.random.default_rng(2)
    epochs = np.arange(1, 41, dtype=float)
    x = 0.2 * np.log(epochs) + rng.normal(0, 0.01, 40)
    y = 0.5 * np.log(epochs) + rng.normal(0, 0.01, 40)
    assert stats.pearson(x, y) > 0.95 and abs(stats.partial_r(x, y, epochs)) < 0.35
    shared = rng.normal(0, 0.05, 40)
    assert stats.partial_r(x + shared, y + shared, epochs) > 0.8
