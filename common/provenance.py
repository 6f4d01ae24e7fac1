"""Where a result came from: the repository's git commit and the project's version,
recorded in every results file, cache entry and saved state. A leaf module (standard
library only), so that every writer of those files can import it."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


NOT_A_CHECKOUT = "not a git checkout"


def git_commit() -> str:
    """The repository's commit (with "-dirty" when tracked files changed), or "not a git
    checkout" (no git, or the code does not sit in a git work tree)."""
    try:
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        if head.returncode != 0:
            return NOT_A_CHECKOUT
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return NOT_A_CHECKOUT


def package_version() -> str:
    """The project's version: pyproject.toml's [project] version (the one place it is
    written), or "unknown" where that file is missing."""
    import re

    try:
        text = (ROOT / "pyproject.toml").read_text()
    except OSError:
        return "unknown"
    found = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return found.group(1) if found else "unknown"
