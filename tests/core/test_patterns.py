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


def _drawn(height, width, rows, cols):
    """Boolean (H, W) mask of the block rows x cols (two slices)."""
    m = np.zeros((height, width), bool)
    m[rows, cols] = True
    return m


def _assert_target_is(t, mask):
    """The loaded target is above PEAK / 2 exactly on the drawn cells (bilinear resizing
    blurs the edge by a cell), PEAK inside and 0 two cells away from the shape."""
    assert t.shape == mask.shape
    assert t.max() == pytest.approx(PEAK)
    assert np.array_equal(t.numpy() > PEAK / 2, mask)
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    near = torch.nn.functional.max_pool2d(m, 5, stride=1, padding=2)[0, 0].bool().numpy()
    inner = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)[0, 0]
    assert np.allclose(t.numpy()[~near], 0.0) and np.allclose(t.numpy()[inner.bool().numpy()], PEAK)


def test_image_loading_puts_the_shape_where_it_was_drawn(tmp_path):
    from PIL import Image

    img = np.full((40, 60), 255, np.uint8)
    img[10:30, 36:52] = 0                        # dark off-centre block on white paper
    Image.fromarray(img).save(tmp_path / "sq.png")
    t = load_image_pattern(tmp_path / "sq.png", 20, 30)
    _assert_target_is(t, _drawn(20, 30, slice(5, 15), slice(18, 26)))
    bright = np.zeros((40, 60), np.uint8)
    bright[10:30, 36:52] = 255                   # bright block on black: not inverted
    Image.fromarray(bright).save(tmp_path / "bright.png")
    _assert_target_is(load_image_pattern(tmp_path / "bright.png", 20, 30),
                      _drawn(20, 30, slice(5, 15), slice(18, 26)))


def test_sixteen_bit_png_is_scaled_by_its_range(tmp_path):
    from PIL import Image

    img = np.full((32, 32), 30000, np.uint16)
    img[4:12, 20:28] = 60000                     # both levels above 255: "L" clips them
    Image.fromarray(img).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    _assert_target_is(load_image_pattern(tmp_path / "deep.png", 16, 16),
                      _drawn(16, 16, slice(2, 6), slice(10, 14)))


@pytest.mark.parametrize("mode, colour", [("RGBA", (0, 0, 0)), ("RGBA", (255, 255, 255)),
                                          ("RGBA", (200, 30, 30)), ("LA", (255,))])
def test_shape_drawn_only_in_alpha(tmp_path, mode, colour):
    from PIL import Image

    img = np.zeros((32, 32, len(colour) + 1), np.uint8)
    img[..., :-1] = colour                       # one flat colour everywhere
    img[8:16, 2:12, -1] = 255                    # the shape: opaque pixels
    Image.fromarray(img, mode=mode).save(tmp_path / "alpha.png")
    _assert_target_is(load_image_pattern(tmp_path / "alpha.png", 16, 16),
                      _drawn(16, 16, slice(4, 8), slice(1, 6)))


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height 8-bit gray pixels, with one tiny IDAT:
    a decompression bomb's header, without the gigabytes behind it."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20000, 6000])
def test_huge_image_refused_before_decoding(tmp_path, side):
    _png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ValueError, match="limit of 25,000,000") as err:
        load_image_pattern(tmp_path / "bomb.png")
    assert "\n" not in str(err.value)


def test_image_errors(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_pattern(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image_pattern(tmp_path / "junk.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(ValueError, match="blank"):
        load_image_pattern(tmp_path / "flat.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image_pattern(tmp_path / "cut.png")


def test_check_target_shape():
    with pytest.raises(ValueError, match=r"expected \(8, 8\)"):
        check_target(torch.zeros(8, 9), 8, 8)
