"""Device non-idealities of a scar stored in hardware, as pure functions (tensors in, out).

What "G" is. Each cell's feed F and kill K are each set by one programmable device (a
resistive or phase-change cell) whose conductance G maps linearly onto the parameter's
programmable range [P_lo, P_hi] (the storage rule's clamp range):

    P = P_lo + (P_hi - P_lo) * g,    g = G / G_max in [0, 1]

so g = 0 is the range's low end (a device at its lowest conductance) and g = 1 its high
end. Every model below acts on g (`to_conductance`, `from_conductance` convert); the
unscarred cells are devices too, so they suffer the same non-idealities.

Models (each the identity at its ideal setting; noise is passed in as standard-normal or
uniform draws, so the functions stay pure and testable):
  quantise           g on 2^b equally spaced levels over [0, 1] (b bits over the range)
  write_noise        g + std * z (programming noise as a fraction of the range), clipped
  device_variation   g * exp(sigma * z): a lognormal device-to-device gain, clipped
  drift              g * (t / t0)^(-nu): the phase-change power law after programming
  stuck              g = 0 (stuck at the range's low end) or 1 (high end) on masked cells
  pcm_*              the state-dependent programming noise, drift exponent and 1/f read
                     noise of the phase-change model that IBM's aihwkit ships
                     (PCMLikeNoiseModel; Nandakumar et al. 2019, Joshi et al. 2020), in
                     units of g (aihwkit's g_max = 25 uS is g = 1)
Read and dynamics noise and limited precision act on the medium's state, not on g:
`noisy_recall` runs the Gray-Scott step in any float type with additive noise on U and V
after every update.
"""
from __future__ import annotations

import math

import torch

# aihwkit PCMLikeNoiseModel constants (aihwkit/inference/noise/pcm.py, version 1.2.0)
PCM_G_MAX_US = 25.0                             # conductance of g = 1, micro-siemens
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)     # programming-noise std polynomial, uS
PCM_T0_S = 20.0                                 # first read after programming, s
PCM_T_READ_S = 250e-9                           # duration of one read, s
PCM_ZERO_CLIP = 1e-7                            # g below this counts as this in log(g)


def to_conductance(P: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The normalised conductance g in [0, 1] that sets parameter P on [lo, hi]."""
    if not hi > lo:
        raise ValueError(f"programmable range [{lo}, {hi}] is empty")
    return ((P - lo) / (hi - lo)).clamp(0.0, 1.0)


def from_conductance(g: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The parameter set by normalised conductance g on [lo, hi]."""
    return lo + (hi - lo) * g


def quantise(g: torch.Tensor, bits: int) -> torch.Tensor:
    """g rounded to the nearest of 2^bits equally spaced levels on [0, 1] (both ends
    included: 1 bit leaves exactly the values 0 and 1)."""
    if int(bits) != bits or bits < 1:
        raise ValueError(f"bits={bits} must be a positive integer")
    levels = 2 ** int(bits) - 1
    return torch.round(g.clamp(0.0, 1.0) * levels) / levels


def write_noise(g: torch.Tensor, std: float, z: torch.Tensor) -> torch.Tensor:
    """Programming noise: g + std * z, z standard normal, clipped to the range."""
    return (g + std * z).clamp(0.0, 1.0)


def device_variation(g: torch.Tensor, sigma: float, z: torch.Tensor) -> torch.Tensor:
    """Device-to-device variation: g times a lognormal factor exp(sigma * z) (median 1),
    z standard normal; clipped to the range (a device cannot exceed G_max)."""
    return (g * torch.exp(sigma * z)).clamp(0.0, 1.0)


def drift_factor(t, t0: float, nu):
    """(t / t0)^(-nu) for t >= t0 (1 before the first read t0). nu: float or tensor."""
    if t0 <= 0:
        raise ValueError(f"t0={t0} must be > 0")
    ratio = max(float(t), t0) / t0
    if isinstance(nu, torch.Tensor):
        return torch.exp(-nu * math.log(ratio))
    return ratio ** (-float(nu))


def drift_time(factor: float, t0: float, nu: float) -> float:
    """The read-out time t (s) at which drift has scaled g by `factor`: t0 factor^(-1/nu)."""
    if not (0 < factor <= 1 and nu > 0):
        raise ValueError(f"factor={factor} must be in (0, 1] and nu={nu} > 0")
    return t0 * math.exp(-math.log(factor) / nu)


def drift(g: torch.Tensor, t: float, t0: float, nu) -> torch.Tensor:
    """Conductance drift after programming: g(t) = g(t0) * (t / t0)^(-nu)."""
    return g * drift_factor(t, t0, nu)


def stuck_masks(u: torch.Tensor, fraction: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stuck low, stuck high) bool masks from uniform draws u in [0, 1): a cell is stuck
    when u < fraction; mode "low", "high" or "mixed" (half of each)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"stuck fraction={fraction} must be in [0, 1]")
    hit = u < fraction
    if mode == "low":
        return hit, torch.zeros_like(hit)
    if mode == "high":
        return torch.zeros_like(hit), hit
    if mode == "mixed":
        return u < fraction / 2, hit & (u >= fraction / 2)
    raise ValueError(f"stuck mode={mode!r} must be low, high or mixed")


def stuck(g: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """g with the cells of `low` at 0 and of `high` at 1."""
    g = torch.where(low, torch.zeros_like(g), g)
    return torch.where(high, torch.ones_like(g), g)


def pcm_programming_std(g: torch.Tensor) -> torch.Tensor:
    """aihwkit's PCM programming-noise std at target g, in units of g (1-4% of G_max)."""
    std = torch.full_like(g, PCM_PROG_COEFF[0])
    power = torch.ones_like(g)
    for c in PCM_PROG_COEFF[1:]:
        power = power * g
        std = std + c * power
    return std / PCM_G_MAX_US


def pcm_drift_nu(g: torch.Tensor, z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """aihwkit's state-dependent PCM drift exponent: nu = |mu(g) + sigma(g) * z| with
    mu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1), sigma = clip(-0.0125 ln g - 0.0059,
    0.008, 0.045), z standard normal; scale multiplies nu (aihwkit's drift_scale)."""
    log_g = torch.log(g.abs().clamp_min(PCM_ZERO_CLIP))
    mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
    sigma = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
    return (mu + sigma * z).abs() * scale


def pcm_read_noise_std(g: torch.Tensor, t: float, t_read: float = PCM_T_READ_S) -> torch.Tensor:
    """aihwkit's accumulated 1/f read noise at time t after programming, relative to |g|:
    q_s(g) * sqrt(ln((t + t_read) / (2 t_read))), q_s = min(0.0088 / g^0.65, 0.2)."""
    if not t >= t_read:
        raise ValueError(f"read time t={t} s must be >= t_read={t_read} s")
    q_s = (0.0088 / g.abs().pow(0.65).clamp_min(1e-3)).clamp(max=0.2)
    return q_s * math.sqrt(math.log((t + t_read) / (2 * t_read)))


def pcm_read(g: torch.Tensor, t: float, z_prog: torch.Tensor, z_nu: torch.Tensor,
             z_read: torch.Tensor, t0: float = PCM_T0_S) -> torch.Tensor:
    """aihwkit's PCM inference chain on target g, read at time t (s) after programming:
    programming noise, state-dependent drift from t0, 1/f read noise; clipped to [0, 1].
    As in aihwkit, t counts from t0 (the read is at t0 + t, and so is the 1/f noise's)."""
    g_prog = (g + pcm_programming_std(g) * z_prog).clamp_min(0.0)
    g_drift = drift(g_prog, t0 + t, t0, pcm_drift_nu(g, z_nu))
    g_read = g_drift + g_drift.abs() * pcm_read_noise_std(g_prog, t0 + t) * z_read
    return g_read.clamp(0.0, 1.0)


# ---- the medium with noisy, low-precision arithmetic ----------------------------------------

def noisy_recall(U: torch.Tensor, V: torch.Tensor, F: torch.Tensor, K: torch.Tensor,
                 steps: int, read_at, substrate: dict, noise_std=0.0, dtype=torch.float32,
                 generator: torch.Generator | None = None, inhibition=None) -> dict:
    """Run the Gray-Scott medium `steps` steps with U, V, F, K and all arithmetic in
    `dtype`, adding N(0, noise_std^2) to U and to V after every update (then clipping to
    [0, 1]); noise_std a float or (B,) tensor. inhibition: a recall's medium option
    (StorageRule.recall_inhibition), applied after every step as on the engine's path.
    Returns {step: V as float32} for every step in read_at."""
    from substrate import gray_scott_step

    U, V, F, K = (x.to(dtype) for x in (U, V, F, K))
    std = torch.as_tensor(noise_std, dtype=torch.float32).reshape(-1, *([1] * (V.dim() - 1)))
    noisy = bool((std > 0).any())
    std = std.to(dtype)
    F_now, reads = F, {}
    for step in range(1, int(steps) + 1):
        U, V = gray_scott_step(U, V, F_now, K, **substrate)
        if noisy:
            zU = torch.randn(U.shape, generator=generator, dtype=torch.float32).to(dtype)
            zV = torch.randn(V.shape, generator=generator, dtype=torch.float32).to(dtype)
            U = (U + std * zU).clamp(0.0, 1.0)
            V = (V + std * zV).clamp(0.0, 1.0)
        if inhibition is not None:
            F_now = inhibition.feed(V, F)
        if step in read_at:
            reads[step] = V.to(torch.float32)
    return reads
