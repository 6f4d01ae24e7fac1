"""Sequence read-outs on made-up curves, the Hopfield sequence baselines on a tiny case
with a known answer, and the sequence storage mechanisms on small grids."""
import math

import numpy as np

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


# ----------------------------------------------------------------- parts and wholes

def test_strokes_are_disjoint_and_wholes_connected():
    from scipy import ndimage

    import patterns
    parts = patterns.part_images(list(patterns.STROKES), 64, 64)
    assert ((parts > 0).sum(0) <= 1).all()                   # no cell in two strokes
    for name, strokes in patterns.STROKE_WHOLES.items():
        whole = patterns.whole_image(strokes, 64, 64)
        assert whole.max() == patterns.PEAK
        assert ndimage.label(whole.numpy() > 0)[1] == 1, name


def test_scene_parts_sit_at_their_places_apart():
    from scipy import ndimage

    import patterns
    whole = patterns.whole_image(["disc@0", "square@1", "diamond@2", "disc@3"], 64, 64, "scenes")
    assert ndimage.label(whole.numpy() > 0)[1] == 4              # four separate shapes
    disc = patterns.part_images(["disc@0"], 64, 64, "scenes")[0] > 0
    ys, xs = disc.nonzero(as_tuple=True)
    assert abs(xs.float().mean() - 16) < 1 and abs(ys.float().mean() - 16) < 1
    with pytest.raises(ValueError, match="place"):
        patterns.part_images(["disc@7"], 64, 64, "scenes")
    with pytest.raises(ValueError, match="stroke"):
        patterns.part_images(["nose"], 64, 64)


# ----------------------------------------------------------------- sequence mechanisms

from models import sequences as sq  # noqa: E402
import scarring  # noqa: E402
from protocol import Protocol  # noqa: E402


def two_discs(H=24, W=40, r=4):
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    a = (x - 8) ** 2 + (y - 12) ** 2 < r * r
    b = (x - 30) ** 2 + (y - 12) ** 2 < r * r
    return torch.stack([a, b])


def test_channel_joins_source_to_target_without_covering_them():
    from scipy import ndimage

    m = two_discs()
    for fan in (1, 3):
        ch = sq.channel(m[0], m[1], width_cells=2, fan=fan)
        assert ch.any() and not (ch & (m[0] | m[1])).any()
        joined = ndimage.label((ch | m[0] | m[1]).numpy(), structure=np.ones((3, 3)))[1]
        assert joined == 1                                   # one connected piece
    assert sq.chain_channels(m).shape == (1, 24, 40)
    pts = sq.spread_points(m[1], 3)
    assert len(pts) == 3 and all(m[1][int(r), int(c)] for r, c in pts)


def test_layout_fields_paint_items_over_channels():
    m = two_discs()
    ch = sq.chain_channels(m)
    F, K = sq.layout_fields(m, [(0.08, 0.057), (0.08, 0.04)], ch, [(0.07, 0.045)])
    assert torch.all(K[m[1]] == 0.04) and torch.all(K[m[0]] == 0.057)
    assert torch.all(K[ch[0]] == 0.045) and torch.all(F[ch[0]] == 0.07)
    assert K[0, 20] == pytest.approx(sq.K0) and F[0, 20] == pytest.approx(sq.F0)
    both = torch.stack([m[0], m[0]])                              # a shared cell: later wins
    assert torch.all(sq.layout_fields(both, [(0.08, 0.05), (0.08, 0.03)])[1][m[0]] == 0.03)


def test_depth_setpoints_and_death_schedule():
    sp = sq.depth_setpoints(4, k_second=0.045, spacing=0.01)
    assert [k for _, k in sp] == pytest.approx([sq.K_HOLD, 0.045, 0.035, 0.025])
    with pytest.raises(ValueError, match="K < 0"):
        sq.depth_setpoints(9, spacing=0.01)
    s = sq.death_schedule([0.057, 0.045], fill=100, hold=50, margin=0.002)
    assert s.at(0) == (0.0, 0.0) and s.at(100) == (0.0, 0.0)
    assert s.at(150)[1] == pytest.approx(sq.K_DIE - 0.057 + 0.002)
    assert s.at(200)[1] == pytest.approx(sq.K_DIE - 0.045 + 0.002)
    assert s.at(175)[1] == pytest.approx((s.at(150)[1] + s.at(200)[1]) / 2)
    assert s.at(10_000) == s.at(200)
    with pytest.raises(ValueError, match="rise"):
        sq.death_schedule([0.04, 0.05], 10, 10)
    with pytest.raises(ValueError, match="increase"):
        sq.Schedule(steps=(0, 0), dF=(0, 0), dK=(0, 0))


def test_lit_disc_invades_holds_or_dies_as_documented():
    # the module's thresholds at F = 0.08: K = 0.03 invades, K_HOLD holds, K_DIE dies
    H = W = 28
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    disc = (((x - 14) ** 2 + (y - 14) ** 2) < 36).float()
    Ks = torch.tensor([0.03, sq.K_HOLD, sq.K_DIE + 0.002]).view(3, 1, 1).expand(3, H, W)
    r = sq.replay(torch.full((3, H, W), 0.08), Ks, (0.5 * disc).expand(3, 1, H, W), disc[None],
                  steps=400, record_every=400, frame_every=400)
    lit = (r["frames"][:, :, 0] > 0.2).flatten(2).sum(2)            # (2, 3): start, end
    area = int((disc > 0).sum())
    assert lit[1, 0] > 2 * area                                      # invades
    assert 0.6 * area < lit[1, 1] < 1.4 * area                       # holds
    assert lit[1, 2] == 0                                            # dies


def test_replay_shapes_schedule_and_controls():
    m = two_discs()
    items = m.float() * 0.8
    F, K = sq.layout_fields(m, [(0.08, 0.03), (0.08, 0.03)])
    cues = torch.stack([0.5 * items[0], torch.zeros(24, 40)]).expand(2, 2, 24, 40)
    r = sq.replay(F, K, cues, items, steps=60, record_every=20, frame_every=20)
    assert r["curves"].shape == (4, 2, 2, 2) and r["steps"].tolist() == [0, 20, 40, 60]
    assert r["frames"].shape == (4, 2, 2, 24, 40)
    assert torch.all(r["curves"][:, :, 1] == 0)                      # nothing from nothing
    assert r["curves"][-1, 0, 0, 0] > 0.7                            # the cued disc lit,
    assert r["curves"][-1, 0, 0, 1] < 0.05                           # the other one not
    kill = sq.Schedule(steps=(0,), dF=(0.0,), dK=(0.05,))            # everything at K >= 0.08
    dead = sq.replay(F, K, cues, items, steps=200, record_every=20, schedule=kill)
    assert torch.all(dead["curves"][-1] == 0)
    with pytest.raises(ValueError, match="multiple"):
        sq.replay(F, K, cues, items, steps=60, record_every=20, frame_every=30)


def test_store_sequence_scars_each_item_at_its_depth():
    items = two_discs(r=6).float() * 0.8
    sp = [(0.08, 0.057), (0.08, 0.04)]
    study = scarring.Study(Protocol(), "cpu")
    out = sq.store_sequence(study, items, seeds=[0, 1], setpoints=sp, steps=40)
    K = out["K"]
    assert K.shape == (2, 24, 40) and out["train_similarity"].shape == (2, 2)
    assert torch.all(K >= 0.04 - 1e-7)                              # no cell below the deepest
    core = two_discs(r=3)
    assert torch.all(K[:, core[1]] < K[:, core[0]].amin())         # item 2 deeper than item 1
    with pytest.raises(ValueError, match="rising"):
        sq.store_sequence(study, items, [0], [(0.08, 0.04), (0.08, 0.05)], steps=2)


def test_sequence_loss_and_learned_fields_smoke():
    targets = sq.window_targets(6, 3)
    assert targets.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    perfect = targets.unsqueeze(1)
    assert sq.sequence_loss(perfect, targets).item() == 0.0
    assert sq.sequence_loss(1 - perfect, targets).item() == pytest.approx(2.0)
    items = two_discs(16, 16, 3).float() * 0.8
    F, K, hist = sq.learn_fields(items, lambda it: 0.5 * items[:1], steps=20, record_every=10,
                                 iters=2, lr=0.1)
    assert len(hist) == 2 and all(math.isfinite(h) for h in hist)
    assert F.shape == (16, 16) and 0.01 <= F.min() and F.max() <= 0.08 and K.min() >= 0
