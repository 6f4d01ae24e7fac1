"""Tests for hopfield.py, nca.py, experiments/baselines.py and experiments/nca_growth.py."""
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from models import hopfield, nca

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads are ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hadamard(n):
    H = torch.ones(1, 1)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def random_bipolar(k, N, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(k, N, generator=g) < 0.5, 1.0, -1.0)


def flip(P, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(P.shape, generator=g) < fraction, -P, P)


# ---------------------------------------------------------------- classical Hopfield

def test_field_equals_dense_hebbian_without_forming_it():
    P = random_bipolar(5, 40, 0)
    s = random_bipolar(3, 40, 1)
    W = (P.t() @ P - 5 * torch.eye(40)) / 40  # the dense matrix, only for the check
    net = hopfield.ClassicalHopfield(P)
    assert torch.allclose(net.field(s), s @ W.t(), atol=1e-6)
    assert net.stored_numbers() == 5 * 40


def test_orthogonal_patterns_recalled_exactly_sync_and_async():
    P = hadamard(64)[[3, 17, 40, 55]]  # 4 mutually orthogonal rows, N = 64
    net = hopfield.ClassicalHopfield(P)
    noisy = flip(P, 0.1, seed=2)
    assert not torch.equal(noisy, P)
    s, _ = net.recall_sync(noisy)
    assert torch.equal(s, P)
    s, _ = net.recall_async(noisy, seed=0)
    assert torch.equal(s, P)


def test_classical_capacity_small_load_exact_large_load_fails():
    N = 100
    P = random_bipolar(3, N, 3)  # 0.03 N: every pattern is a fixed point
    s, _ = hopfield.ClassicalHopfield(P).recall_async(P, seed=0)
    assert torch.equal(s, P)
    P = random_bipolar(30, N, 3)  # 0.3 N, beyond ~0.138 N: retrieval collapses
    net = hopfield.ClassicalHopfield(P)
    Q = P[:12]
    for s in (net.recall_sync(Q)[0], net.recall_async(Q, seed=0)[0]):
        overlap = (s * Q).mean(1)
        assert overlap.mean() < 0.7
        assert (overlap == 1).float().mean() < 0.1


def test_centred_rule_stores_sparse_images_the_plain_rule_cannot():
    imgs = torch.zeros(3, 20, 20)  # three disjoint squares: sparse, mostly shared background
    imgs[0, 2:8, 2:8] = 0.8
    imgs[1, 12:18, 3:9] = 0.8
    imgs[2, 6:12, 11:17] = 0.8
    P = hopfield.to_bipolar(imgs)
    plain = hopfield.ClassicalHopfield(P)
    s, _ = plain.recall_sync(P)
    assert not (s == P).all(1).any()          # no stored image is even a fixed point
    assert torch.equal(s[0], s[1]) and torch.equal(s[1], s[2])  # one mixture attractor
    centred = hopfield.ClassicalHopfield(P, centred=True)
    assert torch.equal(centred.recall_sync(P)[0], P)
    assert torch.equal(centred.recall_async(flip(P, 0.05, seed=3), seed=0)[0], P)


def test_async_never_raises_energy():
    P = random_bipolar(8, 60, 4)
    net = hopfield.ClassicalHopfield(P)
    s0 = random_bipolar(4, 60, 5)
    s1, _ = net.recall_async(s0, max_sweeps=1, seed=1)
    assert (net.energy(s1) <= net.energy(s0) + 1e-6).all()


def test_rejects_non_bipolar_and_wrong_size():
    with pytest.raises(ValueError):
        hopfield.ClassicalHopfield(torch.rand(3, 10))
    with pytest.raises(ValueError):
        hopfield.ClassicalHopfield(torch.ones(3, 10)).recall_sync(torch.ones(1, 11))
    with pytest.raises(ValueError):
        hopfield.ModernHopfield(torch.ones(3, 10), beta=0)


# ---------------------------------------------------------------- modern Hopfield

def test_modern_hopfield_one_step_retrieval_large_beta():
    P = random_bipolar(10, 64, 6)
    net = hopfield.ModernHopfield(P, beta=1.0)
    q = flip(P[3:4], 0.2, seed=7)
    nearest = int((q @ P.t()).argmax())
    assert nearest == 3
    out = net.update(q)
    assert torch.allclose(out, P[3:4], atol=1e-5)
    x, iters = net.recall(q)
    assert iters <= 2 and torch.allclose(x, P[3:4], atol=1e-5)


def test_modern_hopfield_small_beta_blends():
    P = random_bipolar(10, 64, 6)
    out = hopfield.ModernHopfield(P, beta=1e-4).update(P[3:4])
    assert torch.allclose(out[0], P.mean(0), atol=0.05)  # the mean of the patterns, not one


def test_binarize_and_images():
    t = torch.zeros(1, 8, 8)
    t[0, 2:6, 2:6] = 0.8
    cue = 0.15 * t + 0.01
    s = hopfield.binarize(cue)
    assert torch.equal(s, hopfield.to_bipolar(t))
    img = hopfield.to_image(s, 8, 8)
    assert torch.allclose(img, t)
    assert torch.equal(hopfield.binarize(torch.full((1, 4, 4), 0.3)), -torch.ones(1, 16))


# ---------------------------------------------------------------- NCA

def test_nca_step_shape_and_alive_masking():
    torch.manual_seed(0)
    m = nca.NCA()
    torch.nn.init.normal_(m.w2.weight, std=0.1)
    x = torch.zeros(2, 16, 12, 12)
    x[:, 3:, 6, 6] = 1.0
    x[:, 0] = 0.5  # dead cells carrying colour must be cleared by the mask
    g = torch.Generator().manual_seed(0)
    y = m.step(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    near = torch.zeros(12, 12, dtype=torch.bool)
    near[5:8, 5:8] = True  # the only cells with a living neighbour before the step
    assert (y[:, :, ~near] == 0).all()
    # zero-initialised output layer: the update is the identity on living cells
    m0 = nca.NCA()
    z = nca.seed_state(1, 9, 9)
    assert torch.equal(m0.step(z, g), z)


def test_nca_fire_rate_masks_updates():
    m = nca.NCA()
    torch.nn.init.constant_(m.w2.bias, 0.01)
    x = torch.ones(1, 16, 10, 10)
    y = m.step(x, torch.Generator().manual_seed(1))
    changed = (y - x).abs().sum(1) > 0
    frac = changed.float().mean().item()
    assert 0.3 < frac < 0.7  # fire rate 0.5


def test_nca_training_lowers_loss():
    target = torch.zeros(1, 4, 8, 8)
    target[0, :, 2:6, 2:6] = 0.8
    model = nca.NCA()
    start = lambda idx, g: nca.seed_state(len(idx), 8, 8)

    def held_out_loss():
        with torch.no_grad():
            x = model(start([0, 0], None), 3, torch.Generator().manual_seed(9))
        return float(((x[:, :4] - target) ** 2).mean())

    before = held_out_loss()
    hist = nca.train(model, target, start, steps=4, pool_size=4, batch=2, rollout=(3, 3), lr=1e-2,
                     seed=0)
    assert hist["steps_done"] == 4 and len(hist["loss"]) == 4
    assert held_out_loss() < 0.9 * before


def test_ssim_psnr_and_spectrum():
    a = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(nca.ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert (nca.ssim(a, 1 - a) < 0.5).all()
    assert (nca.psnr(a, a) == 100).all()
    spec = nca.radial_power_spectrum(torch.full((16, 16), 0.3).numpy())
    assert spec.shape == (8,) and abs(spec).max() < 1e-12


def test_shipped_weights_and_target_load():
    """The shipped weights must be there (a missing file fails, it does not skip)."""
    for name in ("nca_emoji.pt", "nca_cue.pt"):
        path = ROOT / "weights" / name
        assert path.is_file(), f"{path} is not shipped"
        model, meta = nca.load_weights(path)
        assert model.n_params() == 8336 and meta["history"]["steps_done"] >= 1
    assert (ROOT / "assets" / "nca_target.png").is_file()


class _Payload:
    """Unpickling this calls open(path, "w"): stands in for any code a crafted file runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("writer", ["torch", "raw_pickle"])
def test_crafted_weights_file_runs_nothing(tmp_path, writer):
    import pickle

    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "evil.pt"
    blob = {"state_dict": {}, "channels": 16, "hidden": 128, "fire_rate": 0.5,
            "meta": _Payload(marker)}
    if writer == "torch":
        torch.save(blob, crafted)
    else:
        crafted.write_bytes(pickle.dumps(blob))
    with pytest.raises(ValueError, match="refused") as err:
        nca.load_weights(crafted)
    assert not marker.exists()
    assert str(crafted) in str(err.value) and "\n" not in str(err.value)


def test_weights_not_torch_or_wrong_layout(tmp_path):
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match="refused"):
        nca.load_weights(tmp_path / "junk.pt")
    torch.save({"state_dict": {"w1.weight": torch.zeros(2, 2)}, "channels": 16, "hidden": 128,
                "fire_rate": 0.5}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="do not fit"):
        nca.load_weights(tmp_path / "shape.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a dict"):
        nca.load_weights(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        nca.load_weights(tmp_path / "missing.pt")


# ---------------------------------------------------------------- scripts end to end

SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())


def _run(args, tmp_path, env=None):
    return subprocess.run([sys.executable, *args, "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)


@pytest.mark.slow
def test_baselines_quick(tmp_path):
    out, weights = tmp_path / "out", tmp_path / "cue.pt"
    r = _run(["-m", "experiments.baselines", "--quick", "--seeds", "2", "--retrain-nca",
              "--nca-weights", str(weights)], out)
    assert r.returncode == 0, r.stderr
    assert "SMOKE RUN" in r.stdout
    assert not weights.exists()          # a smoke run never writes weights
    res = json.loads((out / "baselines.json").read_text())
    jsonschema.validate(res, SCHEMA)
    assert res["study"] == "baselines" and res["smoke_run"] is True and res["seeds"] == [0, 1]
    assert res["config"]["grid"] == 32 and res["config"]["ks"] == [1, 2]
    ref = res["reference"]["methods"]
    for m in ("scarring", "hopfield_sync", "hopfield_async", "modern_hopfield", "nca", "cue"):
        for met in ("cosine", "iou", "pearson"):
            assert 0 <= ref[m]["cue15"][met]["recall"]["mean"] <= 1 + 1e-6 or met == "pearson"
        assert len(ref[m]["cue15"]["cosine"]["matrix_mean"]) == 3
    assert ref["modern_hopfield"]["cue15"]["cosine"]["recall"]["mean"] > 0.99
    assert res["nca"]["trained_now"] is True and res["nca"]["weights"] is None
    assert (out / "baselines.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left over"


def _one_line_error(main, argv, capsys):
    from common import cli

    capsys.readouterr()   # drop what earlier runs printed
    with pytest.raises(SystemExit) as exc:
        cli.run_cli(lambda: main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--ks", "0", "2"], "--ks 0"), (["--ks", "1,0"], "--ks 0"), (["--grid", "8"], "--grid 8"),
    (["--cue-strength", "0"], "--cue-strength 0"), (["--seeds", "0"], "--seeds 0"),
    (["--nca-time-budget", "0"], "--nca-time-budget 0"),
    (["--beta-per-sqrt-n", "nan"], "--beta-per-sqrt-n nan")])
def test_baselines_bad_flags_are_one_line_errors(tmp_path, capsys, argv, needle):
    """In-process (no second torch import): one 'error:' line, exit code 2, before work."""
    from experiments import baselines

    assert needle in _one_line_error(baselines.main, argv + ["--out", str(tmp_path / "o")],
                                     capsys)
    assert not (tmp_path / "o").exists()


def test_quick_keeps_explicit_flags():
    from common import cli
    from experiments import baselines, nca_growth

    args = cli.parse(baselines.Args, cli.split_commas(["--quick", "--ks", "1,3", "--grid",
                                                       "48"], "--ks"), quick=baselines.QUICK)
    assert args.ks == (1, 3) and args.grid == 48                     # explicit flags win
    assert args.train_steps == baselines.QUICK["train_steps"]        # quick shrinks the rest
    assert args.recall_steps == baselines.QUICK["recall_steps"]
    assert cli.parse(baselines.Args, ["--ks", "4", "1", "4"]).ks == (1, 4)   # sorted, once
    args = cli.parse(nca_growth.Args, ["--quick", "--train-steps", "5"], quick=nca_growth.QUICK)
    assert args.train_steps == 5 and args.grid == nca_growth.QUICK["grid"]


@pytest.mark.slow
def test_nca_growth_quick(tmp_path):
    out, weights = tmp_path / "out", tmp_path / "emoji.pt"
    r = _run(["-m", "experiments.nca_growth", "--quick", "--seeds", "2", "--retrain",
              "--weights", str(weights)], out)
    assert r.returncode == 0, r.stderr
    assert not weights.exists()          # a smoke run never writes the weights file
    res = json.loads((out / "nca_growth.json").read_text())
    jsonschema.validate(res, SCHEMA)
    assert res["study"] == "nca_growth" and res["smoke_run"] is True
    assert res["training"]["steps_done"] >= 1 and res["training"]["trained_now"] is True
    assert len(res["regeneration"]) == 4
    assert res["config"]["grid"] == 16 and res["config"]["grow_steps"] == 12
    assert (out / "nca_growth.png").is_file()
    model, _ = nca.load_weights(out / "nca_emoji_quick.pt")   # the smoke run's tiny model
    assert model.n_params() == 8336


@pytest.mark.slow
def test_nca_growth_retrain_writes_weights_that_load(tmp_path, capsys):
    """A full run (tiny by flags) writes --weights whole; the next run loads them."""
    from experiments import nca_growth

    weights = tmp_path / "w" / "emoji.pt"
    small = ["--grid", "16", "--target-size", "10", "--seeds", "1", "--weights", str(weights)]
    nca_growth.main(small + ["--retrain", "--train-steps", "1", "--out", str(tmp_path / "a")])
    assert weights.is_file() and [p.name for p in weights.parent.iterdir()] == ["emoji.pt"]
    model, meta = nca.load_weights(weights)
    assert meta["grid"] == 16 and meta["history"]["steps_done"] == 1
    nca_growth.main(small + ["--out", str(tmp_path / "b")])
    res = json.loads((tmp_path / "b" / "nca_growth.json").read_text())
    assert res["training"]["trained_now"] is False and res["training"]["steps_done"] == 1
    err = _one_line_error(nca_growth.main, ["--grid", "20", "--target-size", "10", "--weights",
                                            str(weights), "--out", str(tmp_path / "c")], capsys)
    assert "trained at grid 16" in err


def test_nca_growth_bad_input(tmp_path, capsys):
    from experiments import nca_growth

    err = _one_line_error(nca_growth.main, ["--target", str(tmp_path / "missing.png"),
                                            "--out", str(tmp_path / "o")], capsys)
    assert "missing.png" in err
    err = _one_line_error(nca_growth.main, ["--grid", "16", "--target-size", "20", "--out",
                                            str(tmp_path / "o")], capsys)
    assert "--target-size 20" in err


def test_baselines_nca_recall_takes_float64_cues():
    """--dtype float64 makes float64 cues; the NCA (float32 weights) must still run."""
    from experiments import baselines

    methods = baselines.Methods(None, None, {"nca_recall_steps": 2}, [0], nca.NCA())
    V, _ = methods.recall("nca", None, torch.rand(1, 2, 8, 8, dtype=torch.float64))
    assert V.shape == (1, 2, 8, 8) and torch.isfinite(V).all()
