"""A training run on the engine's Gray-Scott medium (scarring.GrayScottSimulation, the
path Study.store drives), with its similarity curve, for the tests of the fused scar."""
import torch

from scarring import GrayScottMedium
from substrate import F0, K0


def train(V0, target, steps: int, rule, every: int, F=F0, K=K0, **physics):
    """Train members V0 (B, *grid) toward target for `steps` steps with per-member fields
    starting at F, K; physics: GrayScottMedium fields (compile, stencil, ...). Returns
    (sim, steps recorded, similarity (T, B) on the CPU)."""
    medium = GrayScottMedium(rule=rule, **physics)
    fields = {"F": torch.full_like(V0, F), "K": torch.full_like(V0, K)}
    sim = medium.simulation(medium.initial_state(V0, fields), fields)
    recorded, curve = [], []

    def on_record(step, V, similarity):
        recorded.append(step)
        curve.append(similarity)

    sim.run(steps, target=target, learn=True, every=every, on_record=on_record)
    return sim, recorded, torch.stack(curve).cpu()
