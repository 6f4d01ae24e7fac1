import numpy as np
import pytest
import torch

import substrate
from substrate import GrayScott, SimulationError, gray_scott_step, laplacian
from tests import reference_numpy as ref


def random_state(batch, H, W, seed=0, per_member=True):
    rng = np.random.default_rng(seed)
    U = rng.uniform(0, 1, (batch, H, W))
    V = rng.uniform(0, 0.5, (batch, H, W))
    shape = (batch, H, W) if per_member else (H, W)
    F = rng.uniform(0.01, 0.08, shape)
    K = rng.uniform(0.03, 0.08, shape)
    return U, V, F, K


@pytest.mark.parametrize("stencil", ["nine_point", "five_point"])
@pytest.mark.parametrize("per_member", [True, False])
def test_step_matches_numpy_reference(stencil, per_member):
    U, V, F, K = random_state(3, 17, 23, seed=1, per_member=per_member)
    Du, Dv = (0.16, 0.08) if stencil == "nine_point" else (0.1, 0.05)
    gs = GrayScott(17, 23, batch=3, F=torch.tensor(F), K=torch.tensor(K), Du=Du, Dv=Dv,
                   stencil=stencil, device="cpu", dtype=torch.float64)
    gs.reset(U=torch.tensor(U), V=torch.tensor(V))
    gs.step(25)
    for _ in range(25):
        U, V = ref.step(U, V, F if per_member else F[None], K if per_member else K[None],
                        Du=Du, Dv=Dv, stencil=stencil)
    np.testing.assert_allclose(gs.U.numpy(), U, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gs.V.numpy(), V, rtol=0, atol=1e-12)


def test_float32_matches_reference_and_float64():
    U, V, F, K = random_state(2, 32, 32, seed=2)
    runs = {}
    for dtype in (torch.float32, torch.float64):
        gs = GrayScott(32, 32, batch=2, F=torch.tensor(F), K=torch.tensor(K), device="cpu",
                       dtype=dtype)
        gs.reset(U=torch.tensor(U), V=torch.tensor(V))
        gs.step(50)
        runs[dtype] = gs.V.double().numpy()
    for _ in range(50):
        U, V = ref.step(U, V, F, K)
    np.testing.assert_allclose(runs[torch.float32], V, atol=1e-4)
    np.testing.assert_allclose(runs[torch.float32], runs[torch.float64], atol=1e-4)


def test_options_off_match_reference():
    U, V, F, K = random_state(1, 12, 12, seed=3)
    U, V = U * 3, V * 3   # outside [0, 1]: the clamp would matter
    U_t, V_t = gray_scott_step(torch.tensor(U), torch.tensor(V), torch.tensor(F), torch.tensor(K),
                               decay=None, clamp=False)
    U_r, V_r = ref.step(U, V, F, K, decay=None, clamp=False)
    np.testing.assert_allclose(U_t.numpy(), U_r, atol=1e-12)
    np.testing.assert_allclose(V_t.numpy(), V_r, atol=1e-12)
    assert V_t.max() > 1.0  # really unclamped


def test_homogeneous_state_stays_put():
    gs = GrayScott(16, 16, batch=2, device="cpu", dtype=torch.float64)  # U=1, V=0
    gs.step(200)
    assert torch.equal(gs.U, torch.ones_like(gs.U))
    assert torch.equal(gs.V, torch.zeros_like(gs.V))


@pytest.mark.parametrize("stencil", ["nine_point", "five_point"])
def test_laplacian_of_constant_is_zero_and_sums_to_zero(stencil):
    c = torch.full((2, 9, 11), 0.37, dtype=torch.float64)
    assert torch.allclose(laplacian(c, stencil), torch.zeros_like(c), atol=1e-15)
    x = torch.rand(2, 9, 11, dtype=torch.float64)
    # periodic Laplacian conserves the total (diffusion moves mass, never creates it)
    assert laplacian(x, stencil).sum(dim=(-2, -1)).abs().max() < 1e-12


def test_reference_stencil_has_isotropic_coefficient_0_3():
    # For a slowly varying quadratic x^2 (away from the wrap) lap = 2 * 0.3 * h^2 = 0.6
    H = W = 32
    x = torch.arange(W, dtype=torch.float64).expand(H, W)
    lap = laplacian((x ** 2).unsqueeze(0), "nine_point")[0]
    assert torch.allclose(lap[:, 2:-2], torch.full_like(lap[:, 2:-2], 0.6))


def test_periodic_wrap_spot_at_edge_reaches_opposite_edge():
    gs = GrayScott(20, 20, batch=1, F=0.0, K=0.0, decay=None, device="cpu", dtype=torch.float64)
    V = torch.zeros(1, 20, 20, dtype=torch.float64)
    V[0, 10, 0] = 1.0
    gs.reset(U=torch.zeros_like(V), V=V)   # U=0: no reaction, pure diffusion of V
    gs.step(1)
    assert gs.V[0, 10, 19] > 0 and gs.V[0, 10, 1] > 0
    assert torch.isclose(gs.V[0, 10, 19], gs.V[0, 10, 1])
    assert torch.isclose(gs.V.sum(), torch.tensor(1.0, dtype=torch.float64))  # mass conserved


def test_shared_and_per_member_fields_agree():
    U, V, F, K = random_state(3, 10, 10, seed=4, per_member=False)
    shared = GrayScott(10, 10, batch=3, F=torch.tensor(F), K=torch.tensor(K), device="cpu",
                       dtype=torch.float64)
    member = GrayScott(10, 10, batch=3, F=torch.tensor(F).expand(3, -1, -1),
                       K=torch.tensor(K).expand(3, -1, -1), device="cpu", dtype=torch.float64)
    for gs in (shared, member):
        gs.reset(U=torch.tensor(U), V=torch.tensor(V))
        gs.step(10)
    assert torch.equal(shared.V, member.V)


def test_batch_members_are_independent():
    U, V, F, K = random_state(4, 12, 12, seed=5)
    whole = GrayScott(12, 12, batch=4, F=torch.tensor(F), K=torch.tensor(K), device="cpu")
    whole.reset(U=torch.tensor(U), V=torch.tensor(V))
    whole.step(30)
    alone = GrayScott(12, 12, batch=1, F=torch.tensor(F[2:3]), K=torch.tensor(K[2:3]), device="cpu")
    alone.reset(U=torch.tensor(U[2:3]), V=torch.tensor(V[2:3]))
    alone.step(30)
    assert torch.equal(whole.V[2], alone.V[0])


@pytest.mark.parametrize("kwargs, needle", [
    (dict(dt=10.0), "unstable"),
    (dict(Du=2.0), r"lower dt to <= 0.625 \(or Du to <= 1.25\)"),
    (dict(Dv=0.3, stencil="five_point"), "0.25"),
    (dict(dt=-1.0), "dt=-1.0"),
    (dict(decay=1.5), "decay"),
    (dict(stencil="seven"), "stencil"),
])
def test_bad_parameters_raise_clear_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GrayScott(16, 16, device="cpu", **kwargs)


def test_stability_bound_is_the_real_threshold():
    # Pure diffusion of the checkerboard mode (the stencil's largest eigenvalue, 1.6):
    # just inside the bound it decays, just outside it grows; check_stability agrees.
    checkerboard = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)],
                                dtype=torch.float64).unsqueeze(0)
    for Du, grows in ((1.2, False), (1.3, True)):
        X = 0.01 * checkerboard
        for _ in range(100):
            X = X + Du * laplacian(X, "nine_point")
        assert (X.abs().max().item() > 0.01) == grows
        if grows:
            with pytest.raises(ValueError, match="unstable"):
                substrate.check_stability(Du, 0.0, 1.0)
        else:
            substrate.check_stability(Du, 0.0, 1.0)


def test_wrong_field_shape_is_refused():
    with pytest.raises(ValueError, match=r"F has shape \(5, 5\)"):
        GrayScott(16, 16, F=torch.zeros(5, 5), device="cpu")
    gs = GrayScott(16, 16, batch=2, device="cpu")
    with pytest.raises(ValueError, match="V has shape"):
        gs.reset(V=torch.zeros(3, 16, 16))


def test_nan_in_the_inputs_is_refused_before_the_first_step():
    gs = GrayScott(8, 8, F=torch.full((1, 8, 8), 0.037), device="cpu")
    gs.reset(V=torch.rand(1, 8, 8))
    gs.step(3)
    for name, bad in (("F", float("nan")), ("K", float("inf")), ("V", float("nan")),
                      ("U", float("-inf"))):
        before = {n: getattr(gs, n).clone() for n in "UVFK"}
        t = getattr(gs, name).clone()
        t.view(-1)[5] = bad
        setattr(gs, name, t)
        with pytest.raises(ValueError, match=f"{name} has NaN or Inf"):
            gs.step(1)      # one step at a time: refused at once, not at step 100
        assert gs.steps_taken == 3
        setattr(gs, name, before[name])
    gs.step(1)
    assert gs.steps_taken == 4


@pytest.mark.parametrize("compile", [False, True])
def test_a_blow_up_names_its_step(compile):
    """clamp off and one cell started at V = 2: U V^2 grows faster than anything damps it
    and the state overflows within a few steps. The run says at which step it went
    non-finite, on either path (the compiled one replays the run to find it), and
    leaves the state as it was."""
    if compile and not substrate.compiler_available("cpu"):
        pytest.skip("no C++ compiler")
    V = torch.zeros(1, 8, 8)
    V[0, 3, 3] = 2.0
    U, V_ref, first = torch.ones(1, 8, 8), V.clone(), None
    F, K = torch.full((8, 8), substrate.F0), torch.full((8, 8), substrate.K0)
    for i in range(1, 50):   # the plain step, to know the answer
        U, V_ref = gray_scott_step(U, V_ref, F, K, clamp=False)
        if first is None and not (torch.isfinite(U).all() and torch.isfinite(V_ref).all()):
            first = i
    assert first is not None
    gs = GrayScott(8, 8, clamp=False, device="cpu", compile=compile)
    gs.step(3)              # steps_taken = 3: the message counts from construction
    gs.reset(V=V)
    with pytest.raises(SimulationError, match=rf"first at step {3 + first} \(step {first} of"):
        gs.step(40)
    assert torch.equal(gs.V, V) and gs.steps_taken == 3


def test_step_is_deterministic_on_cpu():
    U, V, F, K = random_state(2, 16, 16, seed=6)
    outs = []
    for _ in range(2):
        gs = GrayScott(16, 16, batch=2, F=torch.tensor(F), K=torch.tensor(K), device="cpu")
        gs.reset(U=torch.tensor(U), V=torch.tensor(V))
        outs.append(gs.step(40).V)
    assert torch.equal(outs[0], outs[1])


# ---- every argument checked up front (bad input gets one clear line) -------------------
@pytest.mark.parametrize("kwargs, needle", [
    (dict(height="64"), "height='64' must be an integer"),
    (dict(batch=0), "batch=0 must be an integer >= 1"),
    (dict(width=16.5), "width=16.5"),
    (dict(Du=float("nan")), "Du=nan must be a finite number"),
    (dict(dt=float("inf")), "dt=inf"),
    (dict(dt=0.0), r"dt=0.0 must be a finite number in \(0.0"),
    (dict(decay=float("nan")), "decay=nan"),
    (dict(F=1e30), "F=1e\\+30 must be a finite number in \\[0.0, 1.0\\]"),
    (dict(F=-5), "F=-5"),
    (dict(K=torch.full((16, 16), float("nan"))), "K has NaN or Inf"),
    (dict(F=torch.full((16, 16), 2.0)), r"F spans \[2, 2\]"),
    (dict(clamp="yes"), "clamp='yes' must be True or False"),
    (dict(dtype=torch.int32), "dtype"),
    (dict(device="foo"), "device='foo' is not a torch device"),
    (dict(device="meta"), "device=meta cannot run"),
])
def test_constructor_checks_every_argument(kwargs, needle):
    args = dict(height=16, width=16, device="cpu") | kwargs
    with pytest.raises(ValueError, match=needle):
        GrayScott(**args)


@pytest.mark.parametrize("name, value, needle", [
    ("dt", 50.0, "unstable"), ("Du", 100.0, "unstable"), ("Dv", -1.0, "Dv=-1.0"),
    ("decay", 3.0, "decay=3.0"), ("stencil", "seven_point", "3D"),
])
def test_constants_reassigned_after_construction_are_checked_at_the_next_run(
        name, value, needle):
    gs = GrayScott(16, 16, device="cpu")
    gs.step(2)
    setattr(gs, name, value)
    with pytest.raises(ValueError, match=needle):
        gs.step(1)
    assert gs.steps_taken == 2


def test_stability_bound_covers_the_reaction_terms():
    """dt = 12, Du = Dv = 0.01 passes the diffusion-only bound (12 * 0.01 * 1.6 = 0.19)
    but the reaction makes explicit Euler overshoot: refused as soon as the medium holds
    a pattern-sized V, while the reference constants pass even at the clamp's ceiling."""
    substrate.check_stability(0.01, 0.01, 12.0)                       # diffusion only
    with pytest.raises(ValueError, match=r"V_max\^2 \+ F_max"):
        substrate.check_stability(0.01, 0.01, 12.0, F_max=0.037, K_max=0.06, V_max=0.5)
    substrate.check_stability(substrate.DU, substrate.DV, substrate.DT, F_max=0.08,
                              K_max=0.08, V_max=1.0)
    cue = torch.zeros(1, 16, 16)
    cue[0, 4:8, 4:8] = 0.5
    gs = GrayScott(16, 16, Du=0.01, Dv=0.01, dt=12.0, device="cpu")
    gs.reset(V=cue)
    with pytest.raises(ValueError, match="unstable"):
        gs.step(1)
    # and it is really garbage: unclamped, the same run leaves [0, 1] at once
    U, V = gray_scott_step(torch.ones_like(cue), cue, torch.tensor(0.037), torch.tensor(0.06),
                           Du=0.01, Dv=0.01, dt=12.0, clamp=False)
    assert U.min() < -0.5


@pytest.mark.parametrize("kwargs, V_max", [
    ({}, 1.0),                                            # the reference, any V
    (dict(F=0.078, K=0.061), 1.0),                        # the widest regime studied
    (dict(F=0.08, K=0.03), 1.0),                          # the scar clamps' corner
    (dict(stencil="five_point"), 0.75),                   # the stencil ablation
    (dict(depth=8, stencil="seven_point"), 1.0),
    (dict(depth=8, stencil="twentyseven_point"), 1.0),
])
def test_every_studied_configuration_passes_the_bound(kwargs, V_max):
    gs = GrayScott(16, 16, batch=2, device="cpu", **kwargs)
    gs.reset(V=torch.full(gs.V.shape, V_max))
    gs.step(1)


def test_a_grid_that_cannot_fit_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"needs about 521.6 GiB on cpu .* GiB is available"):
        GrayScott(100_000, 100_000, device="cpu")
