"""pyproject.toml and requirements.txt agree, and the package lists name real files."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_install_routes_agree():
    """requirements.txt and pip install ".[all]" install the same set."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["all"] == ["parametric-scarring[mnist,audio,dev]"]
    named = set(_requirement_lines(project["dependencies"]))
    for extra in ("mnist", "audio", "dev"):
        named |= set(_requirement_lines(extras[extra]))
    assert named == set(_requirement_lines((ROOT / "requirements.txt").read_text().splitlines()))


def test_clone_only_installs_no_module():
    """pyproject.toml says the project runs from a clone and lists nothing to install."""
    tomllib = pytest.importorskip("tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["py-modules"] == [] and tool["packages"] == []
    assert "runs from a clone" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.slow
def test_the_wheel_holds_metadata_only(tmp_path):
    """What `pip install .` would put into site-packages: the dist-info, no module."""
    import subprocess
    import sys
    import zipfile

    import shutil

    pytest.importorskip("setuptools")
    src = tmp_path / "src"   # the whole clone, so that anything it would install is there
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "scarring_results", "__pycache__", "build", "*.egg-info", ".venv"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = tmp_path.glob("parametric_scarring-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert all(t.endswith(".dist-info") for t in tops), tops
