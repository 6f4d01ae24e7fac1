"""Media other than the Gray-Scott one, each a frozen dataclass registered by name.

A medium follows the plug-in sketch of docs (fields -> initial_state -> step ->
activity, and a local `scar` rule applied while it trains): its per-cell parameters
("fields") are what a scar changes, its state is what a cue sets and the physics moves.
`MEDIA` maps each `--medium` name to its class; `make_medium(name, **constants)` builds
one with constants overriding the defaults.
"""
from __future__ import annotations

MEDIA: dict[str, type] = {}


def register(cls):
    """Class decorator: make a medium selectable by name (`make_medium`, `--medium`)."""
    if not getattr(cls, "name", "") or cls.name in MEDIA:
        raise ValueError(f"medium name {getattr(cls, 'name', '')!r} is empty or taken")
    MEDIA[cls.name] = cls
    return cls


def medium_class(name: str) -> type:
    """The registered medium class called `name` (ValueError naming the choices if none)."""
    from models.media import hopfield_substrate, kuramoto  # noqa: F401  (registers them)

    if name not in MEDIA:
        raise ValueError(f"--medium {name!r}: must be one of {', '.join(sorted(MEDIA))}")
    return MEDIA[name]


def make_medium(name: str, **constants):
    """The medium called `name`, with constants overriding its defaults."""
    return medium_class(name)(**constants)
