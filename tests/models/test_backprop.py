"""Tests for differentiable.py and the two backprop experiment scripts."""
import json
import math
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from models.differentiable import (
    FitConfig,
    Physics,
    RecoveryObjective,
    as_fields,
    cosine,
    finite_members,
    fit_evolution,
    fit_gradient,
    initial_state,
    log_spectrum_loss,
    param_bounds,
    radial_spectrum,
    radial_spectrum_loss,
    rollout,
    stats_loss,
    to_params,
    to_raw,
)
from substrate import DECAY, STABILITY_LIMIT, STENCIL_BOUND

ROOT = Path(__file__).resolve().parents[2]
SEED_TARGET = (0.16, 0.08, 0.035, 0.065)


def _short_rollout(physics, steps=15, grad_steps=None, checkpoint_every=0, size=8):
    U, V = initial_state([3], size, size, squares=1, size=3)

    def f(p):
        Du, Dv, F, K = as_fields(p)
        return rollout(U, V, F, K, Du, Dv, steps, physics, grad_steps=grad_steps,
                       checkpoint_every=checkpoint_every)[1]
    return f


@pytest.mark.parametrize("physics", [Physics(),  # Yang's: 5-point, no decay, no clamp
                                     Physics("nine_point", DECAY, True)])  # reference
def test_gradient_matches_finite_differences(physics):
    """d/d(Du, Dv, F, K) of a random projection of V after 12 steps, float64."""
    f = _short_rollout(physics, steps=12, size=6)
    w = torch.randn(1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    p = torch.tensor([SEED_TARGET], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: (f(q) * w).sum(), (p,), eps=1e-7, atol=1e-7,
                                    rtol=1e-5)


def test_gradient_of_a_loss_matches_a_central_difference():
    f = _short_rollout(Physics(), steps=30)
    target = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = torch.tensor([SEED_TARGET], dtype=torch.float64, requires_grad=True)
    radial_spectrum_loss(f(p), target).sum().backward()
    for k in range(4):
        h = 1e-6
        e = torch.zeros(1, 4, dtype=torch.float64)
        e[0, k] = h
        with torch.no_grad():
            fd = (radial_spectrum_loss(f(p + e), target) -
                  radial_spectrum_loss(f(p - e), target)).item() / (2 * h)
        assert p.grad[0, k].item() == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_checkpointed_and_plain_bptt_agree():
    target = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for ck in (0, 7):
        p = torch.tensor([SEED_TARGET], dtype=torch.float64, requires_grad=True)
        V = _short_rollout(Physics(), steps=50, grad_steps=30, checkpoint_every=ck)(p)
        stats_loss(V, target).sum().backward()
        grads.append(p.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    assert grads[0].abs().sum() > 0


def test_truncated_bptt_is_a_truncation():
    """grad_steps = steps is full BPTT; fewer steps gives a different (partial) gradient
    but the same forward value."""
    p = torch.tensor([SEED_TARGET], dtype=torch.float64, requires_grad=True)
    full = _short_rollout(Physics(), steps=20)(p)
    trunc = _short_rollout(Physics(), steps=20, grad_steps=5)(p)
    assert torch.equal(full, trunc)
    g_full, = torch.autograd.grad(full.sum(), p)
    g_trunc, = torch.autograd.grad(trunc.sum(), p)
    assert not torch.allclose(g_full, g_trunc)


def test_losses_are_zero_on_self_and_translation_invariant():
    U, V = initial_state([0], 16, 16, squares=2, size=4)
    shifted = V.roll((3, 5), dims=(-2, -1))
    for fn in (radial_spectrum_loss, log_spectrum_loss, stats_loss):
        assert fn(V, V[0]).item() == pytest.approx(0.0, abs=1e-12)
        assert fn(shifted, V[0]).item() == pytest.approx(0.0, abs=1e-9)
        assert fn(torch.zeros_like(V), V[0]).item() > 0
    # rotation by 90 degrees leaves the radial spectrum unchanged
    rot = torch.rot90(V, 1, dims=(-2, -1))
    assert torch.allclose(radial_spectrum(rot), radial_spectrum(V), atol=1e-9)
    assert radial_spectrum(V).shape == (1, 8)


def test_bounds_are_positive_and_stable():
    for stencil in ("five_point", "nine_point"):
        b = param_bounds(Physics(stencil=stencil))
        assert (b[:, 0] > 0).all()
        assert b[0, 1] * STENCIL_BOUND[stencil] < STABILITY_LIMIT
        z = torch.tensor([[-50.0, 50.0, 0.0, 3.0]], dtype=torch.float64)
        p = to_params(z, b)
        assert ((p >= b[:, 0]) & (p <= b[:, 1])).all()
    p = torch.tensor([SEED_TARGET], dtype=torch.float64)
    assert torch.allclose(to_params(to_raw(p, param_bounds()), param_bounds()), p)
    with pytest.raises(ValueError):
        to_raw(torch.tensor([[0.5, 0.08, 0.035, 0.065]], dtype=torch.float64), param_bounds())


def test_nan_guard_triggers_on_a_diverging_parameter_set():
    # Du = 0.3 on the 5-point stencil: dt * Du * 8 = 2.4 > 2, the checkerboard blows up
    loose = torch.tensor([[1e-3, 0.4], [1e-3, 0.4], [1e-3, 0.1], [1e-3, 0.1]],
                         dtype=torch.float64)
    U0, V0 = initial_state([0, 1], 12, 12, squares=1, size=3)
    target = V0[0]
    obj = RecoveryObjective(target, U0, V0, steps=200, loss="combined", grad_steps=20,
                            bounds=loose)
    p = torch.tensor([[0.35, 0.08, 0.035, 0.065], SEED_TARGET], dtype=torch.float64)
    loss, grad, V, ok = obj(to_raw(p, loose))
    assert ok.tolist() == [False, True]
    assert math.isinf(loss[0]) and math.isfinite(loss[1])
    assert torch.isfinite(grad[1]).all()
    assert finite_members(V).tolist() == [False, True]
    # the optimiser rejects the step, cuts the learning rate, logs it and never returns NaN
    logs = []
    res = fit_gradient(obj, to_raw(p[:1], loose), FitConfig(max_iters=3, lr=0.2),
                       log=logs.append)
    assert res["events"] and res["events"][0]["event"] == "non-finite"
    assert res["events"][0]["lr_after"] == pytest.approx(0.1)
    assert any("NaN guard" in m for m in logs)
    assert torch.isfinite(res["params"]).all()


@pytest.mark.slow
def test_recovery_lowers_the_loss_on_a_tiny_grid():
    torch.manual_seed(0)
    H, steps = 16, 150
    Ut, Vt = initial_state([900], H, H, squares=3, size=4)
    Du, Dv, F, K = as_fields(torch.tensor([SEED_TARGET], dtype=torch.float64))
    with torch.no_grad():
        target = rollout(Ut, Vt, F, K, Du, Dv, steps)[1][0]
    U0, V0 = initial_state([1, 2], H, H, squares=3, size=4)  # independent of the target's
    obj = RecoveryObjective(target, U0, V0, steps, loss="stats", grad_steps=30,
                            checkpoint_every=10)
    p0 = torch.tensor([[0.14, 0.09, 0.03, 0.06], [0.18, 0.07, 0.04, 0.062]],
                      dtype=torch.float64)
    res = fit_gradient(obj, to_raw(p0, obj.bounds), FitConfig(max_iters=6, lr=0.1))
    for i in range(2):
        first = res["history"][i][0][1]
        assert res["loss"][i] < first
    assert res["sim_steps"] > 0
    # the ES baseline runs on the same objective and never does worse than its start
    es = fit_evolution(RecoveryObjective(target, U0, V0, steps, loss="stats", bounds=obj.bounds),
                       to_raw(p0, obj.bounds), budget_steps=2 * 4 * steps * 2, popsize=4)
    firsts = torch.tensor([h[0][1] for h in res["history"]], dtype=torch.float64)
    assert (es["loss"] <= firsts + 1e-9).all()


def test_cosine_is_differentiable_and_matches_metrics():
    from metrics import cosine_similarity
    V = torch.rand(3, 6, 6, dtype=torch.float64, requires_grad=True)
    t = torch.rand(6, 6, dtype=torch.float64)
    assert torch.allclose(cosine(V, t), cosine_similarity(V, t))
    cosine(V, t).sum().backward()
    assert torch.isfinite(V.grad).all()


def test_restarts_keep_the_best_point_ever():
    U0, V0 = initial_state([1, 2], 12, 12, squares=2, size=3)
    target = initial_state([9], 12, 12, squares=2, size=3)[1][0]
    obj = RecoveryObjective(target, U0, V0, steps=30, loss="stats", grad_steps=10)
    g = torch.Generator().manual_seed(0)
    restart = lambda i: torch.randn(4, generator=g, dtype=torch.float64)
    p0 = torch.tensor([[0.14, 0.09, 0.03, 0.06], [0.05, 0.05, 0.02, 0.05]],
                      dtype=torch.float64)
    logs = []
    res = fit_gradient(obj, to_raw(p0, obj.bounds), FitConfig(max_iters=12, patience=2),
                       log=logs.append, restart=restart)
    assert sum(res["restarts"]) > 0 and any(m.startswith("restart:") for m in logs)
    for i in range(2):   # the result is the best accepted point over every restart
        accepted = [li for _, li, ok in res["history"][i] if ok]
        assert res["loss"][i] == pytest.approx(min(accepted))
    assert res["stop_reason"] == ["max_iters", "max_iters"]


SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Both scripts' --quick runs, launched together (two cores) as subprocesses."""
    tmp = tmp_path_factory.mktemp("quick")
    jobs = {
        "learn_parameters": ["--targets", "seed001", "--seeds", "2"],
        "learned_scars": ["--capacity", "2"],
    }
    procs = {}
    for script, extra in jobs.items():
        procs[script] = subprocess.Popen(
            [sys.executable, "-m", f"experiments.{script}", "--quick", "--out",
             str(tmp / script), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT)
    out = {}
    for script, p in procs.items():
        stdout, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        assert "SMOKE RUN" in stdout
        res = json.loads((tmp / script / "results.json").read_text())
        jsonschema.validate(res, SCHEMA)
        assert res["study"] == script and res["smoke_run"] is True
        out[script] = (tmp / script, res)
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")], "staging left over"
    return out


@pytest.mark.slow
def test_learn_parameters_quick(quick_runs):
    out, res = quick_runs["learn_parameters"]
    r = res["results"][0]
    assert r["true"] == dict(zip(("Du", "Dv", "F", "K"), SEED_TARGET))
    for method in ("gradient", "evolution"):
        assert len(r[method]["starts"]) == 2
        s = r[method]["starts"][0]
        assert set(s["rel_error"]) == {"Du", "Dv", "F", "K"}
        assert s["initial"]["Du"] == pytest.approx(0.127)
        assert all(math.isfinite(v) for v in s["recovered"].values())
    assert r["evolution"]["sim_steps"] <= r["budget_steps"]
    steps = res["config"]["steps"] + 2 * res["config"]["grad_steps"]
    assert r["gradient"]["sim_steps"] <= r["budget_steps"] + 2 * steps
    for name in ("backprop_loss_curves.png", "backprop_patterns.png",
                 "backprop_pairwise_loss.png", "backprop_trajectory.mp4"):
        assert (out / name).stat().st_size > 0
    assert "combined/gradient" in res["summary"]
    M = res["pairwise_loss"]["radial"]
    assert len(M) == 1 and M[0][0] >= 0
    assert res["config"]["targets"] == ["seed001"] and res["config"]["seeds"] == 2
    assert res["seeds"] == [0, 1] and res["config"]["grid"] == 16   # the quick grid


def _one_line_error(main, argv, capsys):
    from common.cli import run_cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--losses", "pixels"], "unknown loss 'pixels'"),
    (["--losses", "combined,pixels"], "unknown loss 'pixels'"),
    (["--targets", "zebra"], "unknown target 'zebra'"), (["--grid", "4"], "--grid 4"),
    (["--start-spread", "1"], "--start-spread 1.0"), (["--lr", "0"], "--lr 0.0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every -1"), (["--iters", "0"], "--iters 0")])
def test_learn_parameters_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    from experiments import learn_parameters

    err = _one_line_error(learn_parameters.main,
                          ["--quick", *argv, "--out", str(tmp_path / "o")], capsys)
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--capacity", "0"], "--capacity 0"), (["--capacity", "2,5"], "--capacity 5"),
    (["--cue-strength", "0"], "--cue-strength 0.0"), (["--lam", "-1"], "--lam -1.0"),
    (["--test-cues", "0"], "--test-cues 0"), (["--gate", "nan"], "--gate nan")])
def test_learned_scars_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    from experiments import learned_scars

    err = _one_line_error(learned_scars.main, ["--quick", *argv, "--out", str(tmp_path / "o")],
                          capsys)
    assert needle in err


def test_quick_keeps_explicit_flags_and_reads_comma_lists():
    from common import cli
    from experiments import learn_parameters as lp
    from experiments import learned_scars as ls

    args = cli.parse(ls.Args, cli.split_commas(["--quick", "--seeds", "3", "--capacity",
                                                "3,1"], "--capacity"), quick=ls.QUICK)
    assert args.seeds == 3 and args.capacity == (1, 3)              # explicit flags win
    assert args.grid == ls.QUICK["grid"] and args.iters == ls.QUICK["iters"]
    args = cli.parse(lp.Args, cli.split_commas(["--quick", "--losses", "log2d,radial",
                                                "--grid", "24"], "--losses"), quick=lp.QUICK)
    assert args.losses == ("log2d", "radial") and args.grid == 24
    assert args.targets == lp.QUICK["targets"] and args.steps == lp.QUICK["steps"]
    from models.differentiable import LOSSES
    assert set(lp.LOSS_NAMES) == set(LOSSES)      # the names --help lists


@pytest.mark.slow
def test_learned_scars_quick(quick_runs):
    out, res = quick_runs["learned_scars"]
    methods = {r["method"] for r in res["results"]}
    assert methods == {"learned", "match_map", "no_scar"}
    for r in res["results"]:
        assert 0 <= r["recall_cosine"]["mean"] <= 1
        assert "discrimination" in r
    learned = next(r for r in res["results"] if r["method"] == "learned")
    grid = res["config"]["grid"]
    # F, K stay inside the storage rule's bounds, so the scar size is bounded by the box
    bound = 2 * grid * grid * (max(0.08 - 0.037, 0.037 - 0.01) + max(0.08 - 0.06, 0.06 - 0.03))
    assert 0 <= learned["scar_size"]["mean"] <= bound
    assert learned["history"] and all(math.isfinite(v) for v in learned["history"][-1]["loss"])
    no_scar = next(r for r in res["results"] if r["method"] == "no_scar")
    assert no_scar["scar_size"]["mean"] == 0
    assert res["config"]["capacity"] == [2] and res["config"]["scar_rule"]["rule"] == "match_map"
    assert (out / "backprop_scars.png").stat().st_size > 0
    assert (out / "backprop_scar_capacity.png").stat().st_size > 0


def test_pattern_class_on_hand_made_fields():
    from experiments import learn_parameters as lp
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    spots = torch.zeros(32, 32)
    for cy, cx in ((5, 5), (5, 20), (20, 5), (20, 20), (0, 12)):  # (0, 12) wraps the edge
        dy = torch.remainder(y - cy + 16, 32) - 16
        spots[dy ** 2 + (x - cx) ** 2 < 9] = 0.4
    assert lp.pattern_class(spots.numpy()) == "spots"
    lab, n = lp.periodic_components(spots.numpy() > 0.2)
    assert n == 5  # the spot across the top/bottom edge is one component
    stripes = torch.zeros(32, 32)
    for r in (2, 10, 18, 26):
        stripes[r:r + 3, 4:28] = 0.4
    assert lp.pattern_class(stripes.numpy()) == "stripes"
    maze = torch.zeros(32, 32)
    maze[::8, :] = 0.4
    maze[:, ::8] = 0.4
    assert lp.pattern_class(maze.numpy()) == "labyrinth"
    assert lp.pattern_class(torch.full((32, 32), 0.2).numpy()) == "uniform"


def test_adam_step_matches_torch_optim_adam():
    """adam.py (written out to avoid importing torch.optim) is torch.optim.Adam's update."""
    from models.adam import adam_state, adam_step
    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, 4, generator=g, dtype=torch.float64)
    ours = torch.zeros(5, 4, dtype=torch.float64, requires_grad=True)
    ref = ours.detach().clone().requires_grad_(True)
    state = adam_state([ours])
    opt = torch.optim.Adam([ref], lr=0.05)
    for t in range(1, 31):
        loss = ((ours - target) ** 4).sum()
        (grad,) = torch.autograd.grad(loss, [ours])
        adam_step([ours], [grad], state, t, lr=0.05)
        opt.zero_grad()
        ((ref - target) ** 4).sum().backward()
        opt.step()
    assert torch.allclose(ours, ref, atol=1e-10)
    assert not torch.allclose(ours, torch.zeros_like(ours))   # it moved
    frozen = torch.ones(3, dtype=torch.float64)
    adam_step([frozen], [None], adam_state([frozen]), 1, lr=1.0)
    assert torch.equal(frozen, torch.ones(3, dtype=torch.float64))
