import sys
from pathlib import Path

# tests import the flat top-level modules (substrate, scarring, ...) from the repo root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
