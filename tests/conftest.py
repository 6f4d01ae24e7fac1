"""Tests run from the repository root (`python -m pytest`): its modules and packages
(substrate, scarring, models, common, experiments, benchmarks) import from there."""
