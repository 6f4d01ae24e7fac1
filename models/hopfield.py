"""Hopfield networks: the associative memories scarring is compared with.

Patterns are stored as the rows of P (k, N), N = H * W cells. No N x N weight matrix is
ever formed: the classical field W s = (1/N) (P^T P - k I) s is computed as
(1/N) (P^T (P s) - k s), which costs O(k N) per update instead of O(N^2) memory.

Classical (Hopfield 1982): bipolar states s in {-1, +1}^N, Hebbian outer-product weights
W = (1/N) sum_mu xi_mu xi_mu^T with zero diagonal, updates s_i <- sign(h_i) either all at
once (synchronous) or one cell at a time in random order (asynchronous; the energy never
rises). A zero field keeps the old state. Capacity for random unbiased patterns is about
0.138 N.
Images are sparse (mostly background), so their +-1 codes share most cells and the plain
rule has one dominant mixture attractor; `centred=True` uses the covariance rule (each
row minus its mean), the standard fix for biased patterns.

Modern continuous (Ramsauer et al. 2020, "Hopfield networks is all you need"):
xi_new = P^T softmax(beta P xi), the paper's update with the stored patterns as the
columns of X = P^T and the raw dot product; large beta retrieves the stored pattern with
the largest overlap in one step. Storage grows exponentially with N.

Images <-> states: a target (0 or PEAK) becomes +1 inside the shape and -1 outside
(`to_bipolar`); a cue is binarised at an automatic threshold (`binarize`: the two-means /
isodata threshold of its values, since a 15% cue never reaches the targets' 0.3 level); a
state is read back as an image with PEAK * (s + 1) / 2 (`to_image`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from patterns import PEAK

BINARY_THRESHOLD = 0.3  # a target cell is "in the shape" above this (the scar rule's match level)


def to_bipolar(target: torch.Tensor, threshold: float = BINARY_THRESHOLD) -> torch.Tensor:
    """(..., H, W) image -> (..., N) states in {-1, +1} (+1 where image > threshold)."""
    t = torch.as_tensor(target)
    return torch.where(t.flatten(-2) > threshold, 1.0, -1.0).to(torch.float32)


def isodata_threshold(x: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Per-row two-means threshold of x (B, N): the midpoint of the means of the values
    below and above it, iterated to a fixed point from the row mean. Returns (B,)."""
    x = x.to(torch.float64)
    thr = x.mean(1)
    for _ in range(iters):
        lo_mask = x <= thr[:, None]
        hi_mask = ~lo_mask
        lo = (x * lo_mask).sum(1) / lo_mask.sum(1).clamp_min(1)
        hi = (x * hi_mask).sum(1) / hi_mask.sum(1).clamp_min(1)
        new = torch.where(hi_mask.any(1) & lo_mask.any(1), (lo + hi) / 2, thr)
        if torch.allclose(new, thr):
            break
        thr = new
    return thr


def binarize(cue: torch.Tensor, threshold=None) -> torch.Tensor:
    """(B, H, W) cue images -> (B, N) bipolar states. threshold None: per-cue isodata
    threshold (a uniform cue becomes all -1); a float: that fixed level."""
    x = torch.as_tensor(cue).flatten(-2)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    thr = isodata_threshold(x) if threshold is None else torch.full((x.shape[0],), float(threshold),
                                                                     dtype=torch.float64)
    return torch.where(x.to(torch.float64) > thr[:, None], 1.0, -1.0).to(torch.float32)


def to_image(states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N) states in [-1, 1] -> (B, H, W) images in [0, PEAK]."""
    return (PEAK * (states.clamp(-1, 1) + 1) / 2).reshape(-1, height, width)


def _check_patterns(patterns) -> torch.Tensor:
    P = torch.as_tensor(patterns, dtype=torch.float32)
    if P.dim() != 2 or P.shape[0] < 1 or P.shape[1] < 2:
        raise ValueError(f"patterns have shape {tuple(P.shape)}; expected (k >= 1, N >= 2) rows")
    if not torch.isfinite(P).all():
        raise ValueError("patterns hold NaN or Inf values")
    return P


class ClassicalHopfield:
    """Hebbian Hopfield network over bipolar patterns stored as rows (k, N).

    centred=False: the textbook rule W = (1/N) sum xi xi^T (zero diagonal). Sparse images
    (mostly background, -1) share most of their cells, so their crosstalk is large and
    the rule has one dominant mixture attractor. centred=True: the covariance rule for
    biased patterns, W = (1/N) sum c c^T with c = xi - mean(xi) per pattern (zero
    diagonal), same sign dynamics; it removes the common background from the crosstalk.
    """

    def __init__(self, patterns, centred: bool = False):
        P = _check_patterns(patterns)
        if not torch.all(P.abs() == 1):
            raise ValueError("classical Hopfield patterns must be bipolar (+1/-1); use to_bipolar")
        self.P = P
        self.k, self.N = P.shape
        self.centred = bool(centred)
        self.C = P - P.mean(1, keepdim=True) if centred else P   # the rows the rule uses
        self.self_coupling = (self.C ** 2).sum(0)                 # (N,) diagonal removed

    def stored_numbers(self) -> int:
        """Numbers held: the k x N pattern rows (a dense W would hold N (N - 1) / 2)."""
        return self.k * self.N

    def field(self, s: torch.Tensor) -> torch.Tensor:
        """h = W s with W = (1/N)(C^T C - diag): (B, N) -> (B, N), never forming W."""
        return ((s @ self.C.t()) @ self.C - self.self_coupling * s) / self.N

    def energy(self, s: torch.Tensor) -> torch.Tensor:
        """E = -1/2 s^T W s per member (B,)."""
        return -0.5 * (s * self.field(s)).sum(1)

    def recall_sync(self, s: torch.Tensor, max_iter: int = 50) -> tuple[torch.Tensor, int]:
        """Synchronous updates until nothing changes (or max_iter). Returns (state, iters).
        Synchronous dynamics may end in a 2-cycle; it then stops at max_iter."""
        s = self._state(s)
        for it in range(1, max_iter + 1):
            h = self.field(s)
            new = torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, s))
            if torch.equal(new, s):
                return s, it
            s = new
        return s, max_iter

    def recall_async(self, s: torch.Tensor, max_sweeps: int = 20, seed: int = 0) -> tuple[torch.Tensor, int]:
        """Asynchronous updates: one cell at a time in a random order per sweep, until a
        whole sweep changes nothing (or max_sweeps). Keeps the overlaps m = P s up to date
        so each cell update costs O(k B). Returns (state, sweeps)."""
        s = self._state(s).to(torch.float64).numpy().copy()
        P = self.C.to(torch.float64).numpy()
        diag = self.self_coupling.to(torch.float64).numpy()
        m = s @ P.T                                   # (B, k) overlaps
        rng = np.random.default_rng(seed)
        for sweep in range(1, max_sweeps + 1):
            changed = False
            for i in rng.permutation(self.N):
                col = P[:, i]
                si = s[:, i]
                h = m @ col - diag[i] * si
                new = np.where(h > 0, 1.0, np.where(h < 0, -1.0, si))
                d = new - si
                if d.any():
                    changed = True
                    s[:, i] = new
                    m += d[:, None] * col[None, :]
            if not changed:
                return torch.as_tensor(s, dtype=torch.float32), sweep
        return torch.as_tensor(s, dtype=torch.float32), max_sweeps

    def _state(self, s) -> torch.Tensor:
        s = torch.as_tensor(s, dtype=torch.float32)
        if s.dim() == 1:
            s = s.unsqueeze(0)
        if s.shape[1] != self.N:
            raise ValueError(f"state has {s.shape[1]} cells; the network has {self.N}")
        return s


class ModernHopfield:
    """Modern continuous Hopfield network (Ramsauer et al. 2020): xi <- P^T softmax(beta P xi)."""

    def __init__(self, patterns, beta: float):
        self.P = _check_patterns(patterns)
        if not beta > 0:
            raise ValueError(f"beta={beta} must be > 0")
        self.beta = float(beta)
        self.k, self.N = self.P.shape

    def stored_numbers(self) -> int:
        return self.k * self.N

    def attention(self, xi: torch.Tensor) -> torch.Tensor:
        """softmax(beta P xi): (B, N) -> (B, k) weights over the stored patterns."""
        return torch.softmax(self.beta * (xi @ self.P.t()), dim=1)

    def update(self, xi: torch.Tensor) -> torch.Tensor:
        return self.attention(xi) @ self.P

    def recall(self, xi: torch.Tensor, max_iter: int = 10, tol: float = 1e-6) -> tuple[torch.Tensor, int]:
        """Iterate the update until it moves less than tol (max-abs) or max_iter."""
        xi = torch.as_tensor(xi, dtype=torch.float32)
        if xi.dim() == 1:
            xi = xi.unsqueeze(0)
        if xi.shape[1] != self.N:
            raise ValueError(f"query has {xi.shape[1]} cells; the network has {self.N}")
        for it in range(1, max_iter + 1):
            new = self.update(xi)
            if (new - xi).abs().max() < tol:
                return new, it
            xi = new
        return xi, max_iter


# ---- sequence memories -------------------------------------------------------------------
# A sequence xi^1 -> xi^2 -> ... -> xi^k is stored as transitions: successor(mu) = mu + 1,
# and for the last item either the first (cyclic) or itself (the replay stops there).
# Patterns are (k, N) shared by every seed or (S, k, N) one sequence per seed; states are
# (S, B, N) (B cues per seed), or (B, N) with shared patterns. Everything is batched.
#
# Asymmetric Hebbian (Sompolinsky & Kanter 1986): J2 = (1/N) sum_mu xi^{succ(mu)} xi^mu^T.
#   delay = 0: s(t+1) = sign(J2 s(t)); the state moves one item per update.
#   delay = tau > 0: s(t+1) = sign(J1 s(t) + lam J2 s(t - tau)), J1 the symmetric Hopfield
#   matrix (zero diagonal). J1 holds the current item; the delayed term, lam > 1, pushes
#   it on once it has been held tau updates, so each item lasts about tau updates. The
#   history before the cue is zero, so the first item is held too.
# Modern (exponential) sequence variant: x(t+1) = sum_mu xi^{succ(mu)} softmax(beta xi^mu.x(t))
#   (the modern network's update with the successor patterns as its values).
# centred=True uses each pattern minus its mean as the key (covariance rule, for sparse
# images, as ClassicalHopfield).


def recall_images(nets, cues: torch.Tensor, recall=None) -> torch.Tensor:
    """Hopfield recall on images: per seed s, the cues[s] (C, H, W) binarised at their
    isodata threshold (`binarize`), recalled by nets[s] and read back with `to_image`.
    recall(net, states, s) -> (states, iterations): how a net recalls (default
    net.recall; e.g. a classical net's recall_sync). Returns (S, C, H, W)."""
    S, _, H, W = cues.shape
    out = []
    for s in range(S):
        query = binarize(cues[s])
        x, _ = nets[s].recall(query) if recall is None else recall(nets[s], query, s)
        out.append(to_image(x, H, W))
    return torch.stack(out)


def modern_nets(patterns: torch.Tensor, beta_per_sqrt_n: float) -> list[ModernHopfield]:
    """One modern network per seed over the bipolar patterns[s] (P, H, W) at
    beta = beta_per_sqrt_n / sqrt(H * W)."""
    H, W = patterns.shape[-2:]
    beta = beta_per_sqrt_n / math.sqrt(H * W)
    return [ModernHopfield(to_bipolar(p), beta) for p in patterns]


def modern_recall_images(patterns: torch.Tensor, cues: torch.Tensor,
                         beta_per_sqrt_n: float) -> torch.Tensor:
    """Modern Hopfield recall on images: patterns (S, P, H, W) stored per seed, cues
    (S, C, H, W). Returns (S, C, H, W) images."""
    return recall_images(modern_nets(patterns, beta_per_sqrt_n), cues)


def _sequence_patterns(patterns) -> torch.Tensor:
    P = torch.as_tensor(patterns, dtype=torch.float32)
    if P.dim() == 2:
        P = P.unsqueeze(0)
    if P.dim() != 3 or P.shape[1] < 2 or P.shape[2] < 2:
        raise ValueError(f"sequence patterns have shape {tuple(torch.as_tensor(patterns).shape)}"
                         f"; expected (k >= 2, N) or (S, k >= 2, N)")
    if not torch.isfinite(P).all():
        raise ValueError("sequence patterns hold NaN or Inf values")
    return P


def successors(k: int, cyclic: bool = False) -> torch.Tensor:
    """Index of the item that follows each of k items; the last is followed by the first
    (cyclic) or by itself."""
    nxt = torch.arange(1, k + 1)
    nxt[-1] = 0 if cyclic else k - 1
    return nxt


class _SequenceMemory:
    def __init__(self, patterns, cyclic: bool, centred: bool):
        self.P = _sequence_patterns(patterns)                       # (S, k, N)
        self.S, self.k, self.N = self.P.shape
        self.keys = self.P - self.P.mean(2, keepdim=True) if centred else self.P
        self.values = self.P[:, successors(self.k, cyclic)]         # xi^{succ(mu)} rows

    def _state(self, s) -> tuple[torch.Tensor, bool]:
        """(S, B, N) from (S, B, N), (B, N) or (N,); also whether a seed dim was added."""
        s = torch.as_tensor(s, dtype=torch.float32)
        squeeze = s.dim() < 3
        if s.dim() == 1:
            s = s.unsqueeze(0)
        if s.dim() == 2:
            s = s.unsqueeze(0).expand(self.S, *s.shape)
        if s.dim() != 3 or s.shape[0] != self.S or s.shape[2] != self.N:
            raise ValueError(f"state has shape {tuple(s.shape)}; expected (B, {self.N}) or "
                             f"({self.S}, B, {self.N})")
        return s, squeeze and self.S == 1

    def overlaps(self, s) -> torch.Tensor:
        """(1/N) xi^mu . s for every item: (..., S, B, N) -> (..., S, B, k)."""
        return torch.einsum("...sbn,skn->...sbk", s, self.P) / self.N

    def replay(self, s0, steps: int) -> torch.Tensor:
        """The trajectory from s0: (steps + 1, S, B, N) (or (steps + 1, B, N) for shared
        patterns and a state without a seed dim), s0 first."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps={steps} must be a non-negative integer")
        s, squeeze = self._state(s0)
        out = [s]
        for t in range(int(steps)):
            s = self._next(out, t)
            out.append(s)
        traj = torch.stack(out)
        return traj[:, 0] if squeeze else traj


class SequenceHopfield(_SequenceMemory):
    """Asymmetric Hebbian sequence memory over bipolar patterns (see the section notes)."""

    def __init__(self, patterns, delay: int = 0, lam: float = 2.0, cyclic: bool = False,
                 centred: bool = False):
        super().__init__(patterns, cyclic, centred)
        if not torch.all(self.P.abs() == 1):
            raise ValueError("sequence Hopfield patterns must be bipolar (+1/-1); use to_bipolar")
        if int(delay) != delay or delay < 0:
            raise ValueError(f"delay={delay} must be a non-negative integer")
        if delay > 0 and not lam > 1:
            raise ValueError(f"lam={lam} must be > 1 for the delayed term to move the state on")
        self.delay, self.lam = int(delay), float(lam)
        self.self_coupling = (self.keys ** 2).sum(1, keepdim=True)     # (S, 1, N)
        if centred:
            self.values = self.values - self.values.mean(2, keepdim=True)

    def transition_field(self, s) -> torch.Tensor:
        """J2 s = (1/N) sum_mu xi^{succ(mu)} (xi^mu . s): (S, B, N) -> (S, B, N)."""
        return torch.einsum("sbk,skn->sbn", torch.einsum("sbn,skn->sbk", s, self.keys),
                            self.values) / self.N

    def hold_field(self, s) -> torch.Tensor:
        """J1 s, the symmetric Hopfield field with zero diagonal."""
        m = torch.einsum("sbn,skn->sbk", s, self.keys)
        return (torch.einsum("sbk,skn->sbn", m, self.keys) - self.self_coupling * s) / self.N

    def _next(self, history, t):
        s = history[-1]
        if self.delay == 0:
            h = self.transition_field(s)
        else:
            past = history[t + 1 - self.delay] if t + 1 >= self.delay else torch.zeros_like(s)
            h = self.hold_field(s) + self.lam * self.transition_field(past)
        return torch.where(h > 0, 1.0, torch.where(h < 0, -1.0, s))


class ModernSequenceHopfield(_SequenceMemory):
    """x <- sum_mu xi^{succ(mu)} softmax(beta xi^mu . x): one item per update."""

    def __init__(self, patterns, beta: float, cyclic: bool = False, centred: bool = False):
        super().__init__(patterns, cyclic, centred)
        if not beta > 0:
            raise ValueError(f"beta={beta} must be > 0")
        self.beta = float(beta)

    def attention(self, x) -> torch.Tensor:
        """softmax(beta xi^mu . x) over the items: (S, B, N) -> (S, B, k)."""
        return torch.softmax(self.beta * torch.einsum("sbn,skn->sbk", x, self.keys), dim=-1)

    def _next(self, history, t):
        return torch.einsum("sbk,skn->sbn", self.attention(history[-1]), self.values)
