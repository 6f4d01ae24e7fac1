import math

import numpy as np
import pytest
import torch

from metrics import (
    bootstrap_interval,
    clopper_pearson_interval,
    cosine_similarity,
    discrimination_index,
    iou,
    pearson,
    summarize,
    summarize_tensor,
    wilson_interval,
)


def test_cosine_by_hand_and_scale_invariance():
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    V = torch.stack([t, 0.1 * t, torch.tensor([[1.0, 1.0], [0.0, 0.0]])])
    assert cosine_similarity(V, t).tolist() == pytest.approx([1.0, 1.0, 1 / math.sqrt(2)])


def test_cosine_zero_when_nearly_empty():
    t = torch.ones(4, 4) * 0.8
    V = torch.full((1, 4, 4), 0.0005)      # sums to 0.008 < 0.01
    assert cosine_similarity(V, t).item() == 0.0
    assert cosine_similarity(torch.ones(1, 4, 4), torch.full((4, 4), 0.0005)).item() == 0.0
    assert cosine_similarity(torch.full((1, 4, 4), 0.001), t).item() == pytest.approx(1.0)


def test_iou_is_scale_aware():
    t = torch.zeros(4, 4)
    t[:2] = 0.8
    assert iou(t.unsqueeze(0), t).item() == 1.0
    assert iou((0.2 * t).unsqueeze(0), t).item() == 0.0   # faint copy below threshold
    half = torch.zeros(4, 4)
    half[0] = 0.8
    assert iou(half, t).item() == pytest.approx(0.5)
    assert iou(torch.zeros(4, 4), torch.zeros(4, 4)).item() == 0.0


def test_pearson():
    t = torch.arange(16.0).view(4, 4)
    assert pearson(2 * t + 3, t).item() == pytest.approx(1.0)
    assert pearson(-t, t).item() == pytest.approx(-1.0)
    assert pearson(torch.ones(4, 4), t).item() == 0.0


def test_batched_per_member_targets():
    t = torch.rand(3, 5, 5)
    assert cosine_similarity(t, t).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="shape"):
        cosine_similarity(torch.rand(3, 5, 5), torch.rand(2, 5, 5))


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
    none = summarize([0] * 10, kind="rate")
    assert none["method"] == "wilson" and none["mean"] == 0.0
    assert (none["ci95_low"], none["ci95_high"]) == pytest.approx((0.0, 0.2775), abs=5e-5)
    every = summarize(torch.ones(10), kind="rate")
    assert every["ci95_high"] == 1.0 and every["ci95_low"] == pytest.approx(0.7225, abs=5e-5)
    assert summarize([1], kind="rate")["ci95_low"] is not None   # defined even for n = 1
    with pytest.raises(ValueError, match="0/1 outcomes"):
        summarize([0.5, 1.0], kind="rate")
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_bootstrap_is_seeded_and_fits_two_valued_data():
    vals = [0.0] * 7 + [0.166]          # no-cue recall: seven seeds at 0, one at 0.166
    assert summarize(vals)["ci95_low"] < 0   # the t interval leaves [0, 1]
    a = summarize(vals, kind="bootstrap")
    assert a == summarize(vals, kind="bootstrap")                 # same seed, same interval
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
    assert s["method"] == "t, clipped to bounds"
    inside = summarize([0.4, 0.5, 0.6], bounds=(0, 1))
    assert inside["method"] == "t" and inside["ci95_low"] == summarize([0.4, 0.5, 0.6])["ci95_low"]
    nested = summarize_tensor(torch.tensor([[0.0, 0.99], [0.1, 1.0], [0.0, 1.0]]), bounds=(0, 1))
    assert all(0.0 <= d["ci95_low"] <= d["ci95_high"] <= 1.0 for d in nested)
    with pytest.raises(ValueError, match="bounds"):
        summarize([2.0, 3.0], bounds=(0, 1))
    with pytest.raises(ValueError, match="kind"):
        summarize([0.1, 0.2], kind="median")
    diverged = summarize([0.5, float("nan"), 0.4], bounds=(0, 1))
    assert diverged["ci95_low"] is None and diverged["method"].startswith("undefined")


def test_discrimination_index():
    assert discrimination_index(torch.eye(3)) == pytest.approx(1.0)
    assert discrimination_index(torch.full((3, 3), 0.7)) == pytest.approx(0.0)   # imprint
    m = [[0.9, 0.5], [0.3, 0.7]]
    assert discrimination_index(m) == pytest.approx(((0.9 - 0.5) + (0.7 - 0.3)) / 2)
    with pytest.raises(ValueError):
        discrimination_index([[1.0, 0.0]])


def test_cosine_reads_non_contiguous_views_and_per_member_targets():
    g = torch.Generator().manual_seed(3)
    P = torch.rand(3, 10, 12, generator=g, dtype=torch.float64)
    view = P[:, 1:-1, 1:-1]                      # a padded buffer's interior
    target = torch.rand(8, 10, generator=g, dtype=torch.float64)
    a = cosine_similarity(view, target)
    b = cosine_similarity(view.contiguous(), target.expand(3, -1, -1).contiguous())
    v, t = view.reshape(3, -1), target.reshape(1, -1)
    by_hand = (v * t).sum(1) / (v.norm(dim=1) * t.norm(dim=1))
    assert torch.allclose(a, by_hand, atol=1e-12) and torch.allclose(b, by_hand, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        cosine_similarity(view, torch.rand(9, 10))
