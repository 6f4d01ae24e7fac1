"""Storage rules of models/rules.py on small hand-made grids, and the associative
read-outs of metrics.py on made-up arrays. Seconds each."""
import math

import pytest
import torch

import scarring
from metrics import (
    associative_capacity,
    completion,
    largest_similarity,
    masked_cosine,
    rejection,
    selectivity,
    state_change,
)
import scarring as rules
from patterns import (
    arc_part,
    component_part,
    masked_cue,
    overlap_fraction,
    sweep_part,
    uniform_cue,
)


def _grid():
    """A 1-member 4 x 5 grid: target on the left two columns; V lit on columns 1-2."""
    target = torch.zeros(4, 5)
    target[:, :2] = 0.8
    V = torch.zeros(1, 4, 5)
    V[0, :, 1:3] = 0.6
    F = torch.full((1, 4, 5), rules.DEAD_F)
    K = torch.full((1, 4, 5), rules.DEAD_K)
    return V, target, F, K


def test_rules_are_registered_and_make_rule_finds_them():
    for name, cls in (("graded", rules.GradedScar), ("channel", rules.ChannelScar),
                      ("surround", rules.SurroundScar)):
        rule = scarring.make_rule(name, rate=0.2)
        assert isinstance(rule, cls) and rule.rate == 0.2 and hash(rule) == hash(cls(rate=0.2))


def test_channel_moves_only_matched_cells_by_rate_toward_the_channel_regime():
    V, target, F, K = _grid()
    rule = rules.ChannelScar(rate=0.25)
    F2, K2 = rule.update(V, target, F, K, torch.tensor([0.9]))
    matched = torch.zeros(1, 4, 5, dtype=torch.bool)
    matched[0, :, 1] = True                       # target and V both on: column 1 only
    assert torch.allclose(F2[matched], torch.tensor(rules.DEAD_F + 0.25 * (rules.CHANNEL_F - rules.DEAD_F)))
    assert torch.allclose(K2[matched], torch.tensor(rules.DEAD_K + 0.25 * (rules.CHANNEL_K - rules.DEAD_K)))
    assert torch.equal(F2[~matched], F[~matched]) and torch.equal(K2[~matched], K[~matched])
    assert torch.equal(F, torch.full((1, 4, 5), rules.DEAD_F))    # pure: input untouched


def test_soft_bound_never_passes_the_regime_and_no_clamp_is_needed():
    V, target, F, K = _grid()
    rule = rules.ChannelScar(rate=1.0)
    for _ in range(3):
        F, K = rule.update(V, target, F, K, torch.tensor([0.9]))
    assert torch.allclose(F[0, :, 1], torch.tensor(rules.CHANNEL_F))   # reached, not passed
    assert F.max() <= rules.CHANNEL_F + 1e-9 and K.min() >= rules.CHANNEL_K - 1e-9


def test_gate_and_untrained_members_leave_fields_unchanged():
    V, target, F, K = _grid()
    V, F, K = V.expand(3, 4, 5), F.expand(3, 4, 5), K.expand(3, 4, 5)
    rule = rules.ChannelScar(gate=0.5)
    F2, K2 = rule.update(V, target, F, K, torch.tensor([0.4, -1.0, 0.6]))
    assert torch.equal(F2[:2], F[:2]) and torch.equal(K2[:2], K[:2])
    assert not torch.equal(F2[2], F[2])


def test_graded_scar_is_proportional_to_the_running_match():
    V, target, F, K = _grid()
    V[0, :, 0] = 0.1                              # weakly shown on column 0, strongly on 1
    rule = rules.GradedScar(rate=0.5, v_scale=0.5)
    F = torch.full_like(F, 0.037)
    F2, _ = rule.update(V, target, F, K, torch.tensor([0.9]))
    step0 = (F2[0, 0, 0] - 0.037) / (0.08 - 0.037)
    step1 = (F2[0, 0, 1] - 0.037) / (0.08 - 0.037)
    assert math.isclose(step0, 0.5 * 0.1 / 0.5, rel_tol=1e-5)
    assert math.isclose(step1, 0.5 * 1.0, rel_tol=1e-5)   # V/v_scale = 1.2 is clamped to 1
    assert torch.equal(F2[0, :, 2:], F[0, :, 2:])


def test_relax_pulls_stray_activity_back_to_the_background():
    V, target, F, K = _grid()
    F = torch.full_like(F, 0.05)
    rule = rules.ChannelScar(rate=0.0, relax=0.5)
    F2, _ = rule.update(V, target, F, K, torch.tensor([0.9]))
    assert torch.allclose(F2[0, :, 2], torch.tensor(0.05 + 0.5 * (rules.DEAD_F - 0.05)))
    assert torch.equal(F2[0, :, 3:], F[0, :, 3:]) and torch.equal(F2[0, :, :2], F[0, :, :2])


def test_surround_scars_a_moat_of_the_given_width_around_the_target():
    target = torch.zeros(9, 9)
    target[4, 4] = 0.8
    V = torch.zeros(1, 9, 9)
    F = torch.full((1, 9, 9), rules.CHANNEL_F)
    K = torch.full((1, 9, 9), rules.CHANNEL_K)
    rule = rules.SurroundScar(rate=1.0, moat=2)
    F2, K2 = rule.update(V, target, F, K, torch.tensor([0.9]))
    moat = torch.zeros(9, 9, dtype=torch.bool)
    moat[2:7, 2:7] = True
    moat[4, 4] = False
    assert torch.allclose(K2[0][moat], torch.tensor(rule.K_moat))
    assert torch.allclose(F2[0][moat], torch.tensor(rule.F_moat))
    assert torch.equal(K2[0][~moat], K[0][~moat])   # the centre (V dark: no match) and beyond
    assert rule.background() == (rules.DEAD_F, rules.DEAD_K)


def test_rules_fuse_into_a_training_run_and_keep_fields_finite():
    from tests.training_run import train
    target = torch.zeros(16, 16)
    target[4:12, 4:12] = 0.8
    sim, _, _ = train((0.5 * target).expand(2, 16, 16), target, 20, rules.SurroundScar(moat=1),
                      every=10, F=rules.DEAD_F, K=rules.DEAD_K, compile=False)
    F = sim.fields["F"]
    assert torch.isfinite(F).all() and (F[:, 6:10, 6:10] > rules.DEAD_F).all()


def test_bad_constants_are_refused():
    with pytest.raises(ValueError, match="rate"):
        rules.ChannelScar(rate=1.5)
    with pytest.raises(ValueError, match="moat"):
        rules.SurroundScar(moat=0)


# ---- read-outs on made-up arrays -------------------------------------------------------

def test_completion_is_one_for_full_regrowth_and_zero_for_a_dark_missing_part():
    target = torch.zeros(4, 4)
    target[:, :2] = 0.8
    cue_mask = torch.zeros(4, 4, dtype=torch.bool)
    cue_mask[:2, :2] = True
    full = target.clone()
    half = target * cue_mask
    assert completion(full[None], full[None], target, cue_mask).item() == pytest.approx(1.0)
    assert completion(half[None], full[None], target, cue_mask).item() == 0.0
    assert math.isnan(completion(half[None], half[None], target, cue_mask).item())
    # the cued cells do not count: a recall that lights only the missing part completes
    assert completion((target - half)[None], full[None], target, cue_mask).item() == pytest.approx(1.0)


def test_masked_cosine_ignores_cells_outside_the_region():
    region = torch.zeros(3, 3, dtype=torch.bool)
    region[0] = True
    V = torch.tensor([[1.0, 1.0, 1.0], [0, 0, 0], [5.0, 5.0, 5.0]])
    T = torch.tensor([[1.0, 1.0, 1.0], [9.0, 9.0, 9.0], [0, 0, 0]])
    assert masked_cosine(V, T, region).item() == pytest.approx(1.0)


def test_selectivity_and_largest_similarity():
    m = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.6], [0.0, 0.0, 0.7]])
    assert torch.allclose(selectivity(m), torch.tensor([0.4, -0.3, 0.7]))
    assert torch.allclose(selectivity(m[None].expand(2, 3, 3)), selectivity(m).expand(2, 3))
    assert torch.allclose(largest_similarity(m), torch.tensor([0.9, 0.6, 0.7]))
    with pytest.raises(ValueError):
        selectivity(torch.ones(1, 1))


def test_rejection_reports_largest_stored_similarity_and_growth_of_q():
    q = torch.zeros(4, 4, dtype=torch.bool)
    q[:2] = True
    V = torch.zeros(2, 4, 4)
    V[0][q] = 0.6                              # Q grown exactly
    out = rejection(torch.tensor([[0.1, 0.2], [0.7, 0.0]]), V, q)
    assert torch.allclose(out["largest"], torch.tensor([0.2, 0.7]))
    assert torch.allclose(out["amplified"], torch.tensor([1.0, 0.0]))


def test_state_change():
    assert state_change(torch.zeros(2, 2), torch.ones(2, 2)).item() == 1.0


def test_associative_capacity_stops_at_the_first_failure():
    assert associative_capacity([1, 3, 8, 16], [0.9, 0.85, 0.7, 0.9], [None, 0.6, 0.6, 0.6]) == 3
    assert associative_capacity([1, 3], [0.9, 0.9], [None, 0.4]) == 1
    assert associative_capacity([1, 3], [0.5, 0.9], [None, 0.9]) == 0


# ---- cue makers ------------------------------------------------------------------------

def test_sweep_arc_and_component_parts():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, :] = True                                   # a 4 x 8 bar
    left = sweep_part(mask, 0.5, 0.0)
    assert left.sum() == 16 and left[:, :4].sum() == 16
    top = sweep_part(mask, 0.25, math.pi / 2)
    assert top.sum() == 8 and top[2].all()
    square = torch.zeros(9, 9, dtype=torch.bool)
    square[2:7, 2:7] = True
    arc = arc_part(square, 0.25, 0.0)                     # one quadrant about the centre
    assert (arc & ~square).sum() == 0 and 4 <= arc.sum() <= 9
    spots = torch.zeros(10, 10, dtype=torch.bool)
    for r, c in ((1, 1), (1, 8), (8, 1), (8, 8)):
        spots[r - 1:r + 1, c - 1:c + 1] = True
    half = component_part(spots, 0.5, seed=3)
    assert half.sum() == 8 and torch.equal(half, component_part(spots, 0.5, seed=3))


def test_masked_uniform_cues_and_overlap():
    target = torch.full((6, 6), 0.8)
    keep = torch.zeros(6, 6, dtype=torch.bool)
    keep[:, :3] = True
    cue = masked_cue(target, keep, 0.5, 0.0, [0])
    assert torch.allclose(cue[0][keep], torch.tensor(0.4)) and cue[0][~keep].sum() == 0
    u = uniform_cue(6, 6, 0.12, 0.0, [0, 1])
    assert u.shape == (2, 6, 6) and torch.allclose(u, torch.tensor(0.12))
    assert overlap_fraction(keep, torch.ones(6, 6, dtype=torch.bool)).item() == 1.0
    assert overlap_fraction(keep, ~keep).item() == 0.0
    with pytest.raises(ValueError):
        sweep_part(keep, 0.0, 0.0)


def test_dilation_is_square_and_periodic_like_the_medium():
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[0, 4, 4] = True
    mask[1, 0, 9] = True                                   # a corner cell: wraps round
    grown = rules._dilate(mask, 2)
    assert grown[0].sum() == 25 and grown[0, 2:7, 2:7].all()
    assert grown[1].sum() == 25 and grown[1, 8, 1] and grown[1, 2, 7]


def test_global_inhibition_cuts_the_feed_of_each_member_by_its_own_mean_activity():
    inh = rules.GlobalInhibition(gain=10.0, set_point=0.1)
    V = torch.stack([torch.full((4, 4), 0.05), torch.full((4, 4), 0.15), torch.full((4, 4), 0.5)])
    F_base = torch.full((3, 4, 4), 0.08)
    F = inh.feed(V, F_base)
    assert torch.equal(F[0], F_base[0])                          # below the set point
    assert torch.allclose(F[1], torch.tensor(0.08 * 0.5))        # 1 - 10 * (0.15 - 0.1)
    assert torch.equal(F[2], torch.zeros(4, 4))                  # far above: no feed
    K = torch.full((3, 4, 4), 0.06)
    F_new, K_new, out = inh.epilogue(V, F_base, K, F_base)
    assert torch.equal(F_new, F) and K_new is K and out is None


def test_global_inhibition_runs_as_the_steppers_hook():
    from substrate import GrayScott

    inh = rules.GlobalInhibition(gain=50.0, set_point=0.06)
    gs = GrayScott(16, 16, batch=2, F=0.08, K=0.035, compile=False)
    gs.V = torch.stack([torch.full((16, 16), 0.5), torch.zeros(16, 16)])
    F_base = torch.full((2, 16, 16), 0.08)
    gs.run(3, hook=inh.epilogue, hook_args=(F_base,))
    assert torch.all(gs.F[0] < 0.08) and torch.equal(gs.F[1], F_base[1])


# ---- junction cells (idea 5) -------------------------------------------------------------

def _junction_grid():
    """A 1-member 6 x 6 dead medium where an earlier pattern holds column 2 as a channel."""
    rule = rules.JunctionScar(rate=1.0, moat=1)
    F = torch.full((1, 6, 6), rule.F_bg)
    K = torch.full((1, 6, 6), rule.K_bg)
    F[0, :, 2], K[0, :, 2] = rule.F_on, rule.K_on
    target = torch.zeros(6, 6)
    target[3, :] = 0.8                               # the new pattern: row 3 crosses column 2
    return rule, F, K, target


def test_junction_prepare_marks_only_shared_channel_cells():
    rule, F, K, target = _junction_grid()
    F2, K2 = rule.prepare(F, K, target)
    junction = torch.zeros(1, 6, 6, dtype=torch.bool)
    junction[0, 3, 2] = True
    assert torch.equal(K2[junction], torch.tensor([rule.K_junction]))
    assert torch.equal(F2[junction], torch.tensor([rule.F_junction]))
    assert torch.equal(K2[~junction], K[~junction]) and torch.equal(F2[~junction], F[~junction])


def test_junction_update_never_scars_a_junction_and_scars_the_rest_as_surround():
    rule, F, K, target = _junction_grid()
    F, K = rule.prepare(F, K, target)
    V = torch.zeros(1, 6, 6)
    V[0, 3, :] = 0.6                                  # the medium shows the whole row
    F2, K2 = rule.update(V, target, F, K, torch.tensor([0.9]))
    assert F2[0, 3, 2] == rule.F_junction and K2[0, 3, 2] == rule.K_junction
    others = torch.ones(6, dtype=torch.bool)
    others[2] = False
    assert torch.allclose(F2[0, 3, others], torch.tensor(rule.F_on))   # rate 1: reached
    surround = rules.SurroundScar(rate=1.0, moat=1).update(V, target, F, K, torch.tensor([0.9]))
    keep = torch.ones(1, 6, 6, dtype=torch.bool)
    keep[0, 3, 2] = False
    assert torch.equal(F2[keep], surround[0][keep]) and torch.equal(K2[keep], surround[1][keep])


def test_store_prepares_before_each_pattern():
    from protocol import Protocol

    study = scarring.Study(Protocol(grid=24, multi_train_steps=5), "cpu")
    column = torch.zeros(24, 24)
    column[:, 10:14] = 0.8
    row = column.t().clone()
    out = study.store(torch.stack([column, row]), [0], 5, snapshots=(1, 2),
                      rule=rules.JunctionScar(rate=1.0, moat=1, gate=-1.0, v_threshold=-1.0))
    K = out["K"][0]
    assert (K[10:14, 10:14] == rules.JunctionScar().K_junction).all()   # the crossing
    assert (out["snapshots"][1][1][0][10:14, 10:14] < rules.JunctionScar().K_junction).all()
    assert out["scar_strength"].shape == (2, 1)


def test_junction_constants_are_checked():
    with pytest.raises(ValueError, match="K_junction"):
        rules.JunctionScar(K_junction=0.07)


def test_surround_inhibited_rule_recalls_under_global_inhibition():
    """The --rule form of the closest associative condition: Study.recall runs its media
    with the inhibition hook, so a uniform kick on a medium that is all channel (F_on,
    K_on) starves, where the plain surround rule's recall of the same start lights the
    whole medium; F is left as it was."""
    from protocol import Protocol

    cues = torch.full((1, 1, 24, 24), 0.24)
    target = torch.zeros(1, 24, 24)
    target[0, 8:16, 8:16] = 0.8
    means = {}
    for name in ("surround", "surround_inhibited"):
        study = scarring.Study(Protocol(grid=24, rule=name), "cpu")
        F = torch.full((1, 24, 24), study.rule.F_on)
        K = torch.full((1, 24, 24), study.rule.K_on)
        F_before = F.clone()
        res = study.recall(F, K, cues, target, 150, return_fields=True)
        means[name] = float(res["V"].mean())
        assert torch.equal(F, F_before)
    rule = scarring.make_rule("surround_inhibited")
    assert rule.recall_inhibition() == rules.GlobalInhibition()
    assert scarring.make_rule("surround").recall_inhibition() is None
    assert means["surround"] > 0.4 and means["surround_inhibited"] < 0.01, means  # 0.55, 2e-5
