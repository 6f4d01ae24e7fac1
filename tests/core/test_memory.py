"""The store/recall engine (memory.py) on a toy medium of a few cells: a new medium brings
only its physics and its rule, and the engine's loops, trackers and settle logic work
for it; members that settle leave the batch."""
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import memory
import scarring
from protocol import Protocol


@dataclass(frozen=True)
class Relax(memory.Medium):
    """Activity relaxes toward the field `goal` at each cell's `rate`; the rule writes
    the target into `goal` where the activity shows it. Counts the member-steps it runs."""
    name: ClassVar[str] = "toy_relax"
    calls: list = None

    def background(self, protocol=None):
        return {"goal": 0.0, "rate": 0.5}

    def initial_state(self, V0, fields):
        return (V0.clone(),)

    def step(self, state, fields, steps):
        (V,) = state
        for _ in range(steps):
            V = V + fields["rate"] * (fields["goal"] - V)
            self.calls.append(V.shape[0])
        return (V,)

    def activity(self, state):
        return state[0]

    def scar(self, state, target, fields, similarity):
        on = (target > 0.3) & (similarity > 0.0).view(-1, 1, 1)
        return {**fields, "goal": torch.where(on, target, fields["goal"])}


def settings():
    return memory.Settings("cpu", torch.float64, train_strength=0.9, train_noise=0.0)


def test_a_new_medium_stores_and_recalls_through_the_engine():
    target = torch.zeros(1, 6, 6, dtype=torch.float64)
    target[0, 1:4, 1:4] = 0.8
    medium = Relax(calls=[])
    stored = memory.store(medium, target, [0, 1], 3, settings(), record_every=1)
    assert torch.equal(stored["goal"][0], target[0]) and stored["train_similarity"].shape == (1, 2)
    assert stored["curves"][0]["steps"] == [0, 1, 2, 3]
    assert (stored["scar_strength"] > 0).all()
    cue = 0.1 * target.expand(2, 6, 6)
    res = memory.recall(medium, stored["fields"], cue, 20, settings(),
                        [memory.Curves(target[0], 5)])
    assert torch.allclose(res["V"], target.expand(2, 6, 6), atol=1e-5)     # regrown
    assert res["steps"] == [0, 5, 10, 15, 20] and res["similarity"].shape == (5, 2)
    unlearned = memory.store(medium, target, [0], 3, settings(), learn=False)
    assert (unlearned["goal"] == 0).all() and (unlearned["scar_strength"] == 0).all()


def test_settled_members_leave_the_batch_and_keep_their_state():
    medium = Relax(calls=[])
    rate = torch.tensor([0.9, 0.5, 0.0], dtype=torch.float64).view(3, 1, 1).expand(3, 4, 4)
    fields = {"goal": 0.0, "rate": rate}
    start = torch.ones(3, 4, 4, dtype=torch.float64)
    settle = memory.Settle(tolerance=1e-3, window=5, min_steps=5)
    res = memory.recall(medium, fields, start, 60, settings(), [settle])
    at = res["settled_at"].tolist()
    # mean |change| per window of 5 steps: a member that never moves settles at the first
    # check; rate 0.9 moves ~1 in steps 1-5 and 1e-5 in 6-10; rate 0.5 falls below 1e-3
    # in its third window (2^-10 (1 - 2^-5))
    assert at == [10.0, 15.0, 5.0]
    assert res["V"][2].eq(1).all() and res["V"][0].abs().max() < 1e-4
    assert medium.calls == [3] * 5 + [2] * 5 + [1] * 5     # settled members cost nothing
    assert res["change"].shape == (3, 3) and res["change"][1:, 2].isnan().all()


def test_every_member_settling_at_one_check_ends_the_run():
    """A medium that cannot hold an empty batch (Gray-Scott) when all members leave at
    once: at the fixed point U = 1, V = 0 nothing changes, so all settle at the first
    check."""
    medium = scarring.GrayScottMedium()
    fields = medium.fields(2, 8, 8)
    settings32 = memory.Settings("cpu", torch.float32)
    res = memory.recall(medium, fields, torch.zeros(2, 8, 8), 20, settings32,
                        [memory.Settle(tolerance=1e-3, window=5, min_steps=5)])
    assert res["settled_at"].tolist() == [5.0, 5.0] and res["V"].eq(0).all()


def test_damage_lit_outside_and_a_schedule_of_the_fields():
    medium = Relax(calls=[])
    fields = {"goal": 1.0, "rate": 0.5}
    start = torch.zeros(2, 4, 4, dtype=torch.float64)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 0] = True
    shift = memory.FieldSchedule(lambda step, base: {**base, "goal": base["goal"] * 0.0
                                                     if step >= 10 else base["goal"]}, 5)
    res = memory.recall(medium, fields, start, 20, settings(),
                        [memory.Damage(mask, 4), memory.LitOutside(~mask, 5, level=0.5)])
    assert res["after_damage"][:, 0].eq(0).all() and res["before_damage"][:, 0].gt(0.9).all()
    assert res["lit_outside"].shape == (6, 2) and res["lit_outside"][-1].eq(1).all()
    falls = memory.recall(medium, fields, start, 20, settings(), [shift])
    assert falls["V"].max() < 0.01       # the goal dropped to 0 at step 10


def test_gray_scott_is_a_registered_medium_and_study_checks_the_pattern():
    assert memory.MEDIA["gray_scott"] is scarring.GrayScottMedium
    with pytest.raises(ValueError, match="--pattern 'nosuch'"):
        scarring.Study(Protocol(pattern="nosuch"))
    with pytest.raises(ValueError, match="taken"):
        memory.register_medium(scarring.GrayScottMedium)
