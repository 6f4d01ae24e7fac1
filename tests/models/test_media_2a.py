"""The media of experiment 2A (models/kuramoto.py, models/hopfield_substrate.py): each
test fails if its mechanism breaks."""
import math

import pytest
import torch

from memory import MEDIA
from models.hopfield_substrate import HopfieldSubstrate, hebbian_vector
from models.kuramoto import (Kuramoto, coupling_drive, disc_offsets, neighbour_stack,
                                   order_parameter)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny grids: one torch thread is many times faster than several on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disc(H, cy, cx, r):
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()


def test_media_are_registered_by_name():
    assert MEDIA["kuramoto"] is Kuramoto and MEDIA["hopfield_substrate"] is HopfieldSubstrate
    assert MEDIA["kuramoto"](radius=2).radius == 2
    with pytest.raises(ValueError, match="radius"):
        Kuramoto(radius=0)


def test_disc_offsets_radius_3_has_28_neighbours():
    assert len(disc_offsets(3)) == 28 and (0, 0) not in disc_offsets(3)


def test_coupling_pulls_a_neighbour_towards_its_phase():
    # two cells one apart on a 5x5 grid, the rest at the first cell's phase: the drive on
    # the odd cell has the sign of sin(theta_j - theta_i) (attractive coupling)
    theta = torch.zeros(1, 5, 5)
    theta[0, 2, 2] = 0.5
    d = coupling_drive(theta, torch.tensor(1.0), disc_offsets(1))
    assert d[0, 2, 2] < 0 and d[0, 2, 3] > 0
    J = torch.ones(1, 4, 5, 5)
    assert torch.allclose(d, coupling_drive(theta, J, disc_offsets(1)), atol=1e-6)


def test_uniform_coupling_synchronises_identical_oscillators():
    g = torch.Generator().manual_seed(0)
    m = Kuramoto(coupling=1.0, scar_field="none", radius=2)
    theta = 0.6 * torch.randn(1, 12, 12, generator=g)   # a broad but not uniform start
    (end,) = m.step((theta,), m.fields(1, 12, 12), 400)
    assert order_parameter(theta) < 0.9 < 0.99 < order_parameter(end)


def test_hebbian_scar_is_symmetric_and_completes_a_half_cue():
    H = 24
    target = disc(H, 12, 12, 5)
    m = Kuramoto()                 # coupling scar, radius 3
    g = torch.Generator().manual_seed(1)
    fields = m.train(m.fields(1, H, H), target[None, None], 60,
                     0.1 * torch.randn(1, 1, H, H, generator=g))
    # J_{i,e} equals J_{i+e,-e}: the rule reads cos(theta_j - theta_i), symmetric in i, j
    offs = m.offsets
    back = neighbour_stack(fields["J"][0, offs.index((1, 2))][None], [(-1, -2)])[0, 0]
    assert torch.allclose(fields["J"][0, offs.index((-1, -2))], back, atol=1e-5)
    # bonds across the disc's edge went negative, inside and outside stayed positive
    edge = fields["J"][0, offs.index((0, 1))][12, 16]     # (12, 16) in, (12, 17) out
    assert edge < 0 < fields["J"][0, offs.index((0, 1))][12, 12]
    half = target * (torch.arange(H) < 12).float()
    (theta,) = m.initial_state(half[None])
    act = m.activity(m.step((theta + 0.1 * torch.randn(1, H, H, generator=g),), fields, 300))[0]
    on, off = act[target > 0], act[target == 0]
    assert (on > 0.5).float().mean() > 0.9 and (off < 0.1).float().mean() > 0.9


def test_unscarred_kuramoto_keeps_no_pattern():
    # without a scar the coupling only synchronises: a cued disc fades into the background
    H = 16
    m = Kuramoto(coupling=1.0, scar_field="none")
    (theta,) = m.initial_state(0.6 * disc(H, 8, 8, 4)[None])
    act = m.activity(m.step((theta,), m.fields(1, H, H), 300))
    assert act.max() < 0.05


def test_frequency_scar_raises_natural_frequency_only_on_target_cells():
    H = 8
    m = Kuramoto(scar_field="frequency", learning_rate=1.0, dt=0.1)
    target = disc(H, 4, 4, 2)[None]
    f = m.scar(m.initial_state(target), target, m.fields(1, H, H))
    assert torch.allclose(f["omega"], 0.1 * target)


def test_hopfield_field_input_is_the_dense_hebbian_matrix():
    g = torch.Generator().manual_seed(2)
    m = HopfieldSubstrate(scale=1.0)
    pats = torch.rand(1, 3, 6, 6, generator=g)
    fields = m.fields(1, 6, 6)
    for i in range(3):
        fields = m.scar(None, pats[:, i], fields)
    p = hebbian_vector(pats[0])            # (3, 36)
    W = p.T @ p
    W.fill_diagonal_(0)
    x = torch.rand(1, 6, 6, generator=g) * 2 - 1
    assert torch.allclose(m.field_input(x, fields["p"]).flatten(), W @ x.flatten(), atol=1e-5)


def test_hopfield_with_gain_retrieves_and_published_scale_only_decays():
    g = torch.Generator().manual_seed(3)
    H = 12
    pats = (torch.rand(2, H, H, generator=g) > 0.5).float()
    flip = torch.rand(H, H, generator=g) < 0.2
    cue = torch.where(flip, 1 - pats[0], pats[0]) * 2 - 1      # +-1, 20% wrong
    sign = hebbian_vector(pats[:1]).view(H, H).sign()
    for scale, retrieves in ((1.0, True), ("published", False)):
        m = HopfieldSubstrate(scale=scale, max_steps=200)
        fields = m.fields(1, H, H)
        for i in range(2):
            fields = m.scar(None, pats[i:i + 1], fields)
        (x,), _ = m.settle(m.initial_state(cue[None]), fields)
        agree = (x[0].sign() == sign).float().mean()
        if retrieves:
            assert agree > 0.97 and x.abs().mean() > 0.5
        else:   # the loop gain 1/(N T) << 1: the cue only shrinks, wrong cells stay wrong
            assert x.abs().max() < 0.01 and math.isclose(float(agree), 0.8, abs_tol=0.05)


@pytest.mark.slow
def test_battery_adapters_recall_a_stored_disc_from_its_half():
    from models.memories_2a import ON_LEVEL, HopfieldMemory, KuramotoMemory
    from patterns import PEAK

    H = 20
    pats = PEAK * torch.stack([disc(H, 6, 6, 4), disc(H, 14, 14, 4)])[None]   # (1, 2, H, W)
    half = ON_LEVEL / PEAK * pats[:, :1] * (torch.arange(H) < 6).float()
    for mem in (KuramotoMemory(max_steps=400), HopfieldMemory()):
        stored, by_k = mem.store(pats, [0], snapshots=(1, 2))
        assert set(by_k) == {1, 2}
        V, info = mem.recall(stored, half)
        assert V.shape == (1, 1, H, H) and info["settled"].shape == (1, 1)
        lit = V[0, 0] > 0.5 * PEAK
        assert lit[pats[0, 0] > 0].float().mean() > 0.9, mem.name


def test_kuramoto_recall_of_a_seed_is_the_same_alone_and_in_a_batch():
    """The start jitter is drawn from each seed's value, not its place in the batch."""
    from models.memories_2a import ON_LEVEL, KuramotoMemory
    from patterns import PEAK

    H = 12
    pats = PEAK * torch.stack([disc(H, 4, 4, 3), disc(H, 8, 8, 3)])[None]
    cue = ON_LEVEL / PEAK * pats[:, :1] * (torch.arange(H) < 5).float()
    mem = KuramotoMemory(train_steps=5, max_steps=20, check_every=10, min_steps=10)
    alone, _ = mem.recall(mem.store(pats, [3])[0], cue)
    batch, _ = mem.recall(mem.store(pats.expand(2, -1, -1, -1), [2, 3])[0], cue.expand(2, -1, -1, -1))
    assert torch.equal(alone[0], batch[1])


def circular_gap(a, b):
    d = (a - b).abs() % (2 * math.pi)
    return torch.minimum(d, 2 * math.pi - d).max().item()


@pytest.mark.parametrize("shared", [False, True])
def test_kernel_step_equals_the_torch_step(monkeypatch, shared):
    # an odd, non-square grid (every wrap), per-member or one seed's shared fields, and a
    # dt large enough that some cells step by more than a turn (the fmod branch)
    pytest.importorskip("numba")
    from models.kuramoto import kernel_applies

    g = torch.Generator().manual_seed(4)
    B, H, W = 3, 11, 13
    m = Kuramoto()
    E = len(m.offsets)
    theta = torch.rand(B, H, W, generator=g) * 2 * math.pi - 0.5   # some start below 0
    n = 1 if shared else B
    fields = {"omega": torch.randn(n, H, W, generator=g),
              "J": 3 * torch.randn(n, E, H, W, generator=g)}
    if shared:
        fields = {k: v.expand(B, *v.shape[1:]) for k, v in fields.items()}
    assert kernel_applies(theta, fields)
    for medium, steps, tol in ((m, 1, 2e-6), (m, 10, 5e-5), (Kuramoto(dt=3.0), 1, 1e-5)):
        (fast,) = medium.step((theta,), fields, steps)
        monkeypatch.setenv("SUBSTRATE_NO_KERNEL", "1")
        assert not kernel_applies(theta, fields)
        (ref,) = medium.step((theta,), fields, steps)
        monkeypatch.delenv("SUBSTRATE_NO_KERNEL")
        assert ((fast >= 0) & (fast < 2 * math.pi)).all()
        assert circular_gap(fast, ref) < tol, (medium.dt, steps)
    assert not torch.equal(fast, theta)      # the input is not changed in place
    (back,) = m.step((theta,), fields, 0)
    assert torch.equal(back, theta)


def test_settling_only_the_moving_members_changes_no_recall():
    # members on one seed's fields: stepping only the unsettled ones (shared_fields) gives
    # the same states, steps and flags as stepping all and keeping the settled ones
    from models.memories_2a import _settle

    g = torch.Generator().manual_seed(5)
    H = 12
    m = Kuramoto(coupling=1.0)
    f = {k: v[:1] for k, v in m.fields(1, H, H).items()}
    theta = torch.stack([torch.zeros(H, H),                          # settled at once
                         0.3 * torch.randn(H, H, generator=g),        # settles later
                         2 * math.pi * torch.rand(H, H, generator=g)])   # keeps moving
    step = lambda st, k: m.step(st, {n: v.expand(st[0].shape[0], *v.shape[1:])   # noqa: E731
                                     for n, v in f.items()}, k)
    runs = [_settle(step, m.activity, (theta,), 200, 10, 1e-3, 20, shared_fields=s)
            for s in (False, True)]
    (a,), steps_a, ok_a = runs[0]
    (b,), steps_b, ok_b = runs[1]
    assert torch.equal(a, b) and torch.equal(steps_a, steps_b) and torch.equal(ok_a, ok_b)
    assert ok_a[0] and steps_a[0] == 20 and steps_a[0] < steps_a[1]


def test_kernel_training_writes_the_torch_scar(monkeypatch):
    # the teacher's steps and the Hebbian scar after each, fused in the kernel, write the
    # couplings the torch step and scar write (two seeds, two patterns in turn)
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(6)
    S, H, W = 2, 12, 10
    T = (torch.rand(S, 2, H, W, generator=g) > 0.6).float()
    noise = 0.1 * torch.randn(S, 2, H, W, generator=g)
    m = Kuramoto()
    fields = m.fields(S, H, W)
    fast = m.train(fields, T, 20, noise)
    monkeypatch.setenv("SUBSTRATE_NO_KERNEL", "1")
    ref = m.train(fields, T, 20, noise)
    assert torch.equal(fields["J"], m.fields(S, H, W)["J"])     # pure: the input is kept
    assert ref["J"].abs().max() > 0.3                             # the scar was written
    assert (fast["J"] - ref["J"]).abs().max() < 1e-5
