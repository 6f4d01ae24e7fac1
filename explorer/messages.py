"""The page's messages to the server: their one schema and its checks.

Every WebSocket text message is a JSON object with a "type" and the fields its type
lists in SCHEMA, nothing else. `parse` returns the checked message (defaults filled in)
or raises MessageError with one line naming the field, the value and the allowed range;
the server sends that line back and goes on serving. Bounds that depend on the session
(coordinates on its grid, the index of a stored pattern) are read from its `limits()`.
Nothing in a message is ever run: names are looked up in closed tables.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_TEXT_BYTES = 4096            # the largest JSON message a page sends is ~150 bytes
MAX_IMAGE_BYTES = 8 << 20        # an uploaded image file (binary message)
MIN_GRID, MAX_GRID = 16, 512     # grid side; 512^2 keeps a session under ~100 MB
MAX_STEPS_PER_FRAME = 200
MAX_TRAIN_STEPS = 20_000
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")   # a session file's name
VIEWS = ("V", "F", "K")


class MessageError(ValueError):
    """A message the server refuses; its text is sent back to the page."""



@dataclass(frozen=True)
class Field:
    kind: type                    # int, float, str or bool
    lo: Any = None                # bounds (inclusive): a number or a function of limits
    hi: Any = None
    choices: Any = None           # a tuple, or a function of limits returning one
    default: Any = None           # None: the field is required
    lo_open: bool = False
    pattern: re.Pattern | None = None

    def check(self, where: str, value, limits: dict):
        def resolve(x):
            return x(limits) if callable(x) else x

        if self.kind is bool:
            if not isinstance(value, bool):
                raise MessageError(f"{where}={value!r} must be true or false")
            return value
        if self.kind in (int, float):
            wanted = f"{'an integer' if self.kind is int else 'a number'}{self._range(resolve)}"
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and not math.isfinite(value):
                raise MessageError(f"{where}={value!r} must be a finite number")
            if not number or (self.kind is int and int(value) != value):
                raise MessageError(f"{where}={_short(value)} must be {wanted}")
            lo, hi = resolve(self.lo), resolve(self.hi)
            if (lo is not None and (value <= lo if self.lo_open else value < lo)) or \
                    (hi is not None and value > hi):
                raise MessageError(f"{where}={value!r} must be {wanted}")
            return self.kind(value)
        if not isinstance(value, str):
            raise MessageError(f"{where}={_short(value)} must be a string")
        choices = resolve(self.choices)
        if choices is not None and value not in choices:
            raise MessageError(f"{where}={_short(value)} must be one of {', '.join(choices)}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise MessageError(f"{where}={_short(value)} must be 1-64 letters, digits, _ or -, "
                               f"starting with a letter or digit")
        return value

    def _range(self, resolve) -> str:
        lo, hi = resolve(self.lo), resolve(self.hi)
        if lo is not None and hi is not None:
            return f" in {'(' if self.lo_open else '['}{lo}, {hi}]"
        if lo is not None:
            return f" {'>' if self.lo_open else '>='} {lo}"
        return ""


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _x_max(limits):
    return limits["grid"] - 1


def _pattern_max(limits):
    return limits["patterns"] - 1


LEVEL = Field(float, 0.0, 1.0)
SCHEMA: dict[str, dict[str, Field]] = {
    "new": {"grid": Field(int, MIN_GRID, MAX_GRID),
            "rule": Field(str, choices=lambda limits: limits["rules"])},
    "rule": {"rule": Field(str, choices=lambda limits: limits["rules"])},
    "pattern": {"name": Field(str, choices=lambda limits: limits["pattern_names"])},
    "clear_pattern": {},
    "paint": {"layer": Field(str, choices=("target", "cue", "erase")),
              "x": Field(int, 0, _x_max), "y": Field(int, 0, _x_max),
              "radius": Field(int, 1, lambda limits: max(1, limits["grid"] // 4), default=3),
              "value": Field(float, 0.0, 1.0, default=0.8)},
    "train": {"steps": Field(int, 1, MAX_TRAIN_STEPS, default=1000)},
    "cue": {"index": Field(int, 0, _pattern_max),
            "strength": Field(float, 0.0, 1.0, default=0.15),
            "fraction": Field(float, 0.0, 1.0, lo_open=True, default=1.0),
            "noise": Field(float, 0.0, 1.0, default=0.05)},
    "kick": {"level": LEVEL, "noise": Field(float, 0.0, 1.0, default=0.0)},
    "run": {}, "pause": {}, "step": {}, "reset": {}, "clear_scars": {},
    "speed": {"steps": Field(int, 1, MAX_STEPS_PER_FRAME)},
    "view": {"layer": Field(str, choices=VIEWS)},
    "save": {"name": Field(str, pattern=NAME_PATTERN)},
    "load": {"name": Field(str, pattern=NAME_PATTERN)},
    "list": {},
}


def parse(text: str | bytes, limits: dict) -> dict:
    """The checked message from one WebSocket text message (MessageError otherwise).

    limits: {"grid": side, "patterns": stored patterns, "rules": names, "pattern_names":
    names} of the session the message is for."""
    if len(text) > MAX_TEXT_BYTES:
        raise MessageError(f"message of {len(text):,} bytes is over the limit of "
                           f"{MAX_TEXT_BYTES:,}")
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise MessageError("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise MessageError("message must be a JSON object with a \"type\"")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise MessageError(f"type={_short(kind)} must be one of {', '.join(SCHEMA)}")
    fields = SCHEMA[kind]
    unknown = sorted(set(message) - set(fields) - {"type"})
    if unknown:
        raise MessageError(f"{kind}: unknown field {_short(unknown[0])}; it takes "
                           f"{', '.join(fields) or 'no fields'}")
    if kind == "cue" and limits["patterns"] == 0:
        raise MessageError("cue: no pattern is stored yet; train one first")
    out = {"type": kind}
    for name, field in fields.items():
        if name not in message:
            if field.default is None:
                raise MessageError(f"{kind}: field {name!r} is missing")
            out[name] = field.default
            continue
        out[name] = field.check(f"{kind}: {name}", message[name], limits)
    return out
