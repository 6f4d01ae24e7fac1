import torch

from models import hopfield
from patterns import PEAK


def _shapes():
    """Two seeds, each storing a square and a bar on 8 x 8 (seed 1: swapped)."""
    square = torch.zeros(8, 8)
    square[2:6, 2:6] = PEAK
    bar = torch.zeros(8, 8)
    bar[:, 3:5] = PEAK
    return torch.stack([torch.stack([square, bar]), torch.stack([bar, square])])


def test_modern_recall_images_completes_a_half_cue_per_seed():
    pats = _shapes()
    cues = 0.15 * pats[:, :1].clone()
    cues[..., 4:, :] = 0           # half of the first pattern of each seed
    V = hopfield.modern_recall_images(pats, cues, beta_per_sqrt_n=8.0)
    assert V.shape == (2, 1, 8, 8)
    assert torch.allclose(V[:, 0], pats[:, 0], atol=1e-3)   # each seed its own first pattern


def test_recall_images_hands_each_seed_its_net_and_index():
    pats = _shapes()
    nets = [hopfield.ClassicalHopfield(hopfield.to_bipolar(p)) for p in pats]
    seen = []

    def recall(net, states, s):
        seen.append((net, s))
        return net.recall_sync(states)

    V = hopfield.recall_images(nets, 0.15 * pats, recall)
    assert [s for _, s in seen] == [0, 1] and [n for n, _ in seen] == nets
    assert V.shape == (2, 2, 8, 8) and ((V == 0) | (V == PEAK)).all()
