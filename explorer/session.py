"""One explorer session: a medium, the patterns stored in it, and what the page does to it.

The physics is the project's own: the protocol (protocol.Protocol) names the medium and
the storage rule (scarring.RULES); scarring.Study builds its medium (the engine's
scarring.GrayScottMedium, on substrate.GrayScott) and the unscarred fields, and every step
runs through that medium's simulation (memory.Simulation: `run` with the rule's scar
update fused in while training, with the rule's recall inhibition, if any, otherwise;
`reset`; `lesion` for an erased region). Training starts, cues and kicks are the
project's (patterns.make_cue, masked_cue, uniform_cue), with their noise drawn from
protocol.noise_seeds. The session only keeps state and answers messages
(explorer.messages); the server owns the connection.
"""
from __future__ import annotations

import dataclasses
import struct
import uuid
from pathlib import Path

import numpy as np
import torch

import memory
import patterns
import scarring
from common import cli
from explorer.messages import MAX_GRID, MAX_IMAGE_BYTES, MessageError
from metrics import cosine_similarity
from protocol import ROLE_SPAN, Protocol, noise_seeds

# Binary frame: step (u32), height (u16), width (u16), layer (u8), number of similarities
# (u8), 2 padding bytes; then that many float32 similarities; then height x width uint8.
FRAME_HEADER = struct.Struct("<IHHBB2x")
LAYER_CODES = {"V": 0, "F": 1, "K": 2, "target": 3}
FIELD_DISPLAY = (0.0, 0.1)   # F and K are drawn on this fixed range (every rule's lies inside)
MAX_STORED = 8               # patterns stored per session (bounds its memory up front)
DEFAULT_GRID, DEFAULT_SPEED = 128, 10
SEED = 0                     # every noise draw: noise_seeds([SEED], role, draw index)


def _to_uint8(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> bytes:
    scaled = ((x.float() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255)
    return scaled.to(torch.uint8).contiguous().numpy().tobytes()


class Session:
    """One medium (batch 1) with its stored patterns, driven by checked messages."""

    def __init__(self, root: Path, grid: int = DEFAULT_GRID, rule: str = "match_map"):
        self.sessions_dir = Path(root).resolve() / "sessions"
        self.uploads_dir = Path(root).resolve() / "uploads"
        self.steps_per_frame, self.view = DEFAULT_SPEED, "V"
        self.new(grid, rule)

    # -- the medium --------------------------------------------------------------------------
    def new(self, grid: int, rule: str) -> None:
        """A fresh unscarred medium of grid x grid cells with storage rule `rule`."""
        if not 16 <= grid <= MAX_GRID:
            raise MessageError(f"new: grid={grid} must be in [16, {MAX_GRID}]")
        self._build(self._protocol(grid, rule))

    def _build(self, protocol: Protocol, fields=None, U=None, V=None) -> None:
        """The medium of a protocol: unscarred (the rule's background) unless fields =
        (F, K) are given, at rest (U = 1, V = 0) unless U, V are given; nothing stored."""
        grid = protocol.grid
        study = scarring.Study(protocol)
        background = study.default_fields(1)
        F, K = fields if fields is not None else background
        V = torch.zeros(1, grid, grid, dtype=study.dtype) if V is None else V.to(study.dtype)
        try:    # GrayScott's checks: memory (before allocating), shapes, ranges
            medium = self._medium(study)
            U = medium.initial_state(V, {})[0] if U is None else U.to(study.dtype)
            sim = medium.simulation((U, V), {"F": F, "K": K})
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        self.protocol, self.rule, self.sim = protocol, study.rule, sim
        self.background = tuple(x.clone() for x in background)
        self.target_name = "square_spots"
        self.target = patterns.make_pattern(self.target_name, grid, grid)
        self.stored: list[tuple[str, torch.Tensor]] = []
        self.running, self.training, self.step, self.draws = False, 0, 0, 0

    @staticmethod
    def _medium(study):
        # eager steps: a compile would stall the page for many seconds mid-session
        return study.medium_with(substrate={"compile": False})

    @staticmethod
    def _protocol(grid: int, rule: str, **settings) -> Protocol:
        """A checked protocol: its fields' ranges, then the physics and the rule's own
        checks (scarring.check_protocol: an unknown rule too)."""
        try:
            protocol = Protocol(**{**settings, "grid": grid, "rule": rule})
            cli.validate(protocol)
            scarring.check_protocol(protocol)
        except (TypeError, ValueError) as exc:
            raise MessageError(str(exc)) from None
        return protocol

    @property
    def grid(self) -> int:
        return self.protocol.grid

    def limits(self) -> dict:
        """What messages.parse checks session-dependent values against."""
        return {"grid": self.grid, "patterns": len(self.stored),
                "rules": tuple(sorted(scarring.RULES)), "pattern_names": tuple(patterns.PATTERNS)}

    def _noise(self, role: str) -> list[int]:
        self.draws += 1
        return noise_seeds([SEED], role, self.draws % ROLE_SPAN)

    def _scarred(self) -> bool:
        F0, K0 = self.background
        return bool(memory.scarred_cells(self.sim.fields, {"F": F0, "K": K0}).any())

    @property
    def V(self) -> torch.Tensor:
        """The medium's activity, (1, H, W)."""
        return self.sim.activity()

    def _start(self, V: torch.Tensor) -> None:
        """A new start of the medium from activity V (1, H, W), the fields unchanged."""
        self.sim.reset(V.to(self.V.dtype))

    # -- one frame of simulation -------------------------------------------------------------
    def advance(self) -> dict | None:
        """Run one frame's steps (training or free-running); an event dict when training
        ends, else None."""
        n = self.steps_per_frame
        if self.training:
            n = min(n, self.training)
            self.sim.run(n, target=self.stored[-1][1].to(self.V.dtype), learn=True)
            self.training -= n
            self.step += n
            if not self.training:
                self.running = False
                name = self.stored[-1][0]
                return {"type": "info", "message": f"stored pattern {len(self.stored)} "
                        f"({name}) after {self.step} training steps: similarity "
                        f"{self.similarities()[-1]:.3f}"}
            return None
        self.sim.run(n)      # the rule's recall inhibition, if any, is the medium's
        self.step += n
        return None

    def similarities(self) -> list[float]:
        """Cosine similarity of V to every stored pattern (the project's recall quality)."""
        if not self.stored:
            return []
        stack = torch.stack([t for _, t in self.stored]).to(self.V.dtype)
        V = self.V.expand(len(self.stored), -1, -1)
        return [float(s) for s in cosine_similarity(V, stack)]

    def frame(self, layer: str | None = None) -> bytes:
        """The binary frame of a layer (default: the current view)."""
        layer = layer or self.view
        if layer == "target":
            pixels, sims = _to_uint8(self.target), []
        else:
            field = self.V if layer == "V" else self.sim.fields[layer]
            field = field.expand(1, self.grid, self.grid)[0]
            pixels = _to_uint8(field) if layer == "V" else _to_uint8(field, *FIELD_DISPLAY)
            sims = self.similarities()
        header = FRAME_HEADER.pack(self.step % 2**32, self.grid, self.grid, LAYER_CODES[layer],
                                   len(sims))
        return header + np.asarray(sims, dtype="<f4").tobytes() + pixels

    def state(self) -> dict:
        """What the page shows besides the frames (sent after every message)."""
        return {"type": "state", "grid": self.grid, "rule": self.rule.name,
                "rules": sorted(scarring.RULES), "patterns": list(patterns.PATTERNS),
                "target": self.target_name, "stored": [n for n, _ in self.stored],
                "running": self.running, "training": self.training,
                "speed": self.steps_per_frame, "view": self.view, "step": self.step,
                "scarred": self._scarred(), "saved": self.saved_names()}

    # -- messages ------------------------------------------------------------------------------
    def apply(self, msg: dict) -> dict | None:
        """Apply one checked message (messages.parse); an event dict to send, or None."""
        kind = msg["type"]
        if kind == "new":
            self.new(msg["grid"], msg["rule"])
            return {"type": "info", "message": f"new {self.grid} x {self.grid} medium, "
                                               f"rule {self.rule.name}"}
        if kind == "rule":
            protocol = self._protocol(self.grid, msg["rule"])
            if not self._scarred() and not self.training:   # the rule's own unscarred medium
                self.new(self.grid, msg["rule"])
            else:          # scars stay; the next training and every recall use the new rule
                study = scarring.Study(protocol)
                self.sim = self._medium(study).simulation(self.sim.state, self.sim.fields)
                self.protocol, self.rule = protocol, study.rule
            return None
        if kind == "pattern":
            self.target_name = msg["name"]
            self.target = patterns.make_pattern(msg["name"], self.grid, self.grid)
        elif kind == "clear_pattern":
            self.target_name, self.target = "painted", torch.zeros(self.grid, self.grid)
        elif kind == "paint":
            self._paint(msg)
        elif kind == "train":
            return self._train(msg["steps"])
        elif kind == "cue":
            self._cue(msg)
        elif kind == "kick":
            V = patterns.uniform_cue(self.grid, self.grid, msg["level"], msg["noise"],
                                     self._noise("other"))
            self._start(V)
            self.step, self.training, self.running = 0, 0, True
        elif kind == "run":
            self.running = True
        elif kind == "pause":
            self.running = False
        elif kind == "step":
            self.running = False
            return self.advance() or {"type": "frame"}
        elif kind == "reset":
            self._start(torch.zeros_like(self.V))
            self.training, self.running, self.step = 0, False, 0
        elif kind == "clear_scars":
            self.sim.fields = {"F": self.background[0].clone(), "K": self.background[1].clone()}
            self.training = 0
        elif kind == "speed":
            self.steps_per_frame = msg["steps"]
        elif kind == "view":
            self.view = msg["layer"]
        elif kind == "save":
            return self.save(msg["name"])
        elif kind == "load":
            return self.load(msg["name"])
        return None

    def _disc(self, x: int, y: int, radius: int) -> torch.Tensor:
        rows = torch.arange(self.grid).view(-1, 1)
        cols = torch.arange(self.grid).view(1, -1)
        return (rows - y) ** 2 + (cols - x) ** 2 <= radius * radius

    def _paint(self, msg: dict) -> None:
        disc = self._disc(msg["x"], msg["y"], msg["radius"])
        if msg["layer"] == "target":
            self.target_name = "painted"
            self.target = torch.where(disc, torch.tensor(msg["value"]), self.target)
            return
        if msg["layer"] == "cue":
            U, V = self.sim.state
            self.sim.state = (U, torch.where(disc, torch.tensor(msg["value"], dtype=V.dtype), V))
        else:   # erase: the cells go back to the medium at rest (the engine's lesion)
            self.sim.lesion(disc[None])

    def _train(self, steps: int) -> dict:
        """Store the current pattern: the protocol's training start, then `steps` steps
        with the rule's scar update (scars accumulate over stored patterns)."""
        if len(self.stored) >= MAX_STORED:
            raise MessageError(f"train: {MAX_STORED} patterns are stored already (the "
                               f"limit); start a new medium")
        if float(self.target.sum()) < 1e-3:
            raise MessageError("train: the pattern is empty; pick or paint one first")
        p = self.protocol
        target = self.target.clone()
        self.stored.append((self.target_name, target))
        # as the engine stores (memory.store): the rule's prepare step, then the start
        self.sim.fields = dict(self.sim.medium.prepare(self.sim.fields,
                                                       target.to(self.V.dtype)[None]))
        self._start(patterns.make_cue(target, p.train_init_strength, p.train_noise,
                                      self._noise("train")))
        self.step, self.training, self.running = 0, steps, True
        return {"type": "info", "message": f"training pattern {len(self.stored)} "
                                           f"({self.target_name}) for {steps} steps"}

    def _cue(self, msg: dict) -> None:
        """The protocol's cue of a stored pattern (a part of it when fraction < 1): the
        signal on the part, noise everywhere."""
        target = self.stored[msg["index"]][1]
        mask = target > self.protocol.match_threshold
        keep = patterns.sweep_part(mask, msg["fraction"], 0.0) if msg["fraction"] < 1 \
            else torch.ones_like(mask)
        V = patterns.masked_cue(target, keep, msg["strength"], msg["noise"],
                                self._noise("cue"))
        self._start(V)
        self.step, self.training, self.running = 0, 0, True

    # -- images and session files (inside the explorer's own folder only) --------------------
    def load_image(self, data: bytes) -> dict:
        """A target from an uploaded image file, through patterns.load_image_pattern (its
        format and size checks); the file is written inside uploads/ and removed."""
        if len(data) > MAX_IMAGE_BYTES:
            raise MessageError(f"image of {len(data):,} bytes is over the limit of "
                               f"{MAX_IMAGE_BYTES:,}")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        path = self.uploads_dir / f"upload-{uuid.uuid4().hex}"
        try:
            path.write_bytes(data)
            target = patterns.load_image_pattern(path, self.grid, self.grid)
        except (ValueError, FileNotFoundError) as exc:
            raise MessageError(f"image: {str(exc).replace(str(path), 'the uploaded file')}") \
                from None
        finally:
            path.unlink(missing_ok=True)
        self.target_name, self.target = "image", target
        return {"type": "info", "message": f"image loaded as the pattern ({self.grid} x "
                                           f"{self.grid})"}

    def _session_path(self, name: str) -> Path:
        path = (self.sessions_dir / f"{name}.npz").resolve()
        if path.parent != self.sessions_dir:   # the name's pattern already forbids this
            raise MessageError(f"session name {name!r} leaves the sessions folder")
        return path

    def saved_names(self) -> list[str]:
        if not self.sessions_dir.is_dir():
            return []
        return sorted(p.stem for p in self.sessions_dir.glob("*.npz"))[:200]

    def save(self, name: str) -> dict:
        state = _state_module("save")
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        path = self._session_path(name)
        extra = {}
        if self.stored:
            extra["patterns"] = torch.stack([t for _, t in self.stored]).numpy()
        U, V = self.sim.state
        F, K = (self.sim.fields[k].expand(1, self.grid, self.grid) for k in "FK")
        state.save_state(path, U=U, V=V, F=F, K=K, step=self.step,
                         seeds=[SEED], rule=self.rule.as_dict(),
                         protocol=dataclasses.asdict(self.protocol), extra=extra,
                         substrate=self.sim.gs.physics())
        return {"type": "info", "message": f"saved sessions/{path.name}"}

    def load(self, name: str) -> dict:
        """A saved session or a finished run's state file copied into sessions/ (its
        first batch member)."""
        state = _state_module("load")
        path = self._session_path(name)
        if not path.is_file():
            raise MessageError(f"load: no session {name!r} in the sessions folder")
        try:
            loaded = state.load_state(path)
        except ValueError as exc:
            raise MessageError(f"load: {exc}") from None
        V = loaded["V"]
        if V.dim() != 3:
            raise MessageError("load: the state holds a 3D medium; the explorer shows 2D ones")
        H, W = V.shape[-2:]
        if H != W or not 16 <= H <= MAX_GRID:
            raise MessageError(f"load: the state is {H} x {W}; the explorer takes square "
                               f"grids of 16 to {MAX_GRID} cells a side")
        protocol = loaded.get("protocol") or {}
        rule = (loaded.get("rule") or {}).get("rule", protocol.get("rule", "match_map"))
        if rule not in scarring.RULES:
            raise MessageError(f"load: the state's rule {rule!r} is not one of "
                               f"{', '.join(sorted(scarring.RULES))}")
        known = {f.name for f in dataclasses.fields(Protocol)}
        settings = {k: v for k, v in protocol.items() if k in known - {"grid", "rule"}}
        try:
            protocol = self._protocol(int(H), rule, **settings)
        except MessageError as exc:
            raise MessageError(f"load: the state's protocol is refused ({exc})") from None
        self._build(protocol,
                    fields=(self._member(loaded["F"]), self._member(loaded["K"])),
                    U=self._member(loaded["U"]), V=self._member(V))
        stored = loaded["extra"].get("patterns")
        if stored is not None and stored.shape[-2:] == (H, W):
            self.stored = [(f"stored {i + 1}", torch.as_tensor(t, dtype=torch.float32))
                           for i, t in enumerate(stored[:MAX_STORED])]
        self.step = int(loaded["step"])
        return {"type": "info", "message": f"loaded sessions/{path.name}"}

    def _member(self, x) -> torch.Tensor:
        """Batch member 0 of a state array (B, H, W) or (H, W), as (1, H, W)."""
        t = torch.as_tensor(x, dtype=torch.float32)
        return (t if t.dim() == 3 else t[None])[:1].clone()


def _state_module(action: str):
    try:
        from common import state
    except ImportError:
        raise MessageError(f"{action}: this checkout has no common/state.py (the project's "
                           f"state file)") from None
    return state

