"""The fast stepper: eager and compiled paths agree with the reference, the loop with a
fused hook, subnormal floats flushed, 3D media and targets, no host sync inside the
loop, and the benchmark's --quick mode.

Compiled-path tests compile a few tiny kernels (seconds each on a cold cache); they skip
when no C++ compiler is available (or SUBSTRATE_NO_COMPILE is set).
"""
import itertools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import substrate
from patterns import PEAK, make_pattern, make_pattern_3d
from scarring import ScarRule, scar_strength
from substrate import (
    STENCIL_BOUND_3D,
    STENCILS_3D,
    GrayScott,
    gray_scott_step,
    laplacian,
)
from tests.training_run import train

ROOT = Path(__file__).resolve().parents[2]
needs_compiler = pytest.mark.skipif(not substrate.compiler_available("cpu"),
                                    reason="no C++ compiler for torch.compile")


# ---- an independent numpy reference for the 3D stencils ----------------------------------
def np_laplacian_3d(X, stencil):
    """sum over the 27 offsets of w * X[z+a, y+b, x+c] with periodic wrap (np.roll)."""
    w = np.array(STENCILS_3D[stencil])
    out = np.zeros_like(X)
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        if w[a + 1, b + 1, c + 1] != 0.0:
            out += w[a + 1, b + 1, c + 1] * np.roll(X, shift=(-a, -b, -c), axis=(-3, -2, -1))
    return out


def np_step(U, V, F, K, stencil, Du=0.16, Dv=0.08, dt=1.0, decay=0.9995):
    lu, lv = np_laplacian_3d(U, stencil), np_laplacian_3d(V, stencil)
    uvv = U * V * V
    U2 = U + dt * (Du * lu - uvv + F * (1 - U))
    V2 = (V + dt * (Dv * lv + uvv - (K + F) * V)) * decay
    return np.clip(U2, 0, 1), np.clip(V2, 0, 1)


def random_state(B, grid, seed=0, per_member=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    U = torch.rand((B, *grid), generator=g, dtype=torch.float64)
    V = 0.5 * torch.rand((B, *grid), generator=g, dtype=torch.float64)
    fshape = (B, *grid) if per_member else grid
    F = 0.01 + 0.07 * torch.rand(fshape, generator=g, dtype=torch.float64)
    K = 0.03 + 0.05 * torch.rand(fshape, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (U, V, F, K)]


def medium(grid, B, F, K, dtype, compile, stencil=None):
    depth = grid[0] if len(grid) == 3 else None
    return GrayScott(grid[-2], grid[-1], batch=B, depth=depth, F=F, K=K, stencil=stencil,
                     device="cpu", dtype=dtype, compile=compile)


# ---- 3D stencils ------------------------------------------------------------------------
@pytest.mark.parametrize("stencil", ["seven_point", "twentyseven_point"])
def test_3d_laplacian_matches_numpy_roll(stencil):
    X = torch.rand(2, 5, 6, 7, dtype=torch.float64)
    np.testing.assert_allclose(laplacian(X, stencil).numpy(),
                               np_laplacian_3d(X.numpy(), stencil), atol=1e-13)


@pytest.mark.parametrize("stencil", ["seven_point", "twentyseven_point"])
def test_3d_stencil_is_conservative_and_isotropic_0_3(stencil):
    c = torch.full((1, 6, 6, 6), 0.37, dtype=torch.float64)
    assert laplacian(c, stencil).abs().max() < 1e-14
    x = torch.rand(2, 5, 6, 7, dtype=torch.float64)
    assert laplacian(x, stencil).sum(dim=(-3, -2, -1)).abs().max() < 1e-12
    # a quadratic along any one axis, away from the wrap: lap = 2 * 0.3 = 0.6
    n = 16
    r = torch.arange(n, dtype=torch.float64) ** 2
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = n
        q = r.view(shape).expand(n, n, n).unsqueeze(0)
        lap = laplacian(q, stencil)[0].movedim(axis, 0)[2:-2]
        assert torch.allclose(lap, torch.full_like(lap, 0.6)), (stencil, axis)


@pytest.mark.parametrize("stencil", ["seven_point", "twentyseven_point"])
def test_3d_stability_bound_is_the_largest_eigenvalue(stencil):
    w = np.array(STENCILS_3D[stencil])
    n = 8
    kernel = np.zeros((n, n, n))
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        kernel[a % n, b % n, c % n] = w[a + 1, b + 1, c + 1]
    eig = np.fft.fftn(kernel).real
    assert abs(np.abs(eig).max() - STENCIL_BOUND_3D[stencil]) < 1e-12
    bound = STENCIL_BOUND_3D[stencil]
    substrate.check_stability(0.99 * 2 / bound, 0.0, 1.0, stencil)
    with pytest.raises(ValueError, match="unstable"):
        substrate.check_stability(1.01 * 2 / bound, 0.0, 1.0, stencil)


def test_3d_medium_rejects_2d_stencil_and_vice_versa():
    with pytest.raises(ValueError, match="3D"):
        GrayScott(8, 8, depth=8, stencil="nine_point", device="cpu")
    with pytest.raises(ValueError, match="2D"):
        GrayScott(8, 8, stencil="seven_point", device="cpu")
    assert GrayScott(8, 8, depth=8, device="cpu").stencil == "seven_point"
    assert GrayScott(8, 8, device="cpu").stencil == "nine_point"
    with pytest.raises(ValueError, match="compile"):
        GrayScott(8, 8, device="cpu", compile="yes")


@pytest.mark.parametrize("stencil, per_member", [("seven_point", True),
                                                 ("twentyseven_point", False)])
def test_3d_eager_step_matches_numpy_reference(stencil, per_member):
    grid = (5, 6, 7)
    U, V, F, K = random_state(2, grid, seed=1, per_member=per_member)
    gs = medium(grid, 2, F, K, torch.float64, compile=False, stencil=stencil)
    gs.reset(U=U, V=V)
    gs.step(15)
    u, v, f, k = (t.numpy() for t in (U, V, F, K))
    for _ in range(15):
        u, v = np_step(u, v, f, k, stencil)
    np.testing.assert_allclose(gs.U.numpy(), u, atol=1e-12)
    np.testing.assert_allclose(gs.V.numpy(), v, atol=1e-12)


# ---- eager path ----------------------------------------------------------------------------
@pytest.mark.parametrize("grid, stencil", [((9, 11), "nine_point"), ((9, 11), "five_point"),
                                           ((4, 5, 6), "twentyseven_point")])
@pytest.mark.parametrize("per_member", [True, False])
def test_in_place_step_is_bit_identical_to_the_autograd_branch(grid, stencil, per_member):
    U, V, F, K = random_state(3, grid, seed=2, per_member=per_member, dtype=torch.float32)
    fast = gray_scott_step(U, V, F, K, stencil=stencil)
    Ug = U.clone().requires_grad_(True)
    slow = gray_scott_step(Ug, V, F, K, stencil=stencil)
    assert torch.equal(fast[0], slow[0].detach()) and torch.equal(fast[1], slow[1].detach())
    slow[1].sum().backward()          # still differentiable
    assert Ug.grad is not None and torch.isfinite(Ug.grad).all()


def test_auto_does_not_compile_small_runs():
    gs = GrayScott(16, 16, batch=2, device="cpu")          # compile="auto"
    key = gs._key(None, {})
    assert not gs._use_compiled(10_000, key)                # too few cells per step
    gs.step(5)
    assert gs.last_path == ("kernel" if substrate.kernel_available() else "eager")
    big = GrayScott(256, 256, batch=4, device="cpu")
    assert not big._use_compiled(10, key)                   # too little work to repay it
    assert big._use_compiled(1000, key) == substrate.compiler_available("cpu")
    assert not GrayScott(256, 256, batch=4, device="cpu", compile=False)._use_compiled(
        10**6, key)


class SyncCounter:
    """Counts host reads of tensors (item / bool / float / tolist)."""

    def __init__(self, monkeypatch):
        self.n = 0
        for name in ("item", "__bool__", "__float__", "tolist"):
            real = getattr(torch.Tensor, name)

            def wrapped(t, *a, _real=real, **kw):
                self.n += 1
                return _real(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, wrapped)


def _evolve_syncs(monkeypatch, compile, steps):
    # the same shapes as the compiled tests below, so no extra compilation
    target = make_pattern("square_spots", 20, 24)
    V0 = (0.9 * target / PEAK).expand(3, -1, -1)
    sim, _, _ = train(V0, target, 2, ScarRule(), every=5, compile=compile)  # compile uncounted
    with monkeypatch.context() as m:
        counter = SyncCounter(m)
        sim.run(steps, target=target, learn=True, every=5, on_record=lambda *record: None)
    return counter.n


def test_no_host_sync_inside_the_eager_loop(monkeypatch):
    assert _evolve_syncs(monkeypatch, False, 10) == _evolve_syncs(monkeypatch, False, 40)


# ---- compiled path -----------------------------------------------------------------------
@needs_compiler
@pytest.mark.parametrize("grid, dtype, per_member, stencil", [
    ((20, 24), torch.float32, True, None),
    ((6, 7, 8), torch.float64, False, "seven_point"),
])
@pytest.mark.slow
def test_compiled_matches_eager(grid, dtype, per_member, stencil):
    U, V, F, K = random_state(3, grid, seed=3, per_member=per_member, dtype=dtype)
    runs = []
    for compile in (False, True):
        gs = medium(grid, 3, F, K, dtype, compile, stencil)
        gs.reset(U=U, V=V)
        gs.step(30)
        runs.append((gs.U, gs.V, gs.last_path))
    assert runs[0][2] == "eager" and runs[1][2] == "compiled"
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(runs[0][0], runs[1][0], atol=tol)
    assert torch.allclose(runs[0][1], runs[1][1], atol=tol)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=needs_compiler)])
@pytest.mark.parametrize("grid, dtype, per_member, stencil", [
    ((20, 24), torch.float32, True, None),                   # the shapes compiled above
    ((6, 7, 8), torch.float64, False, "seven_point"),
])
@pytest.mark.slow
def test_no_subnormal_survives_a_step(compile, grid, dtype, per_member, stencil):
    """A medium whose V has decayed into subnormal floats (and into the range where V * V
    is subnormal) away from a live patch: after one step no value of U or V is
    subnormal, and every non-zero one is at least FLUSH_BELOW, on every path."""
    tiny = torch.finfo(dtype).tiny                        # the smallest normal float
    U, V, F, K = random_state(3, grid, seed=9, per_member=per_member, dtype=dtype)
    V = torch.full_like(V, tiny / 4)                       # subnormal
    V.view(3, -1)[:, ::3] = tiny * 1e3                     # normal, but V * V is not
    V.view(3, -1)[:, 1::7] = 1e-30
    V[(slice(None), *(slice(0, 3),) * len(grid))] = 0.4    # a live patch
    assert ((V > 0) & (V < tiny)).any()
    gs = medium(grid, 3, F, K, dtype, compile, stencil)
    gs.reset(U=U, V=V)
    gs.step(1)
    assert gs.last_path == ("compiled" if compile else "eager")
    for X in (gs.U, gs.V):
        small = X[X != 0].abs().min()
        assert small >= substrate.FLUSH_BELOW, small
    assert (gs.V[(slice(None), *(slice(0, 3),) * len(grid))] > 0).any()  # the patch lives


@pytest.mark.slow
@needs_compiler
def test_compiled_state_reads_like_plain_tensors():
    grid = (20, 24)
    U, V, F, K = random_state(3, grid, seed=4, per_member=True, dtype=torch.float32)
    fast, ref = (medium(grid, 3, F, K, torch.float32, c) for c in (True, False))
    for gs in (fast, ref):
        gs.reset(U=U, V=V)
        gs.step(5)
    assert fast.last_path == "compiled"
    before = fast.V
    assert before.is_contiguous() and before.shape == (3, 20, 24)
    for gs in (fast, ref):                  # an in-place edit is honoured at the next step
        gs.V[1, 2, 3] = 0.9
        gs.step(4)
    assert torch.allclose(fast.V, ref.V, atol=1e-5)
    assert not torch.equal(before, fast.V)  # a reference taken earlier keeps the old state
    assert before[1, 2, 3] == 0.9


@pytest.mark.slow
@needs_compiler
def test_compiled_training_run_matches_eager_and_does_not_sync(monkeypatch):
    grid = (20, 24)
    target = torch.zeros(grid)
    target[5:15, 6:18] = PEAK
    g = torch.Generator().manual_seed(5)
    start = (0.2 * target + 0.1 * torch.randn((3, *grid), generator=g)).clamp(0, 1)
    runs = []
    for compile in (False, True):
        sim, steps, similarity = train(start, target, 40, ScarRule(gate=0.2), every=10,
                                       compile=compile)
        runs.append((steps, similarity, sim.activity(),
                     scar_strength(sim.fields["F"], sim.fields["K"])))
    assert runs[1][0] == runs[0][0] == [10, 20, 30, 40]
    assert torch.allclose(runs[0][1], runs[1][1], atol=1e-5)
    assert torch.allclose(runs[0][2], runs[1][2], atol=1e-5)
    assert torch.allclose(runs[0][3], runs[1][3], atol=1e-3)
    assert (runs[1][3] > 0).all()
    assert _evolve_syncs(monkeypatch, True, 10) == _evolve_syncs(monkeypatch, True, 40)


def _hook_feed_from_v(V, F, K, scale):
    """A hand-made hook: F grows by scale * V, K untouched, out = total V per member."""
    return F + scale * V, K, V.sum(dim=(-2, -1))


@pytest.mark.slow
@needs_compiler
def test_run_fuses_a_hook_like_the_eager_path():
    grid = (20, 24)
    U, V, F, K = random_state(3, grid, seed=6, per_member=False, dtype=torch.float32)
    runs = []
    for compile in (False, True):
        gs = medium(grid, 3, F, K, torch.float32, compile)
        gs.reset(U=U, V=V)
        outs = {}
        gs.run(12, hook=_hook_feed_from_v, hook_args=(1e-3,), record_every=4,
               on_record=lambda i, U_, V_, out, o=outs: o.update({i: (out, V_.sum((-2, -1)))}))
        runs.append((outs, gs.V, gs.F, gs.K, gs.last_path))
    assert runs[0][4] == "eager" and runs[1][4] == "compiled"
    assert sorted(runs[0][0]) == sorted(runs[1][0]) == [4, 8, 12]
    for i in (4, 8, 12):
        for a, b in zip(runs[0][0][i], runs[1][0][i]):
            assert torch.allclose(a, b, atol=1e-4)
        assert torch.allclose(*runs[1][0][i], atol=1e-4)   # out is the hook's, on that V
    for a, b in zip(runs[0][1:4], runs[1][1:4]):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    # by hand: one step, then F = F0 + 1e-3 * V1 with V1 one reference step of V; the
    # shared F given to the medium is expanded per member and never modified
    _, V1 = gray_scott_step(U, V, F, K)
    gs = medium(grid, 3, F, K, torch.float32, True)
    gs.reset(U=U, V=V)
    F_given = gs.F
    gs.run(1, hook=_hook_feed_from_v, hook_args=(1e-3,))
    assert torch.allclose(gs.F, F + 1e-3 * V1, atol=1e-6) and gs.F.shape == (3, *grid)
    assert torch.equal(gs.K, K.expand(3, *grid)) and torch.equal(F_given, F)


@pytest.mark.slow
@needs_compiler
def test_compiled_snapshots_survive_the_reused_buffers():
    """The compiled path writes into two buffers per field in turn; a V read earlier
    must keep its values however many steps follow."""
    grid = (20, 24)
    U, V, F, K = random_state(2, grid, seed=7, per_member=False, dtype=torch.float64)
    fast, ref = (medium(grid, 2, F, K, torch.float64, c) for c in (True, False))
    snaps = ([], [])
    for gs, kept in zip((fast, ref), snaps):
        gs.reset(U=U, V=V)
        for _ in range(5):
            gs.step(1)
            kept.append(gs.V)
    assert fast.last_path == "compiled"
    for a, b in zip(*snaps):
        assert torch.allclose(a, b, atol=1e-12)
    assert len({s.data_ptr() for s in snaps[0]}) == 5


def test_published_reimplementation_agrees_with_the_reference_step():
    """benchmarks/published.py (conv2d per field) and gray_scott_step (slices) are
    written independently from the same equations: they must agree."""
    from benchmarks.published import Published, run_protocol
    U, V, F, K = random_state(2, (16, 18), seed=8, per_member=False, dtype=torch.float64)
    target = make_pattern("ring", 16, 18, dtype=torch.float64)
    pub = Published(U, V, F, K, target)
    pub.step(7)
    u, v = U, V
    for _ in range(7):
        u, v = gray_scott_step(u, v, F, K)
    assert torch.allclose(pub.U, u, atol=1e-12) and torch.allclose(pub.V, v, atol=1e-12)
    out = run_protocol(grid=32, seed=0, scale=0.02)
    assert set(out) >= {"phase1_scarred", "phase2_control", "phase3_C"}
    assert all(0.0 <= x <= 1.0 + 1e-6 for x in out.values())


# ---- 3D targets and the scar rule in 3D ---------------------------------------------------
def test_3d_patterns_geometry():
    b = make_pattern_3d("ball", 32, 32, 32)
    s = make_pattern_3d("shell", 32, 32, 32)
    c = make_pattern_3d("corner_balls", 32, 32, 32)
    assert b.shape == (32, 32, 32) and torch.equal(b.unique(), torch.tensor([0.0, PEAK]))
    assert b[16, 16, 16] == PEAK and s[16, 16, 16] == 0 and c[8, 8, 8] == PEAK
    assert s.sum() > 0 and (s.bool() & b.bool()).any()      # the shell is the ball's rim
    moved = make_pattern_3d("ball", 32, 32, 32, offset=(3, 0, -2))
    assert torch.equal(moved, torch.roll(b, shifts=(-2, 0, 3), dims=(0, 1, 2)))
    with pytest.raises(ValueError, match="unknown 3D pattern"):
        make_pattern_3d("cube", 8, 8, 8)
    with pytest.raises(ValueError, match="offset"):
        make_pattern_3d("ball", 8, 8, 8, offset=(1, 2))


def test_scar_rule_works_unchanged_in_3d():
    target = make_pattern_3d("ball", 8, 10, 12)
    sim, steps, similarity = train((target / PEAK).expand(2, -1, -1, -1), target, 12,
                                   ScarRule(), every=4, stencil="seven_point")
    assert sim.activity().shape == (2, 8, 10, 12)
    assert similarity.shape == (3, 2) and steps == [4, 8, 12]
    F, K = sim.fields["F"], sim.fields["K"]
    assert (scar_strength(F, K) > 0).all()
    scarred = F[0] > substrate.F0
    assert scarred.any() and not (scarred & (target == 0)).any()   # only where the target is


# ---- the benchmark -----------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_quick_runs_and_never_writes_docs():
    docs = ROOT / "docs" / "performance.md"
    before = docs.read_bytes() if docs.exists() else None
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_substrate", "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"speedup_vs_published_step=\d+(\.\d+)?", last), last
    assert "| grid | batch | dtype | state | path |" in proc.stdout
    assert "| 32x32 | 4 | float32 | scarred | eager |" in proc.stdout
    assert "GPU" in proc.stdout and "wrote" not in proc.stdout
    assert (docs.read_bytes() if docs.exists() else None) == before   # a smoke run
    refused = subprocess.run([sys.executable, "-m", "benchmarks.bench_substrate", "--quick",
                              "--write-docs"], capture_output=True, text=True, timeout=120,
                             cwd=ROOT)
    assert refused.returncode == 2 and "--write-docs needs a full run" in refused.stderr
