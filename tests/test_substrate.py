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
    (dict(Du=2.0), r"need dt \* Du <= 1.25"),
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


def test_nan_is_detected_and_names_the_step():
    F = torch.full((1, 8, 8), 0.037)
    gs = GrayScott(8, 8, F=F, device="cpu", check_every=10)
    gs.reset(V=torch.rand(1, 8, 8))
    gs.step(3)
    gs.F = gs.F.clone()
    gs.F[0, 2, 2] = float("nan")
    with pytest.raises(SimulationError, match="first at step 4"):
        gs.step(20)


def test_step_is_deterministic_on_cpu():
    U, V, F, K = random_state(2, 16, 16, seed=6)
    outs = []
    for _ in range(2):
        gs = GrayScott(16, 16, batch=2, F=torch.tensor(F), K=torch.tensor(K), device="cpu")
        gs.reset(U=torch.tensor(U), V=torch.tensor(V))
        outs.append(gs.step(40).V)
    assert torch.equal(outs[0], outs[1])
