"""The one statistics block (stats.py): intervals against scipy and published tables,
the closed list of methods, and the block's keys."""
import numpy as np
import pytest
import torch

from stats import (
    METHODS,
    bootstrap_interval,
    clopper_pearson_interval,
    format_stat,
    rate,
    summarize,
    summarize_tensor,
    wilson_interval,
)


@pytest.mark.slow
def test_summarize_matches_scipy():
    from scipy import stats

    vals = [0.1, 0.4, 0.35, 0.2, 0.3]
    s = summarize(vals)
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=sum(vals) / 5, scale=stats.sem(vals))
    assert s["ci95_low"] == pytest.approx(lo) and s["ci95_high"] == pytest.approx(hi)
    assert s["n"] == 5 and s["per_seed"] == vals and s["method"] == "t"
    assert set(s) == {"mean", "std", "ci95_low", "ci95_high", "n", "per_seed", "method"}
    one = summarize([0.5])
    assert one["mean"] == 0.5 and one["ci95_low"] is None


# (successes, n): Wilson and Clopper-Pearson 95% limits to 4 decimals. 0/10, 10/10 and
# 5/10: the standard tables; the other four: Newcombe (1998), Stat. Med. 17, Table I.
PUBLISHED_INTERVALS = {
    (0, 10): ((0.0, 0.2775), (0.0, 0.3085)),
    (10, 10): ((0.7225, 1.0), (0.6915, 1.0)),
    (5, 10): ((0.2366, 0.7634), (0.1871, 0.8129)),
    (81, 263): ((0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148): ((0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20): ((0.0, 0.1611), (0.0, 0.1684)),
    (1, 29): ((0.0061, 0.1718), (0.0009, 0.1776)),
}


@pytest.mark.parametrize("count", PUBLISHED_INTERVALS)
def test_rate_intervals_match_published_tables(count):
    wilson, exact = PUBLISHED_INTERVALS[count]
    assert wilson_interval(*count) == pytest.approx(wilson, abs=5e-5)
    assert clopper_pearson_interval(*count) == pytest.approx(exact, abs=5e-5)


def test_rate_summary_is_wilson_and_stays_in_unit_interval():
    none = summarize([0] * 10, method="wilson")
    assert none["method"] == "wilson" and none["mean"] == 0.0
    assert (none["ci95_low"], none["ci95_high"]) == pytest.approx((0.0, 0.2775), abs=5e-5)
    every = summarize(torch.ones(10), method="wilson")
    assert every["ci95_high"] == 1.0 and every["ci95_low"] == pytest.approx(0.7225, abs=5e-5)
    assert summarize([1], method="wilson")["ci95_low"] is not None   # defined even for n = 1
    with pytest.raises(ValueError, match="0/1 outcomes"):
        summarize([0.5, 2.0], method="wilson")
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_bootstrap_is_seeded_and_fits_two_valued_data():
    vals = [0.0] * 7 + [0.166]          # no-cue recall: seven seeds at 0, one at 0.166
    assert summarize(vals)["ci95_low"] < 0   # the t interval leaves [0, 1]
    a = summarize(vals, method="bootstrap_bca")
    assert a == summarize(vals, method="bootstrap_bca")                 # same seed, same interval
    assert a["method"].startswith("bootstrap")
    assert 0.0 <= a["ci95_low"] <= a["mean"] <= a["ci95_high"] <= 0.166
    b = bootstrap_interval(vals, seed=1, method="percentile")
    assert b == bootstrap_interval(vals, seed=1, method="percentile")
    assert 0.0 <= b[0] <= b[1] <= 0.166
    assert bootstrap_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    med = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 100.0], stat=np.median)
    assert 1.0 <= med[0] <= 3.0 <= med[1] <= 100.0


def test_bounded_mean_interval_stays_in_bounds():
    vals = [0.955, 0.892, 1.0]             # an accuracy near 1 over 3 seeds
    t = summarize(vals)
    assert t["ci95_high"] > 1.0             # what the plain t interval says
    s = summarize(vals, bounds=(0, 1))
    assert s["ci95_high"] == 1.0 and s["ci95_low"] == pytest.approx(t["ci95_low"])
    assert s["method"] == "t_clipped"
    inside = summarize([0.4, 0.5, 0.6], bounds=(0, 1))
    assert inside["method"] == "t" and inside["ci95_low"] == summarize([0.4, 0.5, 0.6])["ci95_low"]
    nested = summarize_tensor(torch.tensor([[0.0, 0.99], [0.1, 1.0], [0.0, 1.0]]), bounds=(0, 1))
    assert all(0.0 <= d["ci95_low"] <= d["ci95_high"] <= 1.0 for d in nested)
    with pytest.raises(ValueError, match="bounds"):
        summarize([2.0, 3.0], bounds=(0, 1))
    with pytest.raises(ValueError, match="method"):
        summarize([0.1, 0.2], method="median")
    diverged = summarize([0.5, float("nan"), 0.4], bounds=(0, 1))
    assert diverged["ci95_low"] is None and diverged["method"] == "none"


def test_every_block_names_a_method_from_the_closed_list():
    blocks = [summarize([0.1, 0.2, 0.4]), summarize([0.1, 0.2, 0.9], bounds=(0, 0.5)),
              summarize([0.0] * 7 + [0.3], method="bootstrap_bca"),
              summarize([0.0] * 7 + [0.3], method="bootstrap_percentile"),
              rate([1, 0, 1]), rate([1, 0, 1], "clopper_pearson"), summarize([2.0, 2.0]),
              summarize([0.3])]
    assert [b["method"] for b in blocks] == list(METHODS)
    for b in blocks:
        assert {"mean", "std", "ci95_low", "ci95_high", "n", "per_seed", "method"} <= set(b)


def test_identical_seeds_are_exact_and_rates_count_successes():
    same = summarize([203.5, 203.5, 203.5])
    assert same["method"] == "exact" and same["ci95_low"] == same["ci95_high"] == 203.5
    assert same["std"] == 0.0 and same["n"] == 3
    r = rate([1, 1, 0, 0], "clopper_pearson")
    assert r["k"] == 2 and r["mean"] == 0.5
    assert (r["ci95_low"], r["ci95_high"]) == clopper_pearson_interval(2, 4)
    assert format_stat(r) == f"0.500 [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"
    assert format_stat(summarize([0.25])) == "0.250" and format_stat(None) == "nan"


def test_clopper_pearson_rate():
    none, half, every = (rate(x, "clopper_pearson") for x in ([0] * 8, [1, 0] * 4, [True] * 8))
    # exact limits: 1 - 0.025^(1/8) = 0.3694; beta quantiles for 4/8 = 0.1570, 0.8430
    assert (none["k"], none["ci95_low"], none["ci95_high"]) == (0, 0.0, pytest.approx(0.3694, abs=1e-4))
    assert half["mean"] == 0.5 and half["ci95_low"] == pytest.approx(0.1570, abs=1e-4)
    assert half["ci95_high"] == pytest.approx(0.8430, abs=1e-4)
    assert every["ci95_low"] == pytest.approx(0.6306, abs=1e-4) and every["ci95_high"] == 1.0
    assert half["method"] == "clopper_pearson" and half["per_seed"] == [1, 0] * 4


def test_wilson_rate_of_unit_shares_matches_scipy():
    from scipy.stats import binomtest

    for k, n in ((5, 10), (0, 10), (37, 50), (100, 100)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    shares = rate([0.5] * 10)       # each unit right in half of the seeds
    assert (shares["ci95_low"], shares["ci95_high"]) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    every = rate([1.0, 1.0, 1.0])
    assert every["mean"] == 1.0 and every["ci95_high"] == 1.0 and every["n"] == 3
    with pytest.raises(ValueError, match="0/1"):
        rate([0.5, 1.0], "clopper_pearson")


def test_bca_bootstrap_stays_inside_the_values():
    taus = [1.0] * 6 + [1 / 3, -1 / 3]
    s = summarize(taus, "bootstrap_bca")
    assert min(taus) <= s["ci95_low"] <= s["mean"] <= s["ci95_high"] <= 1.0
    assert summarize(taus, "bootstrap_bca") == s                 # seeded: the same interval
    same = summarize([0.5] * 8, "bootstrap_bca")
    assert same["ci95_low"] == same["ci95_high"] == 0.5 and same["method"] == "exact"
    assert summarize([0.2], "bootstrap_bca")["ci95_low"] is None


def test_bounds_clip_the_interval_and_refuse_a_mean_outside():
    s = summarize([1.0, 1.0, 0.9, 1.0], bounds=(0.0, 1.0))
    assert s["ci95_high"] == 1.0 and s["method"] == "t_clipped"
    with pytest.raises(ValueError, match="bounds"):
        summarize([1710.0, 1709.0], bounds=(0.0, 1700.0))
    rounded = summarize([1.0000000596, 1.0], bounds=(0.0, 1.0))    # float32 cosine of 1
    assert rounded["mean"] == pytest.approx(1.0) and rounded["ci95_high"] == 1.0
