"""Target patterns, cues, and loading a target from an image.

Every pattern is an (H, W) float tensor with value PEAK (0.8) inside the shape and 0
elsewhere; x is the column and y the row. The three reference targets follow
docs/protocol.md exactly on the reference 256 x 256 grid; on another grid their geometry
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


def phase3_targets(height: int = 256, width: int | None = None,
                   dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The study's phase-3 patterns on this grid, by name (protocol.PHASE3_PATTERNS):
    A square_spots offset by (-64, -64) reference cells, B ring, C line."""
    from protocol import PHASE3_PATTERNS

    width = height if width is None else width
    sx, sy = width / REFERENCE_SIZE, height / REFERENCE_SIZE
    return {name: make_pattern(shape, height, width, offset=(dx * sx, dy * sy), dtype=dtype)
            for name, shape, (dx, dy) in PHASE3_PATTERNS}


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


def open_image(path):
    """An image file opened (header only), refused in one line when it is missing, not an
    image, or over MAX_IMAGE_PIXELS pixels (a decompression bomb) - before any decoding.
    Every image a script reads goes through here. Use as `with open_image(p) as img:`."""
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
    if img.width * img.height > MAX_IMAGE_PIXELS:
        img.close()
        raise ValueError(f"image {path} is {img.width} x {img.height} pixels, over the "
                         f"limit of {MAX_IMAGE_PIXELS:,}: shrink it first")
    return img


def load_image_pattern(path, height: int = 256, width: int = 256,
                       invert: bool | None = None, dtype=torch.float32) -> torch.Tensor:
    """A target from an image file: gray levels, resized to (H, W), scaled to peak PEAK.

    Any 8- or 16-bit gray, colour or palette image; levels are scaled by the pixel type's
    range, transparency handled as in `_image_levels`. Bright means "pattern".
    invert=None inverts automatically when the contrast-stretched image is mostly bright
    (dark ink on a light page); pass True/False to force it. Images over
    MAX_IMAGE_PIXELS pixels are refused before decoding.
    """
    from PIL import Image

    with open_image(path) as img:
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



# ---- parts and wholes -------------------------------------------------------------------
# Two families of wholes built from a small set of parts, for the composition study.
#
# Strokes: the 5 x 5 glyph raster (as GLYPHS) cut into disjoint strokes that touch where
# a letter joins them, so every whole is one connected shape (a scar lit at one end can
# spread along the rest). Scenes: small shapes at four set places (the quadrant centres),
# far apart, so a whole is several disconnected parts. A whole is a tuple of part names.

STROKES = {   # (row, col) raster cells; disjoint, touching at the joints
    "top": [(0, c) for c in range(5)],
    "left": [(r, 0) for r in range(1, 5)],
    "right": [(r, 4) for r in range(1, 5)],
    "middle": [(2, c) for c in range(1, 4)],
    "bottom": [(4, c) for c in range(1, 4)],
}
STROKE_WHOLES = {   # letters made of strokes, each one connected shape
    "L": ("left", "bottom"), "C": ("top", "left", "bottom"), "U": ("left", "right", "bottom"),
    "H": ("left", "right", "middle"), "Pi": ("top", "left", "right"),
    "F": ("top", "left", "middle"), "E": ("top", "left", "middle", "bottom"),
    "O": ("top", "left", "right", "bottom"), "-|": ("middle", "right"),
}
SCENE_PLACES = ((64, 64), (192, 64), (64, 192), (192, 192))   # (x, y) on the reference grid
SCENE_SHAPES = ("disc", "square", "diamond")
SCENE_SIZE = 28     # reference cells: disc radius, half side of the square and diamond


def stroke_part(name: str, height: int, width: int) -> torch.Tensor:
    """One stroke as a bool (H, W) mask on the glyph raster (32 reference cells a block)."""
    if name not in STROKES:
        raise ValueError(f"unknown stroke {name!r}; choose from {sorted(STROKES)}")
    x, y, sx, sy = _grid(height, width, (0, 0))
    block = 32 * min(sx, sy)
    col = torch.floor((x - (128 * sx - 2.5 * block)) / block).long()
    row = torch.floor((y - (128 * sy - 2.5 * block)) / block).long()
    mask = torch.zeros(height, width, dtype=torch.bool)
    for r, c in STROKES[name]:
        mask |= (row == r) & (col == c)
    return mask


def scene_part(shape: str, place: int, height: int, width: int) -> torch.Tensor:
    """One shape ('disc', 'square' or 'diamond') at one of the four places: (H, W) bool."""
    if shape not in SCENE_SHAPES:
        raise ValueError(f"unknown scene shape {shape!r}; choose from {SCENE_SHAPES}")
    if not 0 <= place < len(SCENE_PLACES):
        raise ValueError(f"place={place} must be in 0..{len(SCENE_PLACES) - 1}")
    x, y, sx, sy = _grid(height, width, (0, 0))
    s = min(sx, sy)
    dx = (x - SCENE_PLACES[place][0] * sx).abs()
    dy = (y - SCENE_PLACES[place][1] * sy).abs()
    r = SCENE_SIZE * s
    if shape == "disc":
        return dx ** 2 + dy ** 2 < r * r
    if shape == "square":
        return (dx < r) & (dy < r)
    return dx + dy < 1.3 * r      # a diamond of about the disc's area


def compose(parts: torch.Tensor) -> torch.Tensor:
    """The whole made of parts: (n, H, W) masks or images -> their union, PEAK inside."""
    return (torch.as_tensor(parts) > 0).any(0).to(torch.float32) * PEAK


def part_images(names, height: int, width: int, family: str = "strokes") -> torch.Tensor:
    """(n, H, W) float32 images (PEAK inside) of the named parts: stroke names, or
    'shape@place' for scenes (e.g. 'disc@0')."""
    out = []
    for name in names:
        if family == "strokes":
            mask = stroke_part(name, height, width)
        elif family == "scenes":
            shape, _, place = name.partition("@")
            mask = scene_part(shape, int(place), height, width)
        else:
            raise ValueError(f"family={family!r} must be 'strokes' or 'scenes'")
        if not mask.any():
            raise ValueError(f"part {name!r} is empty on a {height}x{width} grid")
        out.append(mask)
    return torch.stack(out).to(torch.float32) * PEAK


def whole_image(names, height: int, width: int, family: str = "strokes") -> torch.Tensor:
    """(H, W) image of the whole made of the named parts."""
    return compose(part_images(names, height, width, family))


# ---- partial and foreign cues for the associative read-outs ---------------------------
# A partial cue keeps part of a pattern's mask (`part_*` return that part as a bool mask);
# `masked_cue` turns any mask into a protocol cue. Parts are chosen per seed so that a
# result does not hang on one lucky cut.

def sweep_part(mask: torch.Tensor, fraction: float, angle: float) -> torch.Tensor:
    """The cells of `mask` (H, W bool) that lie furthest back along the direction
    `angle` (radians; 0 = +x, pi/2 = +y), `fraction` of its area: a straight cut
    perpendicular to that direction. fraction 0.5 at angle 0 is the left half; along a
    line's own axis it gives a segment."""
    _check_fraction(fraction)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        raise ValueError("sweep_part: the mask is empty")
    proj = xs.double() * np.cos(angle) + ys.double() * np.sin(angle)
    keep = max(1, int(round(fraction * len(ys))))
    order = torch.argsort(proj, stable=True)[:keep]
    out = torch.zeros_like(mask, dtype=torch.bool)
    out[ys[order], xs[order]] = True
    return out


def arc_part(mask: torch.Tensor, fraction: float, start: float) -> torch.Tensor:
    """The cells of `mask` whose angle about the mask's centroid lies in
    [start, start + 2 pi fraction): an arc of a ring, a sector of any shape."""
    _check_fraction(fraction)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        raise ValueError("arc_part: the mask is empty")
    cy, cx = ys.double().mean(), xs.double().mean()
    ang = (torch.atan2(ys.double() - cy, xs.double() - cx) - start) % (2 * np.pi)
    inside = ang < 2 * np.pi * fraction
    out = torch.zeros_like(mask, dtype=torch.bool)
    out[ys[inside], xs[inside]] = True
    return out


def component_part(mask: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A random subset of the connected components of `mask` (8-connected, chosen by
    `seed`) whose area is as close to `fraction` of the total as a subset in random
    order gets: components are added in a seeded random order while that brings the
    area nearer the goal (at least one is always kept). For a single component it is
    the whole mask; use sweep_part then."""
    from scipy import ndimage

    _check_fraction(fraction)
    labels, n = ndimage.label(mask.numpy(), structure=np.ones((3, 3)))
    if n == 0:
        raise ValueError("component_part: the mask is empty")
    areas = np.bincount(labels.ravel())[1:]
    goal = fraction * areas.sum()
    chosen, total = [], 0
    for i in np.random.default_rng(seed).permutation(n):
        if not chosen or abs(total + areas[i] - goal) < abs(total - goal):
            chosen.append(i + 1)
            total += areas[i]
    return torch.as_tensor(np.isin(labels, chosen))


def masked_cue(target: torch.Tensor, keep: torch.Tensor, strength: float, noise_std: float,
               seeds) -> torch.Tensor:
    """make_cue of target restricted to `keep` (H, W) or (len(seeds), H, W) bool: the
    cue's signal lies only on the kept part; the noise covers the whole grid."""
    return make_cue(target * keep.to(target.dtype), strength, noise_std, seeds)


def uniform_cue(height: int, width: int, level: float, noise_std: float, seeds,
                dtype=torch.float32) -> torch.Tensor:
    """A featureless start: clamp(level + N(0, noise_std^2), 0, 1), one draw per seed
    ((len(seeds), H, W)). level 0 and noise_std > 0 is pure noise."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"uniform level={level} must be in [0, 1]")
    return make_cue(torch.full((height, width), float(level), dtype=dtype), 1.0,
                    noise_std, seeds)


def overlap_fraction(mask: torch.Tensor, scarred: torch.Tensor) -> torch.Tensor:
    """Fraction of the cells of `mask` that lie on `scarred` cells (both bool, same
    shape, leading dims batched); 0 for an empty mask. For matching never-stored cues
    on and off the scars."""
    m = mask.flatten(-2)
    area = m.sum(-1)
    hit = (m & scarred.flatten(-2)).sum(-1)
    return torch.where(area > 0, hit / area.clamp_min(1), torch.zeros_like(hit, dtype=torch.float32))


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
