"""--init-from on every study: a saved Gray-Scott state (common/state.py) becomes the
medium a study's trainings start from (scarring.Study(initial=...)), a study whose state
is not such a medium refuses the flag in one line, and a file of another grid or batch
is refused before any work."""
import importlib
import json
from pathlib import Path

import pytest
import torch

import memory
import patterns
import scarring
from common import cli
from common.state import file_digest, load_state, members, save_state
from protocol import Protocol

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scarring_validation"] + sorted(
    f"experiments.{p.stem}" for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
STARTS = {"scarring_validation", "experiments.capacity", "experiments.cue_specificity",
          "experiments.robustness", "experiments.composition", "experiments.associative",
          "experiments.ablations", "experiments.audio", "experiments.hardware",
          "experiments.sweep"}
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


def test_saved_fields_false_starts_from_the_saved_U_V_on_the_unscarred_fields(saved):
    state, fresh = load_state(saved), scarring.Study(P)
    study = scarring.Study(P, initial=state, saved_fields=False)
    assert set(study.initial) == {"U", "V"}
    out = _store(study)
    assert (out["F"] - P.f0).abs().max() < 0.005                 # not the saved scar (+0.01)
    assert not torch.equal(out["V"], _store(fresh)["V"])          # from the saved U, V
    F0, K0 = (torch.full((2, GRID, GRID), x) for x in (0.03, 0.06))   # own unscarred fields
    own = _store(study, F=F0, K=K0, background={"F": F0, "K": K0})
    assert torch.equal(own["V"], memory.store(
        study.medium, patterns.make_pattern("ring", GRID, GRID)[None], [0, 1], 3,
        study.settings(), fields={"F": F0, "K": K0}, protocol=P, background={"F": F0, "K": K0},
        initial=(state["U"], state["V"]))["V"])
    scarred = _store(study, F=own["F"], K=own["K"], background={"F": F0, "K": K0})
    assert torch.equal(scarred["V"], _store(fresh, F=own["F"], K=own["K"],
                                            background={"F": F0, "K": K0})["V"])


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


# ---- the studies whose conditions change the medium, and the audio grids, and the sweep


class Stopped(Exception):
    pass


class Trainings(list):
    stop_at = 1   # the study stops after this training


@pytest.fixture
def trainings(monkeypatch):
    """Every training (memory.store) of a study runs 1 step and is recorded ({"initial",
    "fields", "out": its result, ...}); the study stops after training `stop_at`."""
    real, seen = memory.store, Trainings()

    def store(medium, targets, seeds, steps, settings, **kw):
        seen.append({**kw, "out": real(medium, targets, seeds, 1, settings, **kw)})
        if len(seen) == seen.stop_at:
            raise Stopped
        return seen[-1]["out"]

    monkeypatch.setattr(memory, "store", store)
    return seen


TWO_SEEDS = ["--quick", "--seeds", "2", "--grid", str(GRID), "--quiet", "--threads", "1",
             "--device", "cpu"]


def _run_until_stopped(module, argv, saved, tmp_path):
    with pytest.raises(Stopped):
        importlib.import_module(f"experiments.{module}").main(
            [*TWO_SEEDS, *argv, "--init-from", str(saved), "--out", str(tmp_path / "o")])


def _starts_from_saved_U_V(training, saved, dtype=torch.float32):
    state = load_state(saved)
    U, V = training["initial"]
    assert U.dtype == V.dtype == dtype
    assert torch.equal(V, state["V"].to(dtype)) and torch.equal(U, state["U"].to(dtype))


@pytest.mark.parametrize("condition, f0, dtype", [
    ("regime mazes (0.029, 0.057)", 0.029, torch.float32), ("float64", P.f0, torch.float64)])
def test_ablations_start_from_the_saved_U_V_on_each_conditions_own_fields(
        condition, f0, dtype, saved, tmp_path, trainings):
    trainings.stop_at = 2   # the reference's store, then the condition's
    _run_until_stopped("ablations", ["--conditions", condition], saved, tmp_path)
    for training in trainings:
        _starts_from_saved_U_V(training, saved, training["out"]["F"].dtype)
        assert training["fields"] is None   # the condition's unscarred medium
    ref, cond = trainings
    assert ref["out"]["F"].dtype == torch.float32 and cond["out"]["F"].dtype == dtype
    # one scarring step (<= 0.003) from the condition's own F0: the saved scar (+0.01) is absent
    assert (cond["out"]["F"] - f0).abs().max() < 0.005


def test_hardware_starts_each_rule_from_the_saved_U_V_on_its_own_medium(saved, tmp_path,
                                                                       trainings):
    _run_until_stopped("hardware", ["--rules", "surround"], saved, tmp_path)
    _starts_from_saved_U_V(trainings[0], saved)
    F_bg, K_bg = scarring.make_rule("surround").background()
    assert trainings[0]["fields"] is None
    assert (trainings[0]["out"]["K"] - K_bg).abs().max() < 0.003   # the saved K is 0.06


def test_associative_starts_each_rule_from_the_saved_U_V_on_its_own_medium(saved, tmp_path,
                                                                          trainings):
    _run_until_stopped("associative", ["--rules", "channel"], saved, tmp_path)
    _starts_from_saved_U_V(trainings[0], saved)
    F_bg, K_bg = scarring.make_rule("channel").background()
    assert (trainings[0]["out"]["K"] - K_bg).abs().max() < 0.003


def test_associative_caches_a_condition_on_the_saved_states_content(saved, tmp_path):
    from experiments import associative

    args = cli.parse(associative.Args, [*TWO_SEEDS, "--init-from", str(saved), "--cache",
                                        str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    entry = associative._cache_entry(args, "channel", [0, 1])
    assert entry.settings["settings"]["init_from"] == file_digest(saved)


def test_audio_stores_start_from_the_saved_medium(saved, tmp_path, trainings):
    _run_until_stopped("audio", ["--parts", "published"], saved, tmp_path)
    _starts_from_saved_U_V(trainings[0], saved)
    assert (trainings[0]["out"]["F"][:, 4:20, 4:20] > P.f0 + 0.009).all()   # the saved scar


def test_audio_refuses_a_saved_state_off_a_parts_grid_or_short_of_digit_seeds(saved,
                                                                            tmp_path):
    from experiments import audio

    base = [*TWO_SEEDS, "--init-from", str(saved), "--out", str(tmp_path / "o")]
    args = cli.parse(audio.Args, [*base, "--parts", "published", "vowels", "--vowel-grid",
                                  "48"])
    with pytest.raises(ValueError, match=r"grid is 32x32 but this run's is 48x48 \(--vowel-grid\)"):
        args.saved_state()
    assert cli.parse(audio.Args, [*base, "--parts", "vowels", "--vowel-grid", "32",
                                  "--grid", "64"]).saved_state() is not None
    with pytest.raises(ValueError, match="--digit-seeds 3: with --init-from at most --seeds"):
        cli.parse(audio.Args, [*base, "--parts", "digits", "--digit-seeds", "3"])


def test_members_picks_batch_members_and_keeps_shared_fields(saved):
    state = load_state(saved)
    picked = members(state, [1, 0, 1])
    assert torch.equal(picked["V"], state["V"][[1, 0, 1]]) and picked["F"] is state["F"]
    assert members(state, slice(0, 1))["U"].shape == (1, GRID, GRID)


def _sweep_settings(**over):
    from experiments import sweep

    p = Protocol(grid=GRID, train_steps=12, recall_steps=8)
    return {k: v for k, v in {**sweep.protocol_fields(p), "device": "cpu", **over}.items()
            if k not in ("f0", "k0")}


POINTS = [{"f0": 0.03, "k0": 0.06}, {"f0": 0.05, "k0": 0.055}]


def test_sweep_members_start_from_their_seeds_saved_U_V_on_their_points_fields(saved,
                                                                              trainings):
    from experiments import sweep

    init = {"path": str(saved), "sha256": file_digest(saved), "seeds": [0, 1]}
    with pytest.raises(Stopped):
        sweep.run_points(POINTS, [1], **_sweep_settings(init_from=init))   # a chunk of seed 1
    state, first = load_state(saved), trainings[0]
    assert torch.equal(first["initial"][1], state["V"][[1, 1]])   # points x seed 1
    assert first["fields"]["F"][:, 0, 0].tolist() == pytest.approx([0.03, 0.05])
    assert (first["out"]["K"][1] - 0.055).abs().max() < 0.003      # not the saved K
    with pytest.raises(ValueError, match="content changed since the work was planned"):
        sweep.run_points(POINTS, [0], **_sweep_settings(init_from={**init, "sha256": "0" * 64}))


def test_a_sweep_from_a_saved_state_records_other_numbers(saved):
    from experiments import sweep

    init = {"path": str(saved), "sha256": file_digest(saved), "seeds": [0, 1]}
    fresh = sweep.run_points(POINTS[:1], [0, 1], **_sweep_settings())
    cont = sweep.run_points(POINTS[:1], [0, 1], **_sweep_settings(init_from=init))
    assert [r["train_scarred_cosine"] for r in cont] != [r["train_scarred_cosine"] for r in fresh]
    assert [r["train_control_cosine"] for r in cont] != [r["train_control_cosine"] for r in fresh]


def test_the_sweep_keys_its_chunks_on_the_saved_state_and_refuses_a_swept_grid(saved,
                                                                              tmp_path):
    from experiments import sweep

    base = ["--quick", "--seeds", "2", "--grid", str(GRID), "--init-from", str(saved),
            "--out", str(tmp_path / "o")]
    args, grid, execution = sweep.parse_args(base)
    fixed = sweep.fixed_settings(args, grid, execution)
    assert fixed["init_from"] == {"path": str(saved.resolve()), "seeds": [0, 1],
                                  "sha256": file_digest(saved)}
    with pytest.raises(ValueError, match="use --grid, not --grid-grid"):
        sweep.parse_args([*base, "--grid-grid", "32"])
    with pytest.raises(ValueError, match="holds 2 batch members but this run has 3"):
        sweep.parse_args([*base, "--seeds", "3"])
