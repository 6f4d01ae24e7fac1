import torch

from models import differentiable
from protocol import Protocol


def test_logit_of_starts_a_bounded_field_at_its_value():
    a = torch.full((2, 3), differentiable.logit_of(0.03, 0.01, 0.08), dtype=torch.float64)
    assert torch.allclose(differentiable.bounded(a, 0.01, 0.08), torch.full((2, 3), 0.03,
                                                                             dtype=torch.float64))
    extreme = differentiable.bounded(torch.tensor([-50.0, 50.0]), 0.01, 0.08)
    assert (extreme >= 0.01).all() and (extreme <= 0.08).all()


def test_physics_of_a_protocol_is_its_substrate_clamped():
    p = Protocol()
    physics = differentiable.Physics.of(p)
    assert (physics.stencil, physics.decay, physics.dt) == (p.stencil, p.substrate()["decay"], p.dt)
    assert physics.clamp is True
