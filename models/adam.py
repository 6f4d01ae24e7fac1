"""Adam (Kingma & Ba), written out for the scripts that train by gradient.

Written out rather than torch.optim.Adam because torch.optim's first use imports
torch._dynamo, which costs several seconds per process on the 2-core machine. The update
is torch.optim.Adam's: p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
"""
from __future__ import annotations

import math

import torch


def adam_state(params) -> list:
    """Zero first and second moments, one pair per parameter."""
    return [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]


@torch.no_grad()
def adam_step(params, grads, state, t: int, lr: float, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8) -> None:
    """One Adam update of `params` in place; t counts updates from 1. A None gradient
    leaves its parameter (and its moments) unchanged."""
    for p, g, (m, v) in zip(params, grads, state):
        if g is None:
            continue
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p.addcdiv_(m, v.sqrt().add_(eps * math.sqrt(1 - b2 ** t)), value=-step)
