"""The schema that every study's JSON meets (docs/results.schema.json): a stat block
anywhere in a file must be the one block of stats.py. Every study's --quick test calls
schema_check.check_results on its own file; these tests show that the check can fail."""
import copy

import jsonschema
import pytest

import stats
from tests.schema_check import check_results

ENVELOPE = {"schema_version": 2, "study": "toy", "command": "python toy.py", "seeds": [0, 1],
            "package_version": "0.1",
            "git_commit": "0" * 40, "versions": {"python": "3", "torch": "2", "numpy": "1",
                                                  "platform": "x"},
            "device": "cpu", "hardware": {"cpu_threads": 1}, "wall_time_s": 1.0,
            "smoke_run": True, "date_utc": "today", "config": {}}


def test_blocks_of_every_method_validate_at_any_depth():
    res = copy.deepcopy(ENVELOPE)
    res["deep"] = {"a": [{"b": stats.summarize([0.1, 0.3])}, stats.rate([1, 0], "clopper_pearson")],
                   "c": stats.summarize([0.2]), "d": stats.summarize([1.0, 1.0])}
    check_results(res)


@pytest.mark.parametrize("bad", [
    {"rate": 1.0, "ci95_low": 0.6, "ci95_high": 1.0, "k": 8, "n": 8},   # no mean, no method
    {**stats.summarize([0.1, 0.3]), "method": "Wilson"},                # not in the closed list
    {k: v for k, v in stats.summarize([0.1, 0.3]).items() if k != "std"},
])
def test_a_block_off_the_one_form_is_refused_wherever_it_sits(bad):
    res = copy.deepcopy(ENVELOPE)
    res["conditions"] = {"x": [{"settled": bad}]}
    with pytest.raises(jsonschema.ValidationError):
        check_results(res)
