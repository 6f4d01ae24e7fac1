import math

import pytest
import torch

from metrics import (
    cosine_similarity,
    discrimination_index,
    iou,
    pearson,
)


def test_cosine_by_hand_and_scale_invariance():
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    V = torch.stack([t, 0.1 * t, torch.tensor([[1.0, 1.0], [0.0, 0.0]])])
    assert cosine_similarity(V, t).tolist() == pytest.approx([1.0, 1.0, 1 / math.sqrt(2)])


def test_cosine_zero_when_nearly_empty():
    t = torch.ones(4, 4) * 0.8
    V = torch.full((1, 4, 4), 0.0005)      # sums to 0.008 < 0.01
    assert cosine_similarity(V, t).item() == 0.0
    assert cosine_similarity(torch.ones(1, 4, 4), torch.full((4, 4), 0.0005)).item() == 0.0
    assert cosine_similarity(torch.full((1, 4, 4), 0.001), t).item() == pytest.approx(1.0)


def test_iou_is_scale_aware():
    t = torch.zeros(4, 4)
    t[:2] = 0.8
    assert iou(t.unsqueeze(0), t).item() == 1.0
    assert iou((0.2 * t).unsqueeze(0), t).item() == 0.0   # faint copy below threshold
    half = torch.zeros(4, 4)
    half[0] = 0.8
    assert iou(half, t).item() == pytest.approx(0.5)
    assert iou(torch.zeros(4, 4), torch.zeros(4, 4)).item() == 0.0


def test_pearson():
    t = torch.arange(16.0).view(4, 4)
    assert pearson(2 * t + 3, t).item() == pytest.approx(1.0)
    assert pearson(-t, t).item() == pytest.approx(-1.0)
    assert pearson(torch.ones(4, 4), t).item() == 0.0


def test_batched_per_member_targets():
    t = torch.rand(3, 5, 5)
    assert cosine_similarity(t, t).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="shape"):
        cosine_similarity(torch.rand(3, 5, 5), torch.rand(2, 5, 5))


def test_discrimination_index():
    assert discrimination_index(torch.eye(3)) == pytest.approx(1.0)
    assert discrimination_index(torch.full((3, 3), 0.7)) == pytest.approx(0.0)   # imprint
    m = [[0.9, 0.5], [0.3, 0.7]]
    assert discrimination_index(m) == pytest.approx(((0.9 - 0.5) + (0.7 - 0.3)) / 2)
    with pytest.raises(ValueError):
        discrimination_index([[1.0, 0.0]])


def test_cosine_reads_non_contiguous_views_and_per_member_targets():
    g = torch.Generator().manual_seed(3)
    P = torch.rand(3, 10, 12, generator=g, dtype=torch.float64)
    view = P[:, 1:-1, 1:-1]                      # a padded buffer's interior
    target = torch.rand(8, 10, generator=g, dtype=torch.float64)
    a = cosine_similarity(view, target)
    b = cosine_similarity(view.contiguous(), target.expand(3, -1, -1).contiguous())
    v, t = view.reshape(3, -1), target.reshape(1, -1)
    by_hand = (v * t).sum(1) / (v.norm(dim=1) * t.norm(dim=1))
    assert torch.allclose(a, by_hand, atol=1e-12) and torch.allclose(b, by_hand, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        cosine_similarity(view, torch.rand(9, 10))
