"""The explorer without a browser: message checks, the session, the server's channel
(malformed messages, a page from another origin, a page that leaves mid-run), the
command line, and the run report page (escaping, stat blocks)."""
from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

aiohttp = pytest.importorskip("aiohttp", reason="the explorer needs aiohttp (requirements.txt)")

from common import report  # noqa: E402
from explorer import messages  # noqa: E402
from explorer.messages import MessageError, parse  # noqa: E402
from explorer.session import FRAME_HEADER, Session  # noqa: E402

LIMITS = {"grid": 32, "patterns": 1, "rules": ("graded", "match_map"),
          "pattern_names": ("ring", "square_spots")}


def _parse(message, limits=LIMITS):
    return parse(json.dumps(message), limits)


# ---- messages --------------------------------------------------------------------------

def test_a_valid_message_comes_back_checked_with_defaults():
    msg = _parse({"type": "paint", "layer": "cue", "x": 31, "y": 0})
    assert msg == {"type": "paint", "layer": "cue", "x": 31, "y": 0, "radius": 3, "value": 0.8}
    assert _parse({"type": "new", "grid": 512, "rule": "graded"})["grid"] == 512


@pytest.mark.parametrize("message, words", [
    ({"type": "paint", "layer": "cue", "x": 32, "y": 0}, "x=32 must be an integer in [0, 31]"),
    ({"type": "paint", "layer": "cue", "x": -1, "y": 0}, "x=-1"),
    ({"type": "paint", "layer": "cue", "x": 1.5, "y": 0}, "must be an integer"),
    ({"type": "paint", "layer": "cue", "x": True, "y": 0}, "must be an integer"),
    ({"type": "paint", "layer": "soul", "x": 1, "y": 0}, "layer='soul' must be one of"),
    ({"type": "new", "grid": 100000, "rule": "match_map"}, "grid=100000 must be an integer in [16, 512]"),
    ({"type": "new", "grid": 64, "rule": "__import__('os')"}, "rule=\"__import__('os')\" must be one of graded, match_map"),
    ({"type": "rule", "rule": "nope"}, "rule='nope' must be one of"),
    ({"type": "kick", "level": 1.5}, "level=1.5 must be a number in [0.0, 1.0]"),
    ({"type": "cue", "index": 1}, "index=1 must be an integer in [0, 0]"),
    ({"type": "cue", "index": 0, "fraction": 0}, "fraction=0 must be a number in (0.0, 1.0]"),
    ({"type": "speed", "steps": 10 ** 9}, "steps=1000000000"),
    ({"type": "save", "name": "../../etc/passwd"}, "name='../../etc/passwd' must be 1-64 letters"),
    ({"type": "load", "name": "a/b"}, "must be 1-64 letters"),
    ({"type": "eval", "code": "1"}, "type='eval' must be one of"),
    ({"type": "run", "extra": 1}, "run: unknown field 'extra'"),
    ({"type": "train", "steps": "many"}, "steps='many' must be an integer"),
    ({"type": "view"}, "view: field 'layer' is missing"),
])
def test_each_bad_message_is_refused_in_one_line_naming_it(message, words):
    with pytest.raises(MessageError) as err:
        _parse(message)
    text = str(err.value)
    assert words in text and "\n" not in text


def test_bad_json_huge_messages_and_non_objects_are_refused():
    for text, words in [("{", "not valid JSON"), ("[1, 2]", "JSON object"),
                        ('{"type": "kick", "level": NaN}', "finite"),
                        ("x" * (messages.MAX_TEXT_BYTES + 1), "over the limit")]:
        with pytest.raises(MessageError, match=words):
            parse(text, LIMITS)
    with pytest.raises(MessageError, match="no pattern is stored"):
        _parse({"type": "cue", "index": 0}, {**LIMITS, "patterns": 0})


# ---- the session -----------------------------------------------------------------------

@pytest.fixture
def session(tmp_path):
    return Session(tmp_path, grid=32)


def _apply(session, message):
    return session.apply(parse(json.dumps(message), session.limits()))


def test_painting_changes_only_the_disc_and_the_layer_named(session):
    _apply(session, {"type": "clear_pattern"})
    _apply(session, {"type": "paint", "layer": "target", "x": 5, "y": 7, "radius": 2})
    assert session.target[7, 5] == pytest.approx(0.8) and session.target[7, 8] == 0
    assert int((session.target > 0).sum()) == 13             # a radius-2 disc
    assert float(session.V.abs().sum()) == 0              # the medium untouched
    _apply(session, {"type": "paint", "layer": "cue", "x": 0, "y": 0, "radius": 1,
                     "value": 0.5})
    assert session.V[0, 0, 0] == 0.5 and session.V[0, 1, 1] == 0
    session.sim.state = (torch.full_like(session.V, 0.3), session.V)
    _apply(session, {"type": "paint", "layer": "erase", "x": 0, "y": 0, "radius": 1})
    assert session.V[0, 0, 0] == 0 and session.sim.state[0][0, 0, 0] == 1
    assert session.sim.state[0][0, 5, 5] == pytest.approx(0.3)


def test_training_scars_the_stored_pattern_and_the_frame_carries_its_similarity(session):
    _apply(session, {"type": "pattern", "name": "ring"})
    _apply(session, {"type": "train", "steps": 40})
    _apply(session, {"type": "speed", "steps": 20})
    assert session.running and session.training == 40 and len(session.stored) == 1
    assert session.advance() is None and session.training == 20
    event = session.advance()
    assert event["type"] == "info" and "stored pattern 1 (ring)" in event["message"]
    assert not session.running and session.step == 40
    frame = session.frame()
    step, h, w, layer, count = FRAME_HEADER.unpack_from(frame)
    assert (step, h, w, layer, count) == (40, 32, 32, 0, 1)
    (similarity,) = struct.unpack_from("<f", frame, FRAME_HEADER.size)
    assert similarity == pytest.approx(session.similarities()[0])
    assert len(frame) == FRAME_HEADER.size + 4 + 32 * 32
    assert len(session.frame("target")) == FRAME_HEADER.size + 32 * 32


def test_an_uploaded_image_goes_through_the_projects_loader(session, tmp_path):
    from PIL import Image

    picture = np.zeros((40, 60), dtype=np.uint8)
    picture[10:30, 20:40] = 255
    data = io.BytesIO()
    Image.fromarray(picture).save(data, format="PNG")
    session.load_image(data.getvalue())
    assert session.target.shape == (32, 32) and float(session.target.max()) == pytest.approx(0.8)
    with pytest.raises(MessageError, match="cannot read the uploaded file as an image"):
        session.load_image(b"not an image")
    with pytest.raises(MessageError, match="over the limit"):
        session.load_image(b"0" * (messages.MAX_IMAGE_BYTES + 1))
    assert not list((tmp_path / "uploads").iterdir())       # nothing left behind


def test_save_and_load_round_trip_inside_the_sessions_folder(session, tmp_path):
    _apply(session, {"type": "train", "steps": 10})
    _apply(session, {"type": "step"})
    _apply(session, {"type": "save", "name": "one"})
    assert (tmp_path / "sessions" / "one.npz").is_file()
    V = session.V.clone()
    other = Session(tmp_path, grid=64)
    _apply(other, {"type": "load", "name": "one"})
    assert other.grid == 32 and torch.equal(other.V, V) and len(other.stored) == 1
    with pytest.raises(MessageError, match="no session 'two'"):
        _apply(other, {"type": "load", "name": "two"})


def test_a_runs_state_file_copied_into_sessions_loads_its_first_member(session, tmp_path):
    from substrate import GrayScott

    run = GrayScott(24, 24, batch=2, F=0.05, K=0.06)
    run.V = torch.rand(2, 24, 24)
    (tmp_path / "sessions").mkdir()
    run.save(tmp_path / "sessions" / "finished.npz", rule={"rule": "graded"},
             protocol={"grid": 24, "f0": 0.05, "no_such_constant": 1})
    _apply(session, {"type": "load", "name": "finished"})
    assert session.grid == 24 and session.rule.name == "graded"
    assert torch.equal(session.V, run.V[:1]) and float(session.sim.fields["F"].mean()) == pytest.approx(0.05)
    GrayScott(16, 16, depth=16).save(tmp_path / "sessions" / "volume.npz")
    with pytest.raises(MessageError, match="3D medium"):
        _apply(session, {"type": "load", "name": "volume"})
    assert session.grid == 24                                   # the session is unchanged


# ---- the server's channel ----------------------------------------------------------------

async def _with_server(tmp_path, body):
    from explorer.server import make_app, serve

    runner, port = await serve(make_app(tmp_path, grid=32, max_pages=2), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            await body(http, f"127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def _next(ws, kind):
    """The next JSON message of a kind (frames and other messages skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
            return json.loads(msg.data)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


def test_the_server_answers_bad_messages_and_keeps_serving(tmp_path):
    async def body(http, host):
        async with http.ws_connect(f"ws://{host}/ws") as ws:
            assert (await _next(ws, "state"))["grid"] == 32
            for bad, words in [({"type": "paint", "layer": "cue", "x": 99, "y": 0}, "x=99"),
                               ({"type": "rule", "rule": "nope"}, "rule='nope'"),
                               ({"type": "new", "grid": 10 ** 6, "rule": "match_map"},
                                "grid=1000000")]:
                await ws.send_str(json.dumps(bad))
                assert words in (await _next(ws, "error"))["message"]
            await ws.send_bytes(b"garbage")                     # an image that is not one
            assert "image" in (await _next(ws, "error"))["message"]
            await ws.send_str(json.dumps({"type": "kick", "level": 0.2}))
            await ws.send_str(json.dumps({"type": "speed", "steps": 5}))
            frames = 0
            while frames < 3:                                   # still running, frames flow
                msg = await asyncio.wait_for(ws.receive(), 10)
                frames += msg.type == aiohttp.WSMsgType.BINARY
        async with http.get(f"http://{host}/") as page:
            assert page.status == 200 and "explorer" in await page.text()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        async with http.get(f"http://{host}/static/..%2f..%2fserver.py") as page:
            assert page.status in (403, 404)

    asyncio.run(_with_server(tmp_path, body))


def test_a_page_that_leaves_mid_run_frees_its_place_and_others_are_served(tmp_path):
    async def body(http, host):
        for _ in range(3):                                      # more than max_pages=2
            ws = await http.ws_connect(f"ws://{host}/ws")
            await _next(ws, "state")
            await ws.send_str(json.dumps({"type": "kick", "level": 0.3}))
            await asyncio.wait_for(ws.receive(), 10)
            await ws.close()                                    # gone mid-run
        async with http.ws_connect(f"ws://{host}/ws") as ws:
            await _next(ws, "state")
            await ws.send_str(json.dumps({"type": "step"}))
            assert (await _next(ws, "state"))["step"] == 10
        with pytest.raises(aiohttp.WSServerHandshakeError):   # a page of another site
            await http.ws_connect(f"ws://{host}/ws", origin="http://evil.example")
        port = host.rsplit(":", 1)[1]                           # ... or one rebound to here
        async with http.get(f"http://{host}/", headers={"Host": f"evil.example:{port}"}) as r:
            assert r.status == 403
        async with http.get(f"http://{host}/", headers={"Host": f"localhost:{port}"}) as r:
            assert r.status == 200

    asyncio.run(_with_server(tmp_path, body))


# ---- the command line ----------------------------------------------------------------------

def test_the_command_refuses_a_bad_port_in_one_line():
    run = subprocess.run([sys.executable, "-m", "explorer", "--port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --port 70000: must be in [0, 65535]"


def test_a_non_loopback_address_says_who_can_reach_it():
    from explorer.__main__ import reach_note
    from explorer.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert "anyone who can reach this machine on port 8765" in reach_note("0.0.0.0", 8765)
    assert "no password" in reach_note("192.0.2.1", 80)
    from explorer.server import _host_name
    assert [_host_name(h) for h in ("[::1]:8765", "127.0.0.1:80", "localhost", "::1")] == \
        ["::1", "127.0.0.1", "localhost", "::1"]


# ---- the run report page -------------------------------------------------------------------

def test_the_report_lists_stat_blocks_figures_videos_and_files_all_escaped(tmp_path):
    stat = {"mean": 0.93, "std": 0.01, "ci95_low": 0.92, "ci95_high": 0.94, "n": 8,
            "per_seed": [0.93] * 8, "method": "t", "published": 0.933}
    results = {"study": "toy", "command": "toy.py --out <b>x</b>", "seeds": [0],
               "config": {"grid": {"mean": 1, "n": 1}},
               "phase2": {"recall": stat, "by_pattern": {"<img src=x>": stat}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "a b&c.png").write_bytes(b"png")
    (tmp_path / "v.mp4").write_bytes(b"mp4")
    (tmp_path / "fields.npz").write_bytes(b"npz")
    (tmp_path / ".scarring_run").write_text("toy")
    page = report.write_index(tmp_path).read_text()
    assert "toy.py --out &lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "phase2.by_pattern.&lt;img src=x&gt;" in page and "<img src=x>" not in page
    assert "[0.92, 0.94]" in page and "config.grid" not in page
    assert "src='a%20b%26c.png'" in page and "<video src='v.mp4'" in page
    assert "href='fields.npz'" in page and "href='results.json'" in page
    assert ".scarring_run" not in page
    assert [key for key, _ in report.stat_rows(results)] == ["phase2.recall",
                                                            "phase2.by_pattern.<img src=x>"]


def test_a_sweeps_points_become_a_table_with_their_intervals(tmp_path):
    points = [{"f0": 0.02, "regime": "<spots>", "recall": [0.5, 0.4, 0.6]},
              {"f0": 0.03, "regime": "holes", "recall": [0.7, None, None]}]
    (tmp_path / "sweep.json").write_text(json.dumps({"command": "sweep", "points": points,
                                                     "figures": ["a.png"]}))
    page = report.render(tmp_path)
    assert "sweep.json, points" in page and "figures" not in page
    assert "<td class=n>0.5 [0.4, 0.6]</td>" in page and "<td class=n>0.7</td>" in page
    assert "&lt;spots&gt;" in page
