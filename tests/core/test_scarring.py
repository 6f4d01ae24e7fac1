import pytest
import torch

from scarring import ScarRule, match_map, scar_strength
from substrate import F0, K0
from tests.training_run import train


def fields(B=1, H=4, W=4):
    return torch.full((B, H, W), F0, dtype=torch.float64), torch.full((B, H, W), K0, dtype=torch.float64)


def test_scar_fires_only_where_medium_and_target_both_exceed_threshold():
    V = torch.tensor([[[0.5, 0.5, 0.1, 0.31]]], dtype=torch.float64)       # (1, 1, 4)
    target = torch.tensor([[0.8, 0.0, 0.8, 0.8]], dtype=torch.float64)     # (1, 4)
    F = torch.full((1, 1, 4), F0, dtype=torch.float64)
    K = torch.full((1, 1, 4), K0, dtype=torch.float64)
    F2, K2 = ScarRule().update(V, target, F, K, torch.tensor([0.9]))
    assert F2.flatten().tolist() == pytest.approx([F0 + 0.003, F0, F0, F0 + 0.003])
    assert K2.flatten().tolist() == pytest.approx([K0 - 0.0015, K0, K0, K0 - 0.0015])
    assert torch.equal(F, torch.full_like(F, F0))   # pure: inputs untouched


def test_gate_blocks_members_at_or_below_it():
    V = torch.full((3, 2, 2), 0.9, dtype=torch.float64)
    target = torch.full((2, 2), 0.8, dtype=torch.float64)
    F, K = fields(3, 2, 2)
    F2, _ = ScarRule().update(V, target, F, K, torch.tensor([0.51, 0.5, 0.2]))
    assert (F2[0] > F0).all() and (F2[1] == F0).all() and (F2[2] == F0).all()


def test_clamps_saturate_at_bounds():
    V = torch.full((1, 2, 2), 0.9, dtype=torch.float64)
    target = torch.full((2, 2), 0.8, dtype=torch.float64)
    F, K = fields(1, 2, 2)
    for _ in range(100):
        F, K = ScarRule().update(V, target, F, K, torch.tensor([1.0]))
    assert torch.allclose(F, torch.full_like(F, 0.08)) and torch.allclose(K, torch.full_like(K, 0.03))
    # saturation takes ceil((0.08 - 0.037) / 0.003) = 15 gated steps for F
    F, K = fields(1, 2, 2)
    for _ in range(14):
        F, K = ScarRule().update(V, target, F, K, torch.tensor([1.0]))
    assert (F < 0.08).all()


def test_f_only_k_only_and_ratio():
    V = torch.full((1, 1, 1), 0.9, dtype=torch.float64)
    target = torch.full((1, 1), 0.8, dtype=torch.float64)
    F, K = fields(1, 1, 1)
    F2, K2 = ScarRule(k_ratio=0.0).update(V, target, F, K, torch.tensor([1.0]))
    assert F2.item() == pytest.approx(F0 + 0.003) and K2.item() == K0
    F2, K2 = ScarRule(f_ratio=0.0, k_ratio=1.0).update(V, target, F, K, torch.tensor([1.0]))
    assert F2.item() == F0 and K2.item() == pytest.approx(K0 - 0.003)


def test_scar_decay_relaxes_toward_defaults():
    V = torch.zeros(1, 1, 1, dtype=torch.float64)   # no match: only the decay acts
    target = torch.full((1, 1), 0.8, dtype=torch.float64)
    F = torch.full((1, 1, 1), 0.08, dtype=torch.float64)
    K = torch.full((1, 1, 1), 0.03, dtype=torch.float64)
    F2, K2 = ScarRule(scar_decay=0.5).update(V, target, F, K, torch.tensor([1.0]))
    assert F2.item() == pytest.approx((0.08 + F0) / 2) and K2.item() == pytest.approx((0.03 + K0) / 2)


def test_scar_strength_by_hand():
    F, K = fields(2, 3, 3)
    F[1, 0, 0] += 0.01
    K[1, 2, 2] -= 0.02
    assert scar_strength(F, K).tolist() == pytest.approx([0.0, 0.03])


def test_match_map_threshold_is_strict():
    V = torch.tensor([[0.3, 0.3001]])
    assert match_map(V, torch.tensor([[0.8, 0.8]])).tolist() == [[False, True]]


def test_shared_fields_refused_for_batched_scars():
    V = torch.full((2, 2, 2), 0.9)
    with pytest.raises(ValueError, match="per member"):
        ScarRule().update(V, torch.full((2, 2), 0.8), torch.full((2, 2), F0), torch.full((2, 2), K0), torch.tensor([1.0, 1.0]))


def test_a_training_run_scars_under_the_target_and_records_curves():
    target = torch.zeros(24, 24)
    target[6:18, 6:18] = 0.8
    sim, steps, similarity = train((0.9 * target / 0.8).expand(2, -1, -1), target, 25,
                                   ScarRule(), every=10)
    assert steps == [10, 20, 25]
    assert similarity.shape == (3, 2) and (similarity > 0).all()
    F, K = sim.fields["F"], sim.fields["K"]
    assert (scar_strength(F, K) > 0).all()
    assert not ((F != F0) & (target == 0)).any()   # only where the target is
