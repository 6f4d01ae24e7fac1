"""The hand-written CPU kernel (common/cpu_kernel.py): the numpy float64 reference, bit
for bit the eager step, quiet tiles skipped without changing a bit, blocking in time
without changing a bit, the subnormal flush, both dtypes and stencils, the fused feed
inhibition, and the fall-back for a hook it cannot fuse. Small grids; the kernel is
compiled once per dtype and cached on disk by numba."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import substrate
from substrate import GrayScott, SimulationError, gray_scott_step
from tests import reference_numpy

from common import cpu_kernel as ck

STENCIL_CONSTANTS = {"nine_point": (0.16, 0.08), "five_point": (0.04, 0.02)}


def random_state(B, H, W, dtype, seed=0, quiet_rows=0, per_member=True):
    """Random U, V and per-cell F, K; the first quiet_rows rows at the fixed point
    U = 1, V = 0, and the lower right corner dead (V = 0, U a few ulps below 1)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.rand((B, H, W), generator=g, dtype=torch.float64)
    V = 0.5 * torch.rand((B, H, W), generator=g, dtype=torch.float64)
    fshape = (B, H, W) if per_member else (H, W)
    F = 0.01 + 0.07 * torch.rand(fshape, generator=g, dtype=torch.float64)
    K = 0.03 + 0.05 * torch.rand(fshape, generator=g, dtype=torch.float64)
    U, V, F, K = (t.to(dtype) for t in (U, V, F, K))
    U[:, :quiet_rows], V[:, :quiet_rows] = 1.0, 0.0
    corner = (slice(None), slice(H // 2, None), slice(W // 2, None))
    U[corner] = 1.0 - 3 * torch.finfo(dtype).eps / 2
    V[corner] = 0.0
    return U, V, F, K


def kernel_medium(U, V, F, K, stencil="nine_point", compile="auto"):
    B, H, W = U.shape
    Du, Dv = STENCIL_CONSTANTS[stencil]
    gs = GrayScott(H, W, batch=B, F=F, K=K, Du=Du, Dv=Dv, stencil=stencil, device="cpu",
                   dtype=U.dtype, compile=compile)
    gs.reset(U=U, V=V)
    return gs


def eager_steps(U, V, F, K, stencil, steps):
    Du, Dv = STENCIL_CONSTANTS[stencil]
    for _ in range(steps):
        U, V = gray_scott_step(U, V, F, K, Du, Dv, stencil=stencil)
    return U, V


@pytest.mark.slow
@pytest.mark.parametrize("stencil", ["nine_point", "five_point"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_matches_the_numpy_float64_reference(stencil, dtype):
    """Random per-cell F, K: the kernel against tests/reference_numpy.py (float64,
    np.roll), within float32 rounding in float32 and 1e-12 in float64."""
    U, V, F, K = random_state(2, 12, 10, torch.float64, seed=1)
    gs = kernel_medium(*(t.to(dtype) for t in (U, V, F, K)), stencil=stencil)
    gs.step(5)
    assert gs.last_path == "kernel"
    Du, Dv = STENCIL_CONSTANTS[stencil]
    Ur, Vr = U.numpy(), V.numpy()
    for _ in range(5):
        Ur, Vr = reference_numpy.step(Ur, Vr, F.numpy(), K.numpy(), Du, Dv, stencil=stencil)
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(gs.U.double().numpy(), Ur, atol=tol)
    np.testing.assert_allclose(gs.V.double().numpy(), Vr, atol=tol)


@pytest.mark.parametrize("stencil", ["nine_point", "five_point"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch, per_member", [(1, False), (3, True), (4, False)])
def test_kernel_is_bit_identical_to_the_eager_step(stencil, dtype, batch, per_member):
    """Batch 1 and 3 share each step's tiles among the threads, batch 4 gives whole
    members to threads; shared and per-member F, K; quiet rows and a dead corner so
    that tiles are skipped. Every value equals the eager step's, bit for bit."""
    U, V, F, K = random_state(batch, 20, 70, dtype, seed=2, quiet_rows=8,
                              per_member=per_member)
    gs = kernel_medium(U, V, F, K, stencil)
    gs.step(13)
    assert gs.last_path == "kernel"
    U_ref, V_ref = eager_steps(U, V, F, K, stencil, 13)
    assert torch.equal(gs.U, U_ref) and torch.equal(gs.V, V_ref)


def _raw(U, V, F, K, steps, tile, every_step_everything=False, members=None):
    """Run the kernel's drivers directly: (U, V, flags of the last step)."""
    A = [U.numpy().copy(), V.numpy().copy()]
    Bf = [np.empty_like(A[0]), np.empty_like(A[1])]
    state = ck.State(U.shape[0], U.shape[1], U.shape[2], U.dtype, tile)
    args = ck.arguments(U.dtype, 0.16, 0.08, 1.0, 0.9995, "nine_point", True,
                        substrate.FLUSH_BELOW, None)
    driver = {None: ck.run, True: ck.run_members, False: ck.run_tiles}[members]
    for s in range(1, steps + 1) if every_step_everything or members is not None else [1]:
        if every_step_everything:
            state.step_everything()
        first, last = (s, s) if every_step_everything or members is not None else (1, steps)
        if driver is ck.run:
            ck.run(*A, *Bf, F.numpy(), K.numpy(), first, last, state, args)
        else:
            driver(*A, *Bf, F.numpy(), K.numpy(), first, last, state.changed, state.vsum,
                   state.scale, state.shape, *args)
    out = Bf if steps % 2 else A
    return out[0], out[1], state.changed[:, steps % 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quiet_skipping_is_bit_identical_to_stepping_every_tile(dtype):
    """A random state with quiet regions: with skipping, some tiles are skipped (the
    test would be empty otherwise) and every value equals stepping every tile."""
    U, V, F, K = random_state(2, 48, 40, dtype, seed=3, quiet_rows=36)
    U_skip, V_skip, flags = _raw(U, V, F, K, 10, (4, 8))
    U_all, V_all, _ = _raw(U, V, F, K, 10, (4, 8), every_step_everything=True)
    assert not flags.all(), "no tile was quiet: the test checks nothing"
    assert np.array_equal(U_skip, U_all) and np.array_equal(V_skip, V_all)


def test_the_fixed_point_is_exact_for_any_feed_and_kill():
    """U = 1, V = 0 stays exactly so under the project's own step (decay and clamp
    included) for any F, K in range and both stencils: why a quiet tile needs no step."""
    U, V = torch.ones(1, 6, 6), torch.zeros(1, 6, 6)
    F, K = torch.rand(1, 6, 6), torch.rand(1, 6, 6)
    for stencil in ("nine_point", "five_point"):
        U1, V1 = eager_steps(U, V, F, K, stencil, 1)
        assert torch.equal(U1, U) and torch.equal(V1, V)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocking_in_time_is_bit_identical_to_stepping_the_batch(dtype):
    """Whole members through many steps per call (run_members) against the batch one
    step at a time (run_tiles), and a run cut by records against one without."""
    U, V, F, K = random_state(3, 16, 24, dtype, seed=4, quiet_rows=4)
    blocked = _raw(U, V, F, K, 11, (4, 8))
    U_m, V_m, _ = _raw(U, V, F, K, 11, (4, 8), members=True)
    U_t, V_t, _ = _raw(U, V, F, K, 11, (4, 8), members=False)
    assert np.array_equal(U_m, U_t) and np.array_equal(V_m, V_t)
    assert np.array_equal(blocked[0], U_t) and np.array_equal(blocked[1], V_t)
    gs, recorded = kernel_medium(U, V, F, K), kernel_medium(U, V, F, K)
    gs.step(11)
    seen = []
    recorded.run(11, record_every=3, on_record=lambda s, U_, V_, out: seen.append(s))
    assert seen == [3, 6, 9, 11]
    assert torch.equal(gs.U, recorded.U) and torch.equal(gs.V, recorded.V)
    assert torch.equal(gs.U, torch.from_numpy(U_t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subnormals_are_flushed(dtype):
    tiny = torch.finfo(dtype).tiny
    U, V, F, K = random_state(2, 10, 12, dtype, seed=5)
    V = torch.full_like(V, tiny / 4)                  # subnormal
    V.view(2, -1)[:, ::3] = tiny * 1e3                # normal, but V * V is not
    V.view(2, -1)[:, 1::7] = 1e-30
    V[:, :3, :3] = 0.4                                # a live patch
    gs = kernel_medium(U, V, F, K)
    gs.step(1)
    assert gs.last_path == "kernel"
    for X in (gs.U, gs.V):
        assert X[X != 0].abs().min() >= substrate.FLUSH_BELOW
    assert (gs.V[:, :3, :3] > 0).any()


def eager_and_kernel_runs(U, V, F, K, inhibition, steps):
    """The same feed inhibition run eagerly (its hook after every step) and on the kernel
    (fused into the step), both from F_base = F; the kernel run is checked to be one."""
    runs = []
    for compile in (False, "auto"):
        gs = kernel_medium(U, V, F, K, compile=compile)
        gs.run(steps, hook=inhibition.epilogue, hook_args=(F.clone(),))
        runs.append(gs)
    assert runs[1].last_path == "kernel"
    return runs


def test_fused_feed_inhibition_matches_its_hook():
    """GlobalInhibition runs inside the kernel: the same state as the eager hook, to
    float32 rounding of the mean (summed in float64 here), exactly while the feed
    factor is clamped; F comes back as F_base * factor."""
    from scarring import GlobalInhibition
    U, V, F, K = random_state(3, 16, 20, torch.float32, seed=6, quiet_rows=6)
    V[1] *= 0.05   # member 1 below the set point, 0 and 2 partly inhibited
    for gain, exact in ((5.0, False), (0.0, True)):
        runs = eager_and_kernel_runs(U, V, F, K, GlobalInhibition(gain=gain, set_point=0.02), 9)
        for name in "UVF":
            a, b = getattr(runs[0], name), getattr(runs[1], name)
            assert torch.equal(a, b) if exact else torch.allclose(a, b, atol=1e-5), name


def test_fused_area_inhibition_matches_its_hook_bit_for_bit():
    """The lit-area (k-winner) inhibition runs inside the kernel: it counts lit cells
    exactly, so the state equals the eager hook's bit for bit, in members above the
    area (feed cut), partly above and below it (feed untouched)."""
    from models.media import AreaInhibition
    U, V, F, K = random_state(3, 16, 32, torch.float32, seed=8, quiet_rows=4)
    V[1] *= 0.1    # member 1: no lit cells, the feed stays
    V[2, 8:] = 0.0
    runs = eager_and_kernel_runs(U, V, F, K, AreaInhibition(area=0.2, lit=0.25, gain=1.5), 12)
    factor = runs[0].F[:, 0, 0] / F[:, 0, 0]
    assert factor[1] == 1 and factor[0] < 1          # the cases the test means to cover
    for name in "UVF":
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name


@pytest.mark.parametrize("batch", [1, 4])      # tiles shared by the threads; whole members
@pytest.mark.parametrize("scar_decay", [0.0, 0.3])
def test_fused_scar_rule_matches_its_hook_bit_for_bit(batch, scar_decay):
    """The published rule (scarring.ScarRule) runs inside the kernel: U, V, F, K equal
    the eager hook's bit for bit, with members above and below the gate, clamps that
    cut the starting F, K, a target per member or shared, and the hook's similarity
    handed to on_record at every record."""
    from scarring import ScarRule, _scar_epilogue
    U, V, F, K = random_state(batch, 16, 24, torch.float32, seed=11)
    g = torch.Generator().manual_seed(12)
    target = (torch.rand((batch, 16, 24), generator=g) > 0.6).float()
    target[0] = (V[0] > 0.2).float()          # member 0 starts near its target
    rule = ScarRule(strength=0.004, gate=0.6, F_max=0.07, K_min=0.035,
                    scar_decay=scar_decay)
    for shared in (False, True):
        t = target[0] if shared else target
        runs = []
        for compile in (False, "auto"):
            gs = kernel_medium(U, V, F, K, compile=compile)
            outs = {}
            gs.run(8, hook=_scar_epilogue, hook_args=(t, rule, 2), record_every=3,
                   on_record=lambda i, U_, V_, out, o=outs: o.update({i: out.clone()}))
            runs.append((gs, outs))
        (eager, eager_outs), (kernel, kernel_outs) = runs
        assert kernel.last_path == "kernel"
        sims = torch.stack(list(eager_outs.values()))
        assert (sims - rule.gate).abs().min() > 1e-3    # no gate decision on a last bit
        if not shared and batch > 1:
            assert (sims > rule.gate).any() and (sims < rule.gate).any()
        assert (kernel.F != F.expand_as(kernel.F)).any()   # it scarred (or clamped)
        for name in "UVFK":
            assert torch.equal(getattr(eager, name), getattr(kernel, name)), name
        assert sorted(eager_outs) == sorted(kernel_outs) == [3, 6, 8]
        for i in eager_outs:
            assert torch.equal(eager_outs[i], kernel_outs[i])


def test_the_published_training_runs_on_the_kernel(monkeypatch):
    """A study's training with the published rule takes the kernel: no compiled or eager
    step, so no compiler start-up."""
    import patterns
    from protocol import Protocol
    from scarring import Study

    paths = []
    real = GrayScott._finish_run
    monkeypatch.setattr(GrayScott, "_finish_run",
                        lambda self, steps, *r: (paths.append(r[-1]), real(self, steps, *r)))
    target = torch.as_tensor(patterns.make_pattern("square_spots", 32, 32))[None]
    Study(Protocol(grid=32)).store(target, [0, 1], 6)
    assert paths and set(paths) == {"kernel"}


def test_a_rule_the_kernel_does_not_fuse_takes_the_compiled_or_eager_path():
    """Only the published rule is fused: a subclass (whose update may differ) is not."""
    from dataclasses import dataclass

    from scarring import ScarRule, _scar_epilogue

    @dataclass(frozen=True)
    class Halved(ScarRule):
        def update(self, V, target, F, K, similarity):
            F2, K2 = super().update(V, target, F, K, similarity)
            return (F + F2) / 2, (K + K2) / 2

    U, V, F, K = random_state(2, 8, 12, torch.float32, seed=13)
    gs = kernel_medium(U, V, F, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs.run(2, hook=_scar_epilogue, hook_args=(V[0] > 0.2, Halved(), 2))
    assert gs.last_path != "kernel"


def test_a_hook_it_cannot_fuse_falls_back_and_says_so_once():
    def hook(V, F, K):
        return F * 1.0, K, V.mean()

    U, V, F, K = random_state(2, 8, 8, torch.float32, seed=7)
    substrate._KERNEL_DECLINED.discard(hook.__qualname__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            gs = kernel_medium(U, V, F, K)
            gs.run(2, hook=hook)
            assert gs.last_path != "kernel"
    assert sum("does not fuse" in str(w.message) for w in caught) == 1


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("SUBSTRATE_NO_KERNEL", "1")
    gs = GrayScott(8, 8, device="cpu", compile="auto")
    gs.step(1)
    assert gs.last_path != "kernel"


def test_a_blow_up_on_the_kernel_names_its_step():
    V = torch.zeros(1, 8, 8)
    V[0, 3, 3] = 2.0
    gs = GrayScott(8, 8, clamp=False, device="cpu", compile="auto")
    gs.reset(V=V)
    with pytest.raises(SimulationError, match=r"first at step \d+"):
        gs.step(40)
    assert gs.last_path is None and torch.equal(gs.V, V)


def _blocked(U, V, F, K, stencil, steps, block, cuts=(), driver=None, everything=False):
    """Run the kernel with blocking in time block = (k, band rows): (U, V, last block's
    group flags). cuts: the steps after which a call ends (records); driver: call
    run_members_blocked or run_bands_blocked directly; everything: every step computes
    every cell (no skipping), one step per call."""
    A = [U.numpy().copy(), V.numpy().copy()]
    Bf = [np.empty_like(A[0]), np.empty_like(A[1])]
    state = ck.State(*U.shape, U.dtype, block=block)
    Du, Dv = STENCIL_CONSTANTS[stencil]
    args = ck.arguments(U.dtype, Du, Dv, 1.0, 0.9995, stencil, True,
                        substrate.FLUSH_BELOW, None)
    ends = list(range(1, steps + 1)) if everything else [*cuts, steps]
    for first, last in zip([1] + [e + 1 for e in ends[:-1]], ends):
        if everything:
            state.step_everything()
        if driver is None:
            ck.run(*A, *Bf, F.numpy(), K.numpy(), first, last, state, args)
        else:
            nine, w, c, flags, _, _ = args
            extra = (2,) if driver is ck.run_bands_blocked else ()
            driver(*A, *Bf, F.numpy(), K.numpy(), first, last, state.group_changed,
                   *block, nine, w, c, flags, *extra)
    out = Bf if steps % 2 else A
    return out[0], out[1], state.group_changed[:, (steps + 1) % 2]


@pytest.mark.parametrize("stencil", ["nine_point", "five_point"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_steps_are_bit_identical_to_single_steps(stencil, dtype):
    """k steps per band with a k-row halo (periodic edges), quiet groups skipped, against
    one step at a time computing every cell: random per-cell, per-member F, K, a quiet
    band and a dead corner; both drivers, band heights that do and do not divide the
    grid, odd and even k, runs cut by records."""
    U, V, F, K = random_state(3, 48, 20, dtype, seed=8, quiet_rows=36)
    U_ref, V_ref, _ = _blocked(U, V, F, K, stencil, 10, (1, 8), everything=True)
    quiet = False
    for block, cuts, driver in (((3, 8), (), None), ((3, 20), (4,), ck.run_members_blocked),
                                ((5, 12), (4, 7), ck.run_bands_blocked),
                                ((4, 4), (6,), None), ((9, 48), (), None)):
        U_b, V_b, flags = _blocked(U, V, F, K, stencil, 10, block, cuts, driver)
        assert np.array_equal(U_b, U_ref) and np.array_equal(V_b, V_ref), block
        quiet |= not flags.all()
    assert quiet, "no group was quiet: the skipping is not tested"


def test_the_medium_blocks_in_time_except_under_the_fused_feed(monkeypatch):
    """GrayScott on the kernel with k = 3 (BLOCK) steps exactly as the eager step; the
    fused feed inhibition needs the mean of V after every step, so it runs one step at
    a time: the same result as with k = 1."""
    from scarring import GlobalInhibition
    U, V, F, K = random_state(2, 24, 16, torch.float32, seed=9, quiet_rows=8)
    runs = {}
    for k in (1, 3):
        monkeypatch.setattr(ck, "BLOCK", (k, 8))
        monkeypatch.setattr(ck, "MEMBER_IN_CACHE_CELLS", 0)
        gs = kernel_medium(U, V, F, K)
        gs.run(11, record_every=4, on_record=lambda *a: None)
        assert gs.last_path == "kernel"
        fed = kernel_medium(U, V, F, K)
        fed.run(7, hook=GlobalInhibition(gain=5.0, set_point=0.02).epilogue,
                hook_args=(F.clone(),))
        runs[k] = (gs.U, gs.V, fed.U, fed.V)
    U_ref, V_ref = eager_steps(U, V, F, K, "nine_point", 11)
    assert torch.equal(runs[3][0], U_ref) and torch.equal(runs[3][1], V_ref)
    assert all(torch.equal(a, b) for a, b in zip(runs[1][2:], runs[3][2:]))


def test_the_blocking_benchmark_runs_and_refuses_bad_rows(capsys):
    """benchmarks/blocking.py end to end at a tiny size; a band height that is not a
    multiple of the skip groups' is refused in one line (exit 2)."""
    from benchmarks import blocking
    blocking.main(["--quick", "--threads", "1"])
    assert "| 32x32 | 4 | quiet |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        blocking.main(["--rows", "6"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--rows 6" in err and len(err.splitlines()) == 1


def test_numba_keeps_its_blas_probe_for_everyone_else():
    """The kernel skips numba's import-time BLAS probe only (it imports scipy.linalg):
    numba's answer is the one the probe gives with scipy installed, and the probe itself
    is numba's own again for any code that compiles a BLAS call."""
    from numba.np import arraymath, linalg
    assert arraymath._HAVE_BLAS
    assert arraymath.ensure_blas is linalg.ensure_blas
    assert linalg.ensure_blas.__module__ == "numba.np.linalg"


@pytest.mark.slow
def test_a_fresh_process_runs_the_kernel_without_importing_scipy_linalg():
    import subprocess
    import sys
    code = ("import sys, substrate; gs = substrate.GrayScott(16, 16, batch=2); gs.run(1); "
            "print(gs.last_path, 'scipy.linalg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(substrate.__file__).parent, timeout=300)
    assert out.stdout.split() == ["kernel", "False"], out.stderr[-2000:]
