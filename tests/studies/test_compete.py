"""Media whose memories compete (models/media.py), the battery (battery.py) and the
study's command line (experiments/compete.py), on small hand-made grids."""
import subprocess
import sys

import pytest
import torch

import battery
import patterns
from models import media
from tests.schema_check import check_results

G = 32


def squares(*corners, size=5, grid=G):
    """A pattern (H, W): PEAK on size x size squares at the given (row, col) corners."""
    p = torch.zeros(grid, grid)
    for r, c in corners:
        p[r:r + size, c:c + size] = patterns.PEAK
    return p


# two patterns of two squares each, the squares of one pattern far apart (a gap of
# unscarred ground between its parts), the patterns disjoint
P0 = squares((2, 2), (20, 20))
P1 = squares((2, 20), (20, 2))
PATS = torch.stack([P0, P1])[None]                      # (1, 2, G, G)
HALF0, HALF1 = squares((2, 2)), squares((2, 20))        # one square of each


def cosines(V, pats=PATS):
    return battery.similarities(V, pats)["cosine"][0]


def field(**kw):
    kw = {"radius": 24, "count": 400, "a": 0.05, **kw}
    return media.MediumMemory(media.make_medium("hebbian_field", **kw), max_steps=80)


@pytest.mark.slow
def test_hebbian_field_mixed_cue_resolves_to_one_pattern_and_noise_lights_nothing():
    mem = field()
    stored, _ = mem.store(PATS, [0])
    g = torch.Generator().manual_seed(0)
    cues = torch.stack([0.2 * (HALF0 + HALF1) + 0.02 * torch.rand(G, G, generator=g),
                        0.2 * HALF0, (0.1 * torch.randn(G, G, generator=g)).clamp(0, 1),
                        torch.full((G, G), 0.12)])[None]
    V, _ = mem.recall(stored, cues)
    cos = cosines(V)
    mixed = cos[0].sort().values
    assert mixed[1] >= 0.7 and mixed[0] <= 0.3, cos[0]          # the mixed cue chose one
    assert cos[1, 0] >= 0.9 and cos[1, 1] <= 0.3, cos[1]         # a half completes across the gap
    assert cos[2].max() <= 0.3 and cos[3].max() <= 0.3, cos[2:]   # noise, uniform: nothing


def test_hebbian_field_radius_below_the_gap_cannot_complete():
    # the mechanism of completion is the coupling across the gap: a kernel shorter than
    # the gap between a pattern's squares leaves the missing square dark
    mem = field(radius=3, count=48)
    stored, _ = mem.store(PATS, [0])
    V, _ = mem.recall(stored, (0.2 * HALF0)[None, None])
    missing = (P0 > 0.3) & ~(HALF0 > 0.3)
    assert float(V[0, 0][missing].mean()) < 0.1


def test_hebbian_scar_is_local_covariance_and_balanced():
    m = media.make_medium("hebbian_field", radius=2, count=12, a=0.1)
    fields = m.fields(1, 8, 8)
    u = torch.zeros(1, 8, 8)
    u[0, 3, 3] = u[0, 3, 4] = 1.0
    fields = m.scar((u,), None, fields)
    W = fields["W"]
    assert torch.allclose(W.sum(1), torch.zeros(1, 8, 8), atol=1e-6)      # balanced
    k = m.offsets().index((0, 1))
    others = [i for i, d in enumerate(m.offsets()) if d != (0, 1)]
    # the weight from (3, 4) onto (3, 3) is the largest of that cell's weights
    assert W[0, k, 3, 3] > W[0, others, 3, 3].max()


def test_field_kernel_equals_the_torch_coupling_sum():
    """The numba coupling sum of the neural field against its torch reference: periodic
    wrap in both axes (offsets up to the radius on a grid not much larger), several
    members per seed reading their own seed's weights."""
    pytest.importorskip("numba")
    from models import field_kernel
    g = torch.Generator().manual_seed(3)
    offsets = media.disc_offsets(6, 30, 1)
    W = torch.randn(3, len(offsets), 13, 19, generator=g)
    u = torch.rand(6, 13, 19, generator=g)
    want = media.coupled_input_torch(u, W, offsets)
    got = field_kernel.coupled_input(u, W, offsets)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    # a member reads its own seed's weights: zeroing seed 1's weights zeroes members 2, 3
    W[1] = 0.0
    got = field_kernel.coupled_input(u, W, offsets)
    assert got[2:4].abs().max() == 0 and got[0].abs().max() > 0


def test_link_scar_strengthens_only_coactive_edges_and_parts_do_not_complete_across_gaps():
    m = media.make_medium("link_scar")
    mem = media.MediumMemory(m, max_steps=200)
    stored, _ = mem.store(PATS, [0])
    c = stored["c"][0]
    assert c[0, 3, 3] > m.c0 + 0.1 and torch.isclose(c[0, 12, 12], torch.tensor(m.c0))
    V, _ = mem.recall(stored, (0.2 * HALF0)[None, None])
    assert float(V[0, 0][(HALF0 > 0)].mean()) > 0.8             # held by its wires
    missing = (P0 > 0.3) & ~(HALF0 > 0.3)
    assert float(V[0, 0][missing].mean()) < 0.1                 # no wire across the gap


def test_area_inhibition_acts_only_beyond_one_patterns_area():
    inh = media.AreaInhibition(area=0.1, lit=0.1, gain=4.0)
    F, K = torch.full((3, 10, 10), 0.06), torch.full((3, 10, 10), 0.05)
    V = torch.zeros(3, 10, 10)
    V[0, :1] = 0.5            # 10% lit: no inhibition
    V[1, :5] = 0.5            # 50% lit: the feed is cut
    V[2] = 0.05               # a faint uniform kick (mean V 0.05) lights no area: none
    F2, K2, _ = inh.epilogue(V, F, K, F.clone())
    assert torch.equal(F2[0], F[0]) and torch.equal(F2[2], F[2]) and torch.equal(K2, K)
    assert float(F2[1].max()) == 0.0


class Oracle:
    """A perfect memory for the battery's plumbing: the stored pattern whose mask holds
    most of the cue's lit cells, if they cover a third of it and at least 40% of the lit
    cells lie on it (a featureless kick does not); else nothing."""
    name = "oracle"

    def store(self, pats, seeds, snapshots=()):
        return pats, {k: pats[:, :k] for k in snapshots}

    def recall(self, stored, cues):
        masks = (stored > 0.3).float()                                  # (S, P, H, W)
        lit = (cues > 0.1).float()
        inside = torch.einsum("schw,sphw->scp", lit, masks)
        cover = inside / masks.sum((-2, -1))[:, None]
        purity = inside / lit.sum((-2, -1))[..., None].clamp_min(1)
        best = cover.argmax(-1)
        ok = (cover.amax(-1) >= 0.3) & (purity.amax(-1) >= 0.4)
        out = torch.stack([stored[s, best[s]] for s in range(len(stored))])
        return out * ok[..., None, None], {"steps": 1}


@pytest.mark.slow
def test_battery_passes_a_perfect_memory_and_fails_an_imprint():
    cfg = battery.BatteryConfig(grid=64, k_main=3, ks=(1, 2, 4))
    out = battery.run_battery(Oracle(), [0, 1], cfg, progress=lambda m: None)
    v = out["verdict"]
    assert out["compete"]["rate"]["k"] >= out["compete"]["rate"]["n"] - 1 >= 3   # the oracle is crude
    assert v["refuse"] and out["complete"]["settled"]["mean"] > 0.99
    assert out["capacity"]["capacity"] == 4

    class Imprint(Oracle):       # lights every stored pattern whatever the cue
        def recall(self, stored, cues):
            S, C = cues.shape[:2]
            return stored.amax(1, keepdim=True).expand(S, C, *stored.shape[-2:]), {}

    bad = battery.run_battery(Imprint(), [0, 1], battery.BatteryConfig(
        grid=64, k_main=3, rows=("compete", "refuse")), progress=lambda m: None)
    assert not bad["verdict"]["compete"] and not bad["verdict"]["refuse"]


def test_cli_refuses_a_radius_beyond_the_grid_in_one_line():
    r = subprocess.run([sys.executable, "-m", "experiments.compete", "--grid", "64",
                        "--radius", "80", "--out", "/tmp/never"], capture_output=True, text=True)
    assert r.returncode == 2 and "--radius" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_quick_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.compete", "--quick", "--media",
                        "link_scar", "--rows", "compete", "refuse", "--seeds", "1", "--grid", "48",
                        "--threads", "1",
                        "--quiet", "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    check_results(tmp_path / "c" / "compete.json")
    assert (tmp_path / "c" / "compete_states.png").is_file()


@pytest.mark.slow
def test_cli_capacity_row_alone_against_grid_size(tmp_path):
    """The capacity row alone (no figure rows) on two grids writes its results and no
    states figure."""
    r = subprocess.run([sys.executable, "-m", "experiments.compete", "--quick", "--media",
                        "link_scar", "--rows", "capacity", "--ks", "1", "2", "--seeds", "1",
                        "--grid", "32", "--capacity-grids", "48", "--threads", "1", "--quiet",
                        "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    check_results(tmp_path / "c" / "compete.json")
    assert not (tmp_path / "c" / "compete_states.png").exists()
    import json
    body = json.loads((tmp_path / "c" / "compete.json").read_text())
    assert set(body["media"]["link_scar"]["capacity_by_grid"]) == {"48"}
