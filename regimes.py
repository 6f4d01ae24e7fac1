"""What an unscarred Gray-Scott medium does: the regime of one final V field (uniform
decay, spots, stripes, holes, uniform fill), read from its active cells and the
compactness of their connected pieces on the torus. numpy in, labels out."""
from __future__ import annotations

import numpy as np

ACTIVE_V = 0.1          # a cell is active above this V (uniform states sit at V >= 0.2)
DEAD_FRACTION = 0.001   # fewer active cells than this: the medium died out ("decays")
FILL_FRACTION = 0.95    # more: V covers the grid ("fills")
COMPACT = 0.3           # a piece is a spot (or a hole) when 4 pi area / perimeter^2 >= this
REGIMES = ("decays", "spots", "stripes", "holes", "fills")


def classify_regime(V) -> dict:
    """The pattern of one final V field (H, W): {"regime", "active_fraction"}.

    Active cells (V > ACTIVE_V): almost none -> "decays", almost all -> "fills".
    Otherwise the minority phase (the active cells when at most half the grid is active,
    else the inactive ones) is cut into pieces (4-connected, across the periodic edges)
    and each piece gets its compactness 4 pi area / perimeter^2 (perimeter in cell
    edges; about 0.6-0.8 for a digital disc or a small square, below 0.1 for a long
    stripe). Mostly compact pieces (median over the phase's cells >= COMPACT) -> "spots"
    (active minority) or "holes" (inactive minority: inverted spots); else "stripes"
    (stripes, rings, labyrinths, mixtures). A snapshot: travelling waves or chaos read as
    whatever they look like at that step."""
    active = np.asarray(V) > ACTIVE_V
    fraction = float(active.mean())
    if fraction < DEAD_FRACTION:
        regime = "decays"
    elif fraction > FILL_FRACTION:
        regime = "fills"
    elif fraction <= 0.5:
        regime = "spots" if _median_compactness(active) >= COMPACT else "stripes"
    else:
        regime = "holes" if _median_compactness(~active) >= COMPACT else "stripes"
    return {"regime": regime, "active_fraction": fraction}


def _median_compactness(mask) -> float:
    """Median over the mask's cells of the compactness of the piece each cell is in."""
    labels = periodic_labels(mask)
    area = np.bincount(labels.ravel())
    # boundary edges of each cell: 4-neighbours (across the periodic edges) outside the mask
    edges = sum((~np.roll(mask, shift, axis)).astype(np.int64)
                for axis in (0, 1) for shift in (1, -1)) * mask
    perimeter = np.bincount(labels.ravel(), weights=edges.ravel(), minlength=len(area))
    with np.errstate(divide="ignore", invalid="ignore"):
        compact = np.where(perimeter > 0, 4 * np.pi * area / perimeter ** 2, 0.0)
    return float(np.median(compact[labels[mask]]))


def periodic_labels(mask):
    """Connected pieces of a 2D bool mask on a torus (4-connected): scipy labels the
    plane; pieces that touch across an edge are merged with a small union-find."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    parent = np.arange(n + 1)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in ((labels[0], labels[-1]), (labels[:, 0], labels[:, -1])):
        for i, j in zip(a[(a > 0) & (b > 0)], b[(a > 0) & (b > 0)]):
            parent[root(i)] = root(j)
    return np.array([root(i) for i in range(n + 1)])[labels]
