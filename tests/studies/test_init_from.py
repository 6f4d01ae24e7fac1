"""--init-from on every study: a saved Gray-Scott state (common/state.py) becomes the
medium a study's trainings start from (scarring.Study(initial=...)), a study whose state
is not such a medium refuses the flag in one line, and a file of another grid or batch
is refused before any work."""
import importlib
import json
from pathlib import Path

import pytest
import torch

import patterns
import scarring
from common import cli
from common.state import load_state, save_state
from protocol import Protocol

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scarring_validation"] + sorted(
    f"experiments.{p.stem}" for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
STARTS = {"scarring_validation", "experiments.capacity", "experiments.cue_specificity",
          "experiments.robustness", "experiments.composition"}
GRID = 32
PATCH = (slice(4, 20), slice(4, 20))   # the saved medium's scar
P = Protocol(grid=GRID)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved medium of 2 seeds at 32^2: a lit square in V, a scarred patch in F, K."""
    U, V = torch.ones(2, GRID, GRID), torch.zeros(2, GRID, GRID)
    V[:, 8:16, 8:16] = 0.5
    F, K = torch.full((GRID, GRID), P.f0), torch.full((GRID, GRID), P.k0)
    F[PATCH] += 0.01
    K[PATCH] -= 0.005
    path = tmp_path_factory.mktemp("saved") / "state.npz"
    save_state(path, U=U, V=V, F=F, K=K, step=7, seeds=[0, 1], protocol=P)
    return path


def _store(study, scar=True, **kw):
    target = patterns.make_pattern("ring", GRID, GRID)[None]
    return study.store(target, [0, 1], 3, scar=scar, **kw)


@pytest.mark.slow
def test_a_study_with_a_saved_state_trains_from_it(saved):
    fresh, study = scarring.Study(P), scarring.Study(P, initial=load_state(saved))
    new, cont = _store(fresh), _store(study)
    assert (cont["F"][:, 4:20, 4:20] > P.f0 + 0.009).all()      # the saved scar is kept
    assert (new["F"][:, 4:8, 4:8] < P.f0 + 0.005).all()          # a fresh medium has none
    assert not torch.equal(cont["V"], new["V"])
    control = _store(study, scar=False)                           # the saved U, V on F0, K0
    assert (control["F"] == P.f0).all() and not torch.equal(control["V"], _store(fresh, False)["V"])
    for unchanged in (dict(from_saved=False), dict(F=new["F"], K=new["K"])):
        a, b = _store(study, **unchanged), _store(fresh, **unchanged)
        assert torch.equal(a["F"], b["F"]) and torch.equal(a["V"], b["V"]), unchanged


def test_a_saved_state_of_another_grid_or_batch_is_refused(saved):
    state = load_state(saved)
    with pytest.raises(ValueError, match="the saved state's grid is 32x32 but this run's is 24x24"):
        scarring.Study(Protocol(grid=24), initial=state)
    study = scarring.Study(P, initial=state)
    target = patterns.make_pattern("ring", GRID, GRID)[None]
    with pytest.raises(ValueError, match="holds 2 batch members but this training has 3"):
        study.store(target, [0, 1, 2], 3)


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_study_takes_init_from_or_refuses_it_in_one_line(module, saved, tmp_path):
    Args = importlib.import_module(module).Args
    argv = ["--init-from", str(saved), "--out", str(tmp_path / "o")]
    help_text = " ".join(cli.build_parser(Args).format_help().split())
    if module in STARTS:
        assert Args.saved_state_starts and "in this study:" in help_text
        assert cli.parse(Args, argv).init_from == str(saved)
    else:
        assert "this study refuses one:" in help_text
        with pytest.raises(ValueError) as refused:
            cli.parse(Args, argv)
        line = cli.error_line(refused.value)
        assert f"{Args.study} cannot start from a saved Gray-Scott state: " in line
        assert Args.saved_state_refusal in line


ROBUSTNESS = ["--quick", "--seeds", "2", "--grid", str(GRID), "--train-steps", "8",
              "--recall-steps", "6", "--damage-step", "3", "--quiet", "--threads", "1",
              "--device", "cpu"]
CAPACITY = ["--quick", "--seeds", "2", "--grid", str(GRID), "--ks", "1",
            "--multi-train-steps", "8", "--multi-recall-steps", "6", "--quiet", "--threads",
            "1", "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name, argv, key", [("robustness", ROBUSTNESS, "training"),
                                             ("capacity", CAPACITY, "families")])
def test_a_study_run_from_a_saved_state_differs_and_says_so(name, argv, key, saved, tmp_path):
    main = importlib.import_module(f"experiments.{name}").main
    main([*argv, "--out", str(tmp_path / "fresh")])
    main([*argv, "--init-from", str(saved), "--out", str(tmp_path / "saved")])
    fresh, cont = (json.loads((tmp_path / d / f"{name}.json").read_text())
                   for d in ("fresh", "saved"))
    assert "init_from" not in fresh
    assert cont["init_from"]["step"] == 7 and cont["init_from"]["path"] == str(saved)
    assert cont["config"]["init_from"] == str(saved)
    assert cont[key] != fresh[key]


def test_a_saved_state_that_does_not_fit_is_refused_before_work(saved, tmp_path, capsys,
                                                                monkeypatch):
    from experiments import robustness

    monkeypatch.setattr(robustness, "run", lambda *a: pytest.fail("ran"))
    with pytest.raises(SystemExit) as exit_:
        cli.run_cli(lambda: robustness.main([*ROBUSTNESS, "--grid", "48", "--init-from",
                                             str(saved), "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "the saved state's grid is 32x32 but this run's is 48x48" in err


def test_the_runs_seeds_win_over_the_files_and_the_start_says_so(saved, tmp_path, capsys,
                                                                 monkeypatch):
    from experiments import robustness

    class Started(Exception):
        pass

    def first_work(study, args, seeds):
        assert seeds == [5, 6] and torch.equal(study.initial["F"], load_state(saved)["F"])
        raise Started

    monkeypatch.setattr(robustness, "run", first_work)
    with pytest.raises(Started):
        robustness.main([*ROBUSTNESS, "--seed", "5", "--init-from", str(saved), "--out",
                         str(tmp_path / "o")])
    out = " ".join(capsys.readouterr().out.split())
    assert f"from the saved state {saved} (step 7, seeds [0, 1])" in out
    assert "this run's noise draws use --seed/--seeds ([5, 6])" in out
