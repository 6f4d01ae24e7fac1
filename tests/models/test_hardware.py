"""Device non-ideality models (models/hardware.py) on small hand-made grids, and the
hardware study end to end at a small size."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import hardware as hw
from protocol import Protocol
from tests.schema_check import check_results


def ramp(n=101):
    """g from 0 to 1 in equal steps, as a (1, 1, n) field."""
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64).view(1, 1, n)


def test_conductance_round_trip_and_range():
    P = torch.tensor([0.01, 0.037, 0.08])
    g = hw.to_conductance(P, 0.01, 0.08)
    assert torch.allclose(g, torch.tensor([0.0, 27 / 70, 1.0]))
    assert torch.allclose(hw.from_conductance(g, 0.01, 0.08), P)
    with pytest.raises(ValueError, match="empty"):
        hw.to_conductance(P, 0.08, 0.08)


def test_one_bit_quantisation_leaves_exactly_two_values():
    q = hw.quantise(ramp(), 1)
    assert sorted(q.unique().tolist()) == [0.0, 1.0]
    P = hw.from_conductance(q, 0.01, 0.08)
    assert torch.allclose(P.unique(), torch.tensor([0.01, 0.08], dtype=P.dtype))


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_b_bits_give_2_to_the_b_levels_within_half_a_step(bits):
    g = ramp(1001)
    q = hw.quantise(g, bits)
    assert q.unique().numel() == 2 ** bits
    assert (q - g).abs().max() <= 0.5 / (2 ** bits - 1) + 1e-12
    assert torch.equal(hw.quantise(q, bits), q)   # levels are kept


def test_drift_at_t0_is_the_identity_and_follows_the_power_law():
    g = ramp()
    assert torch.equal(hw.drift(g, 20.0, 20.0, 0.1), g)
    assert torch.equal(hw.drift(g, 5.0, 20.0, 0.1), g)   # before the first read: none yet
    assert torch.allclose(hw.drift(g, 2000.0, 20.0, 0.05), g * 100.0 ** -0.05)
    nu = torch.full_like(g, 0.1)
    assert torch.allclose(hw.drift(g, 2000.0, 20.0, nu), g * 100.0 ** -0.1)


def test_zero_variation_and_zero_write_noise_are_the_identity():
    g = ramp()
    z = torch.randn(g.shape, generator=torch.Generator().manual_seed(0), dtype=g.dtype)
    assert torch.equal(hw.device_variation(g, 0.0, z), g)
    assert torch.equal(hw.write_noise(g, 0.0, z), g)


def test_variation_is_lognormal_with_the_stated_sigma():
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.full_like(z, 0.25)   # far from the clip at 1 for sigma 0.2
    log_factor = torch.log(hw.device_variation(g, 0.2, z) / g)
    assert abs(log_factor.std().item() - 0.2) < 0.005 and abs(log_factor.mean().item()) < 0.005


def test_write_noise_has_the_stated_std():
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noisy = hw.write_noise(torch.full_like(z, 0.5), 0.05, z)
    assert abs(noisy.std().item() - 0.05) < 0.001
    assert noisy.min() >= 0 and noisy.max() <= 1


@pytest.mark.parametrize("mode", ["low", "high", "mixed"])
def test_stuck_fraction_is_respected(mode):
    u = torch.rand(400, 500, generator=torch.Generator().manual_seed(3))
    low, high = hw.stuck_masks(u, 0.1, mode)
    assert not (low & high).any()
    frac = (low | high).float().mean().item()
    assert abs(frac - 0.1) < 0.005   # 200,000 cells: binomial std 0.0007
    g = hw.stuck(torch.full((400, 500), 0.5), low, high)
    assert torch.equal(g == 0, low) and torch.equal(g == 1, high)
    if mode == "mixed":
        assert abs(low.float().mean().item() - 0.05) < 0.004


def test_pcm_model_matches_aihwkit_constants():
    g = torch.tensor([0.0, 1.0])
    std = hw.pcm_programming_std(g)
    assert torch.allclose(std, torch.tensor([0.26348, 0.26348 + 1.9650 - 1.1731]) / 25.0)
    nu = hw.pcm_drift_nu(torch.tensor([1.0, 1e-3]), torch.zeros(2))
    assert torch.allclose(nu, torch.tensor([0.049, min(0.1, -0.0155 * torch.log(
        torch.tensor(1e-3)).item() + 0.0244)]))
    z = torch.zeros(3)
    g = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(hw.pcm_read(g, 0.0, z, z, z), g)   # no noise, read at t0: g


def _uniform_state(n=128, u=0.5, v=0.25):
    return (torch.full((2, n, n), u), torch.full((2, n, n), v),
            torch.full((2, n, n), 0.037), torch.full((2, n, n), 0.06))


def test_dynamics_noise_has_the_stated_std():
    U, V, F, K = _uniform_state()
    sub = Protocol().substrate()
    clean = hw.noisy_recall(U, V, F, K, 1, {1}, sub)[1]
    noisy = hw.noisy_recall(U, V, F, K, 1, {1}, sub, noise_std=torch.tensor([0.0, 0.01]),
                            generator=torch.Generator().manual_seed(4))[1]
    assert torch.equal(noisy[0], clean[0])   # std 0: the clean step
    assert abs((noisy[1] - clean[1]).std().item() - 0.01) < 5e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_path_runs_and_stays_close_for_a_few_steps(dtype):
    U, V, F, K = _uniform_state(32)
    V[:, 10:20, 10:20] = 0.5
    sub = Protocol().substrate()
    ref = hw.noisy_recall(U, V, F, K, 5, {5}, sub)[5]
    low = hw.noisy_recall(U, V, F, K, 5, {5}, sub, dtype=dtype)[5]
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.05


@pytest.mark.slow
def test_hardware_quick_end_to_end(tmp_path):
    out = tmp_path / "hw"
    proc = subprocess.run([sys.executable, "-m", "experiments.hardware", "--quick",
                           "--threads", "1", "--quiet", "--out", str(out)],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = check_results(out / "hardware.json")
    assert res["study"] == "hardware" and res["smoke_run"]
    for rule in ("match_map", "surround_inhibited"):
        r = res["rules"][rule]
        assert set(r["tolerance"]) >= {"bits", "variation", "stuck_low", "dynamics_noise"}
        assert r["groups"]["ideal"][0]["ratio_p2"]["mean"] == pytest.approx(1.0)
    assert (out / "hardware_table.md").is_file() and (out / "hardware_bits.png").is_file()


def test_bad_flag_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.hardware", "--bits", "0"],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--bits" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
