"""Sequence read-outs on made-up curves, the Hopfield sequence baselines on a tiny case
with a known answer, and the sequence storage mechanisms on small grids."""
import math

import pytest
import torch

import metrics
from models.hopfield import ModernSequenceHopfield, SequenceHopfield, successors

NAN = float("nan")


def bumps(centres, T=50, width=3.0, heights=None):
    """(T, 1, P) made-up curves: a Gaussian bump per item at the given record."""
    t = torch.arange(T, dtype=torch.float64)[:, None]
    c = torch.tensor(centres, dtype=torch.float64)[None, :]
    h = torch.ones_like(c) if heights is None else torch.tensor(heights, dtype=torch.float64)
    return (h * torch.exp(-((t - c) / width) ** 2)).unsqueeze(1)


# ----------------------------------------------------------------- read-outs, made up

def test_known_order_is_recovered():
    curves = torch.cat([bumps([5, 20, 35]), bumps([35, 20, 5]), bumps([20, 5, 35])], dim=1)
    out = metrics.sequence_readout(curves, steps=torch.arange(50) * 10, hold_threshold=0.5)
    assert out["peak_time"].tolist() == [[50, 200, 350], [350, 200, 50], [200, 50, 350]]
    assert out["order"] == [[0, 1, 2], [2, 1, 0], [1, 0, 2]]
    assert out["exact_order"].tolist() == [True, False, False]
    assert out["kendall_tau"].tolist() == pytest.approx([1.0, -1.0, 1 / 3])
    assert torch.allclose(out["peak_height"], torch.ones(3, 3, dtype=torch.float64))
    # exp(-(d/3)^2) >= 0.5 for |d| <= 2.49: records c-2..c+2, 5 records of 10 steps
    assert torch.all(out["hold_time"] == 50)


def test_ties_are_not_an_order():
    curves = bumps([10, 10, 30])
    times = metrics.peak_times(curves)
    assert times.tolist() == [[10, 10, 30]]
    assert not metrics.exact_order(times).item()
    # tau-b with one tied pair of times: 2 concordant pairs, 1 tie in y
    assert metrics.kendall_tau(times).item() == pytest.approx(2 / math.sqrt(3 * 2))
    assert metrics.recovered_order(times) == [[0, 1, 2]]     # ties keep item order


def test_an_item_that_never_peaks():
    curves = bumps([5, 20, 35], heights=[0.9, 0.2, 0.8])
    out = metrics.sequence_readout(curves, min_peak=0.6, hold_threshold=0.6)
    assert math.isnan(out["peak_time"][0, 1])
    assert out["order"] == [[0, 2]]
    assert not out["exact_order"].item()
    assert out["hold_time"][0, 1].item() == 0
    # the missing item is ranked last: times (5, 36, 35) against positions (0, 1, 2)
    assert out["kendall_tau"].item() == pytest.approx(1 / 3)
    none = metrics.peak_times(bumps([5, 20], heights=[0.1, 0.1]), min_peak=0.5)
    assert metrics.kendall_tau(none).item() == 0.0           # nothing peaks: chance


def test_intended_order_and_skip():
    curves = bumps([35, 5, 20])                              # replays item 1, 2, 0
    times = metrics.peak_times(curves)
    assert metrics.exact_order(times, order=[1, 2, 0]).item()
    assert metrics.kendall_tau(times, order=[1, 2, 0]).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="permutation"):
        metrics.exact_order(times, order=[0, 0, 1])
    # a cue that starts high: skipping the first records finds the grown peak instead
    c = bumps([30, 15])
    c[0, 0, 0] = 2.0
    assert metrics.peak_times(c)[0, 0].item() == 0
    assert metrics.peak_times(c, skip=1)[0, 0].item() == 30


def test_hold_time_is_the_longest_run():
    c = torch.tensor([0.7, 0.7, 0.1, 0.7, 0.7, 0.7, 0.2], dtype=torch.float64).view(7, 1, 1)
    assert metrics.hold_times(c, 0.6, record_every=10).item() == 30


def test_similarity_curves_shapes_and_values():
    pats = torch.zeros(2, 4, 4)
    pats[0, :2], pats[1, 2:] = 0.8, 0.8
    frames = torch.stack([pats, pats.flip(0), pats.sum(0, keepdim=True).expand(2, 4, 4)])
    c = metrics.similarity_curves(frames, pats)
    assert c.shape == (3, 2, 2)
    assert c[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert c[1].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert c[2] == pytest.approx(torch.full((2, 2), 1 / math.sqrt(2)))
    per_member = metrics.similarity_curves(frames, pats.unsqueeze(0).expand(2, 2, 4, 4), "iou")
    assert per_member[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="patterns"):
        metrics.similarity_curves(frames, torch.zeros(2, 5, 5))


# ----------------------------------------------------------------- Hopfield sequences

def random_bipolar(S, k, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(S, k, N, generator=g) > 0.5, 1.0, -1.0)


def visited(net, patterns, steps):
    traj = net.replay(patterns[:, :1], steps)                # cue: item 1 of each seed
    return net.overlaps(traj)[:, :, 0].argmax(-1).T          # (S, steps + 1) item indices


def test_successors():
    assert successors(3).tolist() == [1, 2, 2]
    assert successors(3, cyclic=True).tolist() == [1, 2, 0]


def test_asymmetric_hopfield_visits_2_then_3():
    P = random_bipolar(8, 3, 64)
    net = SequenceHopfield(P)
    traj = net.replay(P[:, :1], 3)
    assert torch.equal(traj[1], P[:, 1:2]) and torch.equal(traj[2], P[:, 2:3])
    assert torch.equal(traj[3], P[:, 2:3])                   # not cyclic: stays at the end
    cyc = visited(SequenceHopfield(P, cyclic=True), P, 6)
    assert torch.all(cyc == torch.tensor([0, 1, 2, 0, 1, 2, 0]))


def test_delayed_hopfield_holds_each_item():
    P = random_bipolar(8, 3, 256, seed=1)    # at N = 64 crosstalk flips one seed's handover
    seen = visited(SequenceHopfield(P, delay=4, lam=2.0), P, 14)
    assert torch.all(seen == torch.tensor([0] * 4 + [1] * 4 + [2] * 7))
    with pytest.raises(ValueError, match="lam"):
        SequenceHopfield(P, delay=2, lam=0.5)


def test_modern_sequence_hopfield_visits_2_then_3():
    P = random_bipolar(8, 3, 64, seed=2)
    net = ModernSequenceHopfield(P, beta=1.0)
    traj = net.replay(P[:, :1], 2)
    assert torch.allclose(traj[1], P[:, 1:2], atol=1e-6)
    assert torch.allclose(traj[2], P[:, 2:3], atol=1e-6)
    # shared patterns and a state without a seed dim keep the shape (T, B, N)
    shared = ModernSequenceHopfield(P[0], beta=1.0)
    assert shared.replay(P[0, :1], 2).shape == (3, 1, 64)


def test_centred_rule_replays_sparse_images():
    g = torch.Generator().manual_seed(3)
    P = torch.where(torch.rand(4, 5, 400, generator=g) > 0.9, 1.0, -1.0)  # 10% foreground
    assert torch.all(visited(SequenceHopfield(P, centred=True), P, 4)
                     == torch.arange(5))
    assert torch.all(visited(ModernSequenceHopfield(P, beta=0.2, centred=True), P, 4)
                     == torch.arange(5))


def test_bad_input():
    with pytest.raises(ValueError, match="bipolar"):
        SequenceHopfield(torch.rand(3, 8))
    with pytest.raises(ValueError, match="shape"):
        SequenceHopfield(torch.ones(1, 8))
    with pytest.raises(ValueError, match="beta"):
        ModernSequenceHopfield(torch.ones(3, 8), beta=0)
    with pytest.raises(ValueError, match="state"):
        SequenceHopfield(random_bipolar(2, 3, 8)).replay(torch.ones(3, 1, 8), 1)
