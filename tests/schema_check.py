"""Validate a study's results file against docs/results.schema.json: the envelope, and
every statistics block anywhere in it as the one stat block of stats.py."""
import json
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def check_results(results) -> dict:
    """results: a path to a JSON file or its parsed dict. Raises jsonschema's
    ValidationError naming the first bad key; returns the dict."""
    if not isinstance(results, dict):
        results = json.loads(Path(results).read_text())
    error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(results))
    if error is not None:
        raise error
    return results
