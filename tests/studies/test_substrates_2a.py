"""experiments/substrates_2a end to end at a small size, and its bad input."""

import pytest

from experiments import substrates_2a
from tests.schema_check import check_results


def test_bad_audio_rate_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--audio-rate 3000"):
        substrates_2a.main(["--parts", "rev1", "--audio-rate", "3000", "--out",
                            str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_quick_run_writes_the_tables_and_the_figure(tmp_path):
    out = tmp_path / "o"
    substrates_2a.main(["--quick", "--threads", "1", "--quiet", "--grid", "24",
                        "--parts", "2a", "rev2", "rev1",
                        "--audio-grid", "32", "--audio-seconds", "0.02",
                        "--substrates", "rd", "hopfield", "kuramoto", "kuramoto_hebbian",
                        "--out", str(out)])
    res = check_results(out / "substrates_2a.json")
    assert (out / "substrates_2a.png").is_file()
    # 2A's Hopfield weights are ~1/N: its recall is the decayed cue, read as the cue is
    assert res["2a"]["hopfield"]["answers"] == res["2a"]["cue_alone"]["answers"]
    for name in ("rd", "hopfield", "kuramoto", "kuramoto_hebbian", "cue_alone"):
        acc = res["2a"][name]["accuracy"]
        assert 0 <= acc["mean"] <= 1 and acc["n"] == 2
    assert res["2a"]["rd"]["published"] == 0.667
    for part in ("rev1", "rev2"):
        assert 0 <= res[part]["off_diagonal"]["mean"] <= 1
        assert len(res[part]["answers"]) == 2


@pytest.mark.slow
def test_quick_battery_reads_settled_recalls(tmp_path):
    out = tmp_path / "o"
    substrates_2a.main(["--quick", "--threads", "1", "--quiet", "--parts", "battery",
                        "--battery-media", "kuramoto", "--battery-rows", "compete", "refuse",
                        "complete", "--battery-max-steps", "350", "--out", str(out)])
    res = check_results(out / "substrates_2a.json")["battery"]["kuramoto"]
    assert res["max_steps"] == 350 and "capacity" not in res and "compete" in res
    every = res["settle_every_recall"]      # 2 seeds x 21 main cues (two stored patterns)
    assert every["recalls"] == 2 * 21 and 0 <= every["settled"] <= every["recalls"]
    assert every["steps_max"] <= 350 and res["settle"]["settled_share"] is not None


def test_bad_battery_max_steps_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--battery-max-steps") as e:
        substrates_2a.main(["--parts", "battery", "--battery-max-steps", "5", "--out",
                            str(tmp_path / "o")])
    assert ">= 10" in str(e.value) and not (tmp_path / "o").exists()
