import numpy as np
import pytest
import torch

from patterns import (
    PATTERNS,
    PEAK,
    check_target,
    load_image_pattern,
    make_cue,
    make_pattern,
)


def disc_count(r):
    """Integer points with x^2 + y^2 < r^2 (the protocol's strict inequality)."""
    g = np.arange(-r, r + 1)
    return int(((g[:, None] ** 2 + g[None, :] ** 2) < r * r).sum())


def test_square_spots_geometry():
    t = make_pattern("square_spots")
    assert t.shape == (256, 256) and t.unique().tolist() == [0.0, pytest.approx(PEAK)]
    assert int((t > 0).sum()) == 4 * disc_count(15)
    for x, y in [(64, 64), (64, 192), (192, 64), (192, 192)]:
        assert t[y, x] == pytest.approx(PEAK)
        assert t[y, x + 15] == 0 and t[y, x + 14] > 0


def test_offset_moves_spots_and_clips_at_edges():
    t = make_pattern("square_spots", offset=(-64, -64))
    assert t[0, 0] > 0 and t[128, 128] > 0 and t[64, 64] == 0
    # the spot at (0, 0) is cut by the grid edge (no wrap): a quarter disc and a bit
    assert int((t[:20, :20] > 0).sum()) < disc_count(15) / 2


def test_ring_geometry():
    t = make_pattern("ring")
    y, x = np.mgrid[0:256, 0:256]
    d = np.sqrt((x - 128) ** 2 + (y - 128) ** 2)
    expected = (d > 40) & (d < 60)
    assert np.array_equal(t.numpy() > 0, expected)
    assert t[128, 128 + 50] > 0 and t[128, 128] == 0 and t[128, 128 + 60] == 0


def test_line_geometry_and_skipped_centres():
    t = make_pattern("line")
    assert t[50, 50] > 0 and t[199, 199] > 0 and t[128, 128] > 0
    assert t[40, 40] == 0 and t[100, 150] == 0
    # shifted far right: centres with x >= 256 are skipped, so fewer discs remain
    shifted = make_pattern("line", offset=(100, 0))
    assert 0 < (shifted > 0).sum() < (t > 0).sum()
    assert shifted[50, 150] > 0 and shifted[155, 255] > 0   # last kept centre (255, 155)
    # (x=255, y=163) lies within 8 of the skipped centres (256, 156), (257, 157), ... but
    # not within 8 of any kept centre: skipped centres draw nothing, even inside the grid
    assert shifted[163, 255] == 0 and shifted[162, 255] > 0


def test_every_named_pattern_has_shape_and_peak():
    for name in PATTERNS:
        t = make_pattern(name, 64, 80)
        assert t.shape == (64, 80), name
        assert t.max() == pytest.approx(PEAK) and t.min() == 0, name


def test_unknown_pattern_and_bad_grid():
    with pytest.raises(ValueError, match="unknown pattern 'nope'"):
        make_pattern("nope")
    with pytest.raises(ValueError, match="grid"):
        make_pattern("ring", 2, 2)


def test_blobs_are_seeded():
    assert torch.equal(make_pattern("blobs", seed=3), make_pattern("blobs", seed=3))
    assert not torch.equal(make_pattern("blobs", seed=3), make_pattern("blobs", seed=4))


def test_cue_is_scaled_target_plus_seeded_noise_clamped():
    t = make_pattern("ring", 32, 32)
    noiseless = make_cue(t, 0.15, 0.0, [0])
    assert torch.allclose(noiseless[0], 0.15 * t)
    a = make_cue(t, 0.15, 0.05, [0, 1])
    b = make_cue(t, 0.15, 0.05, [1])
    assert torch.equal(a[1], b[0])              # a seed's cue does not depend on the batch
    assert a.min() >= 0 and a.max() <= 1
    strong = make_cue(t, 0.5, 0.05, [2])[0]     # 0.4 inside the ring: the clamp never bites
    inside = t > 0
    assert abs((strong - 0.5 * t)[inside].std().item() - 0.05) < 0.01
    assert abs((strong - 0.5 * t)[inside].mean().item()) < 0.01


def test_image_loading(tmp_path):
    from PIL import Image

    img = np.full((40, 60), 255, np.uint8)
    img[10:30, 20:40] = 0                        # dark square on white paper
    Image.fromarray(img).save(tmp_path / "sq.png")
    t = load_image_pattern(tmp_path / "sq.png", 20, 30)
    assert t.shape == (20, 30)
    assert t.max() == pytest.approx(PEAK) and t[10, 15] == pytest.approx(PEAK) and t[0, 0] == 0


def test_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_pattern(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image_pattern(tmp_path / "junk.png")


def test_check_target_shape():
    with pytest.raises(ValueError, match=r"expected \(8, 8\)"):
        check_target(torch.zeros(8, 9), 8, 8)
