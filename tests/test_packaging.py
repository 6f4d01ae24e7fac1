"""pyproject.toml and requirements.txt agree, and the package lists name real files."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirement_lines(text):
    """{name: specifier} of a requirements file or a list of PEP 508 strings."""
    out = {}
    for line in text:
        line = line.split("#")[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line).groups()
            out[name.lower()] = spec.replace(" ", "")
    return out


def test_requirements_match_pyproject():
    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_lines(project["dependencies"])
    extras = {name: _requirement_lines(deps)
              for name, deps in project["optional-dependencies"].items()}
    reqs = _requirement_lines((ROOT / "requirements.txt").read_text().splitlines())
    assert core["torch"] == "==2.13.0" and "pytest" not in core
    assert {"pytest", "jsonschema"} <= set(extras["dev"])
    every = {**core, **{k: v for deps in extras.values() for k, v in deps.items()}}
    for name, spec in reqs.items():
        assert every.get(name) == spec, f"requirements.txt {name}{spec} vs pyproject {every.get(name)}"
    assert set(core) <= set(reqs)                     # the README's install runs every script
    assert set(extras["dev"]) <= set(reqs)            # ... and the tests


def test_listed_modules_and_packages_exist():
    tomllib = pytest.importorskip("tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for mod in tool["py-modules"]:
        assert (ROOT / f"{mod}.py").is_file(), mod
    tops = {p.split(".")[0] for p in tool["packages"]["find"]["include"]}
    present = {p for p in tops if (ROOT / p / "__init__.py").is_file()}
    assert {"models", "common", "experiments", "benchmarks"} <= present
    top_level = {p.stem for p in ROOT.glob("*.py")}
    assert top_level <= set(tool["py-modules"]), top_level - set(tool["py-modules"])
