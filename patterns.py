"""Target patterns, cues, and loading a target from an image.

Every pattern is an (H, W) float tensor with value PEAK (0.8) inside the shape and 0
elsewhere; x is the column and y the row. The three reference targets follow
PROTOCOL.md exactly on the reference 256 x 256 grid; on another grid their geometry
(centres, radii) scales with the grid, while `offset` is always in cells.

Adding a pattern: write a function `(height, width, offset, **kw) -> bool mask` and put it
in PATTERNS, or save an image (gray, colour or a shape in the alpha channel; 8 or 16
bit) and pass its path to `load_image_pattern`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PEAK = 0.8
REFERENCE_SIZE = 256  # the grid the reference geometry is written for


def _grid(height, width, offset):
    """Cell coordinates (x, y), and scale factors from the reference grid."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                          torch.arange(width, dtype=torch.float64), indexing="ij")
    return x, y, width / REFERENCE_SIZE, height / REFERENCE_SIZE


def _discs(height, width, centres, radius, offset):
    """Union of discs (dist^2 < r^2) at reference-grid centres, shifted by offset cells.
    A centre that falls outside the grid is skipped (the reference 'line' rule)."""
    x, y, sx, sy = _grid(height, width, offset)
    r = radius * min(sx, sy)
    mask = torch.zeros(height, width, dtype=torch.bool)
    for cx, cy in centres:
        cx, cy = cx * sx + offset[0], cy * sy + offset[1]
        if not (0 <= cx < width and 0 <= cy < height):
            continue
        mask |= (x - cx) ** 2 + (y - cy) ** 2 < r * r
    return mask


def square_spots(height, width, offset=(0, 0)):
    """Four discs of radius 15 at (64,64), (64,192), (192,64), (192,192)."""
    centres = [(64, 64), (64, 192), (192, 64), (192, 192)]
    x, y, sx, sy = _grid(height, width, offset)
    r = 15 * min(sx, sy)
    mask = torch.zeros(height, width, dtype=torch.bool)
    for cx, cy in centres:  # unlike the line, spot centres are never skipped
        cx, cy = cx * sx + offset[0], cy * sy + offset[1]
        mask |= (x - cx) ** 2 + (y - cy) ** 2 < r * r
    return mask


def ring(height, width, offset=(0, 0)):
    """Annulus 40 < dist < 60 around (128, 128)."""
    x, y, sx, sy = _grid(height, width, offset)
    s = min(sx, sy)
    d = torch.sqrt((x - 128 * sx - offset[0]) ** 2 + (y - 128 * sy - offset[1]) ** 2)
    return (d > 40 * s) & (d < 60 * s)


def line(height, width, offset=(0, 0)):
    """Discs of radius 8 centred at (i, i), i = 50 .. 199: a thick diagonal."""
    return _discs(height, width, [(i, i) for i in range(50, 200)], 8, offset)


def cross(height, width, offset=(0, 0)):
    """A plus sign: two bars 24 cells thick and 160 long, centred at (128, 128)."""
    x, y, sx, sy = _grid(height, width, offset)
    cx, cy = 128 * sx + offset[0], 128 * sy + offset[1]
    half_t, half_l = 12 * min(sx, sy), 80 * min(sx, sy)
    horizontal = ((y - cy).abs() < half_t) & ((x - cx).abs() < half_l)
    vertical = ((x - cx).abs() < half_t) & ((y - cy).abs() < half_l)
    return horizontal | vertical


# Letter-like glyphs drawn on a 5 x 5 raster, each raster cell a 32 x 32 block on the
# reference grid (the glyph spans 160 x 160 cells, centred).
GLYPHS = {
    "T": ["#####", "..#..", "..#..", "..#..", "..#.."],
    "L": ["#....", "#....", "#....", "#....", "#####"],
    "H": ["#...#", "#...#", "#####", "#...#", "#...#"],
    "X": ["#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
    "O": [".###.", "#...#", "#...#", "#...#", ".###."],
}


def glyph(letter, height, width, offset=(0, 0)):
    rows = GLYPHS[letter]
    x, y, sx, sy = _grid(height, width, offset)
    block = 32 * min(sx, sy)
    x0 = 128 * sx - 2.5 * block + offset[0]
    y0 = 128 * sy - 2.5 * block + offset[1]
    col = torch.floor((x - x0) / block).long()
    row = torch.floor((y - y0) / block).long()
    raster = torch.tensor([[c == "#" for c in r] for r in rows])
    inside = (col >= 0) & (col < 5) & (row >= 0) & (row < 5)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[inside] = raster[row[inside], col[inside]]
    return mask


def blobs(height, width, offset=(0, 0), seed=0, count=6, radius=18):
    """`count` random discs (reference-grid radius `radius`), placed by `seed`."""
    rng = np.random.default_rng(seed)
    margin = radius + 4
    centres = [(float(rng.uniform(margin, REFERENCE_SIZE - margin)),
                float(rng.uniform(margin, REFERENCE_SIZE - margin))) for _ in range(count)]
    return _discs(height, width, centres, radius, offset)


PATTERNS = {
    "square_spots": square_spots,
    "ring": ring,
    "line": line,
    "cross": cross,
    "blobs": blobs,
    **{f"glyph_{c}": (lambda h, w, offset=(0, 0), c=c: glyph(c, h, w, offset)) for c in GLYPHS},
}


def make_pattern(name: str, height: int = 256, width: int = 256, offset=(0, 0),
                 dtype=torch.float32, **kwargs) -> torch.Tensor:
    """The named target as an (H, W) tensor: PEAK inside the shape, 0 outside.

    offset = (dx, dy) in cells (x = column, y = row). Extra keyword arguments go to the
    shape (e.g. seed=3 for 'blobs').
    """
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose one of {sorted(PATTERNS)}")
    if int(height) != height or int(width) != width or height < 3 or width < 3:
        raise ValueError(f"grid {height}x{width} must be integers >= 3")
    mask = PATTERNS[name](int(height), int(width), offset=tuple(offset), **kwargs)
    return mask.to(dtype) * PEAK


MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000: a target is resized to the grid anyway, and a
# few-KB compressed file can claim 20000 x 20000 (a decompression bomb): refused from the
# header, before any pixel is decoded
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _stretch(a: np.ndarray) -> np.ndarray:
    """a scaled to [0, 1] by its own min and max (0 where it is flat)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _image_levels(img) -> np.ndarray:
    """(H, W) float64 gray levels in [0, 1] of an opened PIL image, scaled by the range
    of its pixel type (65535 for a 16-bit image: converting to 8-bit 'L' would clip it).

    Transparency: the image is composited on white (a transparent pixel is blank paper);
    when that leaves nothing visible (a white or one-colour shape that exists only in
    the alpha channel) the alpha channel itself is the image, opaque = 1."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img, dtype=np.float64) / 65535.0
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("holds NaN or Inf pixel values")
        if img.mode == "I" and a.min() >= 0 and a.max() <= 65535:
            return a / 65535.0                       # 16-bit data opened as 32-bit
        return _stretch(a)
    if img.mode == "1":
        return np.asarray(img, dtype=np.float64)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("L", "LA", "RGB", "RGBA"):   # CMYK, YCbCr, LAB, PA, premultiplied...
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    gray = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    if img.mode not in ("LA", "RGBA"):
        return gray
    alpha = np.asarray(img.getchannel("A"), dtype=np.float64) / 255.0
    on_white = gray * alpha + (1.0 - alpha)
    if np.ptp(on_white) < 1e-6 and np.ptp(alpha) > 0:
        return alpha
    return on_white


def load_image_pattern(path, height: int = 256, width: int = 256,
                       invert: bool | None = None, dtype=torch.float32) -> torch.Tensor:
    """A target from an image file: gray levels, resized to (H, W), scaled to peak PEAK.

    Any 8- or 16-bit gray, colour or palette image; levels are scaled by the pixel type's
    range, transparency handled as in `_image_levels`. Bright means "pattern".
    invert=None inverts automatically when the contrast-stretched image is mostly bright
    (dark ink on a light page); pass True/False to force it. Images over
    MAX_IMAGE_PIXELS pixels are refused before decoding.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target image not found: {path}")
    try:
        with warnings.catch_warnings():              # PIL's bomb warning: refused below anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)                   # reads the header only
    except Image.DecompressionBombError:
        raise ValueError(f"image {path} claims more pixels than the limit of "
                         f"{MAX_IMAGE_PIXELS:,} (refused as a possible decompression bomb)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read {path} as an image ({exc.__class__.__name__})") from None
    with img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {path} is {img.width} x {img.height} pixels, over the "
                             f"limit of {MAX_IMAGE_PIXELS:,}: shrink it first")
        try:
            levels = _image_levels(img)
        except (OSError, SyntaxError, ValueError) as exc:   # truncated or corrupt pixel data
            why = " ".join(str(exc).split())
            raise ValueError(f"cannot decode {path} ({exc.__class__.__name__}: {why})") from None
    if np.ptp(levels) < 1e-6:
        raise ValueError(f"image {path} is blank (one uniform level, colour and alpha): "
                         f"nothing to store")
    small = Image.fromarray(levels.astype(np.float32))     # mode "F"
    a = np.asarray(small.resize((int(width), int(height)), Image.BILINEAR), dtype=np.float64)
    if np.ptp(a) < 1e-6:
        raise ValueError(f"image {path} is blank after resizing to {height} x {width}")
    a = _stretch(a)
    if invert is None:
        invert = a.mean() > 0.5
    if invert:
        a = 1.0 - a
    return torch.as_tensor(a * PEAK, dtype=dtype)


def check_target(target: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Raise a clear ValueError unless target is a finite (H, W) tensor."""
    if not isinstance(target, torch.Tensor) or target.shape != (height, width):
        shape = tuple(target.shape) if hasattr(target, "shape") else type(target).__name__
        raise ValueError(f"target has shape {shape}; expected ({height}, {width})")
    if not torch.isfinite(target).all():
        raise ValueError("target holds NaN or Inf values")
    return target


def make_cue(target: torch.Tensor, strength: float, noise_std: float, seeds,
             batch_dims: int = 1) -> torch.Tensor:
    """clamp(strength * target + N(0, noise_std^2), 0, 1), one noise draw per seed.

    target is (H, W) (the same for every seed) or (len(seeds), H, W). Each seed's noise
    comes from its own generator, so a seed gives the same cue alone or in a batch.
    Returns (len(seeds), H, W) on target's device.
    """
    H, W = target.shape[-2:]
    noise = torch.stack([
        torch.randn(H, W, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
        for s in seeds]).to(device=target.device, dtype=target.dtype)
    return (strength * target + noise_std * noise).clamp(0.0, 1.0)


# ---- 3D targets for (B, D, H, W) media ------------------------------------------------
# A (D, H, W) volume; z is the depth index. Sizes are fractions of the shortest side so
# a shape looks the same on any grid (on a 256-cell side they match the 2D reference:
# spot radius 15, ring 40-60); `offset` = (dx, dy, dz) is always in cells.

def _grid3(depth, height, width, offset):
    z, y, x = torch.meshgrid(torch.arange(depth, dtype=torch.float64),
                             torch.arange(height, dtype=torch.float64),
                             torch.arange(width, dtype=torch.float64), indexing="ij")
    s = min(depth, height, width) / REFERENCE_SIZE
    return x - offset[0], y - offset[1], z - offset[2], s


def ball(depth, height, width, offset=(0, 0, 0), radius=None):
    """A solid ball at the centre: radius 60 reference cells (0.23 of the shortest side)
    unless `radius` (cells) is given."""
    x, y, z, s = _grid3(depth, height, width, offset)
    r = 60 * s if radius is None else radius
    d2 = (x - width / 2) ** 2 + (y - height / 2) ** 2 + (z - depth / 2) ** 2
    return d2 < r * r


def shell(depth, height, width, offset=(0, 0, 0)):
    """A spherical shell 40 < dist < 60 (reference cells) around the centre: the 3D ring."""
    x, y, z, s = _grid3(depth, height, width, offset)
    d = torch.sqrt((x - width / 2) ** 2 + (y - height / 2) ** 2 + (z - depth / 2) ** 2)
    return (d > 40 * s) & (d < 60 * s)


def corner_balls(depth, height, width, offset=(0, 0, 0)):
    """Eight balls of radius 15 (reference cells) at the quarter points: 3D square_spots."""
    x, y, z, s = _grid3(depth, height, width, offset)
    r = 15 * s
    mask = torch.zeros(depth, height, width, dtype=torch.bool)
    for fz in (0.25, 0.75):
        for fy in (0.25, 0.75):
            for fx in (0.25, 0.75):
                mask |= ((x - fx * width) ** 2 + (y - fy * height) ** 2
                         + (z - fz * depth) ** 2) < r * r
    return mask


PATTERNS_3D = {"ball": ball, "shell": shell, "corner_balls": corner_balls}


def make_pattern_3d(name: str, depth: int = 64, height: int = 64, width: int = 64,
                    offset=(0, 0, 0), dtype=torch.float32, **kwargs) -> torch.Tensor:
    """The named 3D target as a (D, H, W) tensor: PEAK inside the shape, 0 outside.
    offset = (dx, dy, dz) in cells."""
    if name not in PATTERNS_3D:
        raise ValueError(f"unknown 3D pattern {name!r}; choose one of {sorted(PATTERNS_3D)}")
    for label, n in (("depth", depth), ("height", height), ("width", width)):
        if int(n) != n or n < 3:
            raise ValueError(f"{label}={n} must be an integer >= 3")
    if len(tuple(offset)) != 3:
        raise ValueError(f"offset={offset!r} must be (dx, dy, dz)")
    mask = PATTERNS_3D[name](int(depth), int(height), int(width), offset=tuple(offset),
                             **kwargs)
    if not mask.any():
        raise ValueError(f"3D pattern {name!r} is empty on a {depth}x{height}x{width} grid")
    return mask.to(dtype) * PEAK


# ---- pattern families for the memory studies ------------------------------------------

def random_spot_patterns(n_patterns: int, height: int, width: int, spots: int = 1,
                         radius: float = 6.0, seed: int = 0, disjoint: bool = True,
                         gap: float = 2.0, max_tries: int = 20_000) -> torch.Tensor:
    """A family of equal-area patterns: each `spots` discs of `radius` cells (PEAK inside).

    Discs within a pattern never overlap (so every pattern has the same area); with
    disjoint=True no disc overlaps any disc of another pattern either (at least `gap`
    cells apart); with disjoint=False patterns are placed independently and overlap by
    chance. Discs stay `radius + gap` cells from the border (no wrap-around).
    Returns (n_patterns, H, W) float32; ValueError if the discs do not fit.

    Beware: the reference scar rule only scars while the cosine similarity of the whole V
    field to the target exceeds its gate (0.5). A pattern that covers a small fraction of
    the grid (e.g. one disc of radius 6 on 128 x 128, 0.7%) never gets there during
    training (similarity ~0.04 measured), so nothing is stored at all; slot_patterns'
    default (8 discs, 5.3% of the grid) trains above the gate.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    margin = radius + gap
    if 2 * margin >= min(height, width):
        raise ValueError(f"discs of radius {radius} do not fit a {height}x{width} grid")
    placed_all, out = [], []
    for _ in range(int(n_patterns)):
        mine = []
        tries = 0
        while len(mine) < spots:
            tries += 1
            if tries > max_tries:
                raise ValueError(f"cannot place {n_patterns} x {spots} discs of radius {radius}"
                                 f" on {height}x{width} (disjoint={disjoint}); use fewer or "
                                 f"smaller spots or a larger grid")
            c = rng.uniform(margin, [width - margin, height - margin])
            others = mine + (placed_all if disjoint else [])
            if all(np.hypot(*(c - o)) >= 2 * radius + gap for o in others):
                mine.append(c)
        placed_all += mine
        mask = np.zeros((height, width), dtype=bool)
        for cx, cy in mine:
            mask |= (x - cx) ** 2 + (y - cy) ** 2 < radius * radius
        out.append(mask)
    return torch.as_tensor(np.stack(out), dtype=torch.float32) * PEAK


def slot_patterns(n_patterns: int, height: int, width: int, slots_per_side: int = 8,
                  spots: int = 8, radius: float | None = None, seed: int = 0,
                  disjoint: bool = False) -> torch.Tensor:
    """Equal-area sparse patterns on a lattice of spot slots (like sparse binary codes).

    The grid is cut into slots_per_side^2 square slots; slot i can hold one disc of
    `radius` cells (default 0.375 x the slot side) at its centre. Each pattern lights
    `spots` slots, so every pattern has exactly the same area. disjoint=False: each
    pattern draws its slots independently (patterns overlap by chance, on average
    spots^2 / slots shared slots per pair); disjoint=True: no slot is used twice (at most
    slots // spots patterns). Returns (n_patterns, H, W) float32, PEAK inside.
    """
    n_slots = slots_per_side * slots_per_side
    if not 1 <= spots <= n_slots:
        raise ValueError(f"spots={spots} must be in 1..{n_slots}")
    if disjoint and n_patterns * spots > n_slots:
        raise ValueError(f"{n_patterns} disjoint patterns of {spots} spots need "
                         f"{n_patterns * spots} slots; the lattice has {n_slots}")
    sy, sx = height / slots_per_side, width / slots_per_side
    r = 0.375 * min(sx, sy) if radius is None else float(radius)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_slots)
    y, x = np.mgrid[0:height, 0:width]
    discs = []
    for i in range(n_slots):
        cy, cx = (i // slots_per_side + 0.5) * sy, (i % slots_per_side + 0.5) * sx
        discs.append((x - cx) ** 2 + (y - cy) ** 2 < r * r)
    out = []
    for p in range(int(n_patterns)):
        chosen = (order[p * spots:(p + 1) * spots] if disjoint
                  else rng.choice(n_slots, size=spots, replace=False))
        out.append(np.any([discs[i] for i in chosen], axis=0))
    return torch.as_tensor(np.stack(out), dtype=torch.float32) * PEAK

