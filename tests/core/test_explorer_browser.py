"""The explorer and a run's report page in a real browser: Debian's chromium driven by
Playwright for Python (launched from its executable path; nothing is downloaded).

Skipped, with the reason, where playwright or chromium is missing (.ci/run installs
both). The explorer runs as users start it, `python -m explorer`, on a 64 x 64 medium.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow
GRID = 64
LIT = 150   # R + G + B of the page's colour map at V of about 0.2 (V = 0 draws as 4)


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")


def _require_browser() -> str:
    """chromium's path, or a skip naming what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed (pip install playwright)")
    path = _chromium()
    if path is None:
        pytest.skip("browser tests skipped: no chromium on this machine (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m explorer` on a free port, started first: it imports while the browser
    starts."""
    _require_browser()
    folder = tmp_path_factory.mktemp("explorer")
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "--port", "0", "--grid", str(GRID),
                             "--folder", str(folder), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    path = _require_browser()
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
    except Error as exc:
        playwright.stop()
        pytest.skip(f"browser tests skipped: {path} does not start ({str(exc).splitlines()[0]})")
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module")
def explorer_url(server, browser):
    line = server.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if match is None:
        server.kill()
        pytest.fail(f"python -m explorer printed {line!r}; stderr: {server.stderr.read()}")
    return match.group(0)


def _open(browser, url):
    # bypass_csp: the test's own evaluations only; the page itself runs under the CSP
    page = browser.new_page(bypass_csp=True, viewport={"width": 1200, "height": 900})
    page.goto(url)
    page.wait_for_function("window.explorer && window.explorer.state.server")
    return page


def _wait_steps(page, steps: int, starts: int = 0, timeout_s: float = 60):
    """Until the medium has run `steps` steps since its start number `starts`."""
    page.wait_for_function(
        f"window.explorer.state.starts > {starts} && "
        f"Number(document.getElementById('status').dataset.step) >= {steps}",
        timeout=timeout_s * 1000)


def _start(page, button: str, steps: int):
    """Press a button that starts the medium anew; wait until it has run `steps` steps."""
    starts = page.evaluate("window.explorer.state.starts")
    page.click(button)
    _wait_steps(page, steps, starts)


def _cells(page, selector: str) -> np.ndarray:
    """The canvas as the user sees it, one R + G + B value per grid cell."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")
    small = shot.resize((GRID, GRID), Image.NEAREST)
    return np.asarray(small, dtype=np.int32).sum(axis=2)


def _similarity(page) -> float:
    return float(page.get_attribute("#sim-0", "data-value"))


def test_a_painted_pattern_regrows_from_a_part_and_a_weak_kick_lights_nothing(
        browser, explorer_url):
    page = _open(browser, explorer_url)
    page.locator("#speed").fill("50")
    page.click("#clear-pattern")
    page.fill("#radius", "4")
    box = page.locator("#pattern").bounding_box()
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=25)
    page.mouse.up()
    page.wait_for_function("window.explorer.state.server.target === 'painted'")
    time.sleep(0.3)                        # the last strokes' target frame
    target = _cells(page, "#pattern") > 300
    assert 150 < target.sum() < 800, "the painted band"

    page.fill("#train-steps", "300")       # the band's scar saturates well before this
    page.click("#train")
    page.wait_for_function("window.explorer.state.server.stored.length === 1 && "
                           "!window.explorer.state.server.training", timeout=90_000)
    assert "stored pattern 1 (painted)" in page.inner_text("#info")

    page.fill("#cue-fraction", "0.5")      # the left half of the band, 15%, noisy
    _start(page, "#cue", 500)
    page.click("#run")                     # pause
    page.wait_for_function("!window.explorer.state.server.running")
    cue_score = page.evaluate("window.explorer.state.history[0][0]")
    assert cue_score[0] == 0
    recall = _similarity(page)
    assert recall > 0.75 and recall > cue_score[1] + 0.2, (cue_score, recall)
    lit = _cells(page, "#medium") > LIT
    right = np.zeros_like(target)
    right[:, GRID // 2 + 4:] = True        # the half the cue left out
    assert lit[target].mean() > 0.8 and lit[target & right].mean() > 0.8
    assert lit[~target].mean() < 0.1

    page.fill("#kick-level", "0.05")       # uniform, below the ignition amplitude
    page.fill("#kick-noise", "0")
    _start(page, "#kick", 300)
    assert _similarity(page) < 0.05
    assert (_cells(page, "#medium") > LIT).sum() == 0
    page.close()


def test_an_image_loads_as_the_pattern_and_a_session_saves_and_loads(browser, explorer_url,
                                                                    tmp_path):
    from PIL import Image

    picture = np.zeros((50, 80), dtype=np.uint8)
    picture[10:40, 30:50] = 255
    Image.fromarray(picture).save(tmp_path / "shape.png")
    (tmp_path / "fake.png").write_bytes(b"not a picture")
    page = _open(browser, explorer_url)
    page.set_input_files("#image", str(tmp_path / "shape.png"))
    page.wait_for_function("window.explorer.state.server.target === 'image'")
    assert "image loaded as the pattern" in page.inner_text("#info")
    page.set_input_files("#image", str(tmp_path / "fake.png"))
    page.wait_for_function("window.explorer.state.errors.length > 0")
    assert "cannot read the uploaded file as an image" in page.inner_text("#error")
    page.fill("#session-name", "by-hand")
    page.click("#save")
    page.wait_for_function("window.explorer.state.server.saved.includes('by-hand')")
    page.select_option("#saved", "by-hand")
    page.click("#load")
    page.wait_for_function("window.explorer.state.infos.some(m => m.startsWith('loaded'))")
    assert "loaded sessions/by-hand.npz" in page.inner_text("#info")
    page.close()


def test_malformed_messages_each_get_their_error_and_the_server_keeps_serving(
        browser, explorer_url):
    page = _open(browser, explorer_url)
    cases = [("{type: 'paint', layer: 'cue', x: 4096, y: 0}", "x=4096 must be an integer in [0, 63]"),
             ("{type: 'paint', layer: 'cue', x: 3, y: -2}", "y=-2"),
             ("{type: 'rule', rule: 'no_such_rule'}", "rule='no_such_rule' must be one of"),
             ("{type: 'new', grid: 1000000, rule: 'match_map'}", "grid=1000000 must be an integer in [16, 512]"),
             ("{type: 'load', name: '../../etc/passwd'}", "must be 1-64 letters")]
    for i, (message, words) in enumerate(cases):
        page.evaluate(f"window.explorer.send({message})")
        page.wait_for_function(f"window.explorer.state.errors.length > {i}")
        assert words in page.inner_text("#error")
    page.evaluate("window.explorer.sendRaw('x'.repeat(5000))")
    page.wait_for_function(f"window.explorer.state.errors.length > {len(cases)}")
    assert "over the limit" in page.inner_text("#error")
    page.click("#step")                    # still serving this page
    _wait_steps(page, 10)
    page.click("#kick")                    # leave mid-run
    page.close()
    other = _open(browser, explorer_url)   # and the next page is served
    other.click("#step")
    _wait_steps(other, 10)
    other.close()


def test_a_runs_report_page_shows_its_figures_and_plays_its_videos(browser, tmp_path):
    from PIL import Image

    from common import cli, figures

    out = tmp_path / "run"
    with cli.staged_output(out, "toy") as stage:
        Image.fromarray(np.eye(32, dtype=np.uint8) * 255).save(stage / "curve.png")
        frames = np.random.default_rng(0).random((12, 16, 16))
        figures.write_video(stage / "recall.mp4", [frames], ["V"], fps=6)
        stat = {"mean": 0.9, "std": 0.01, "ci95_low": 0.89, "ci95_high": 0.91, "n": 3,
                "per_seed": [0.9] * 3, "method": "t"}
        (stage / "results.json").write_text(json.dumps({"study": "toy", "command": "toy.py",
                                                        "recall": stat}))
    page = browser.new_page(bypass_csp=True)
    page.goto((out / "index.html").as_uri())
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    assert page.evaluate("Array.from(document.images).map(i => i.naturalWidth > 0)") == [True]
    page.wait_for_function("Array.from(document.querySelectorAll('video'))"
                           ".every(v => v.duration > 0)", timeout=10_000)
    assert page.evaluate("document.querySelector('video').duration") == pytest.approx(2.0, 0.2)
    assert "[0.89, 0.91]" in page.inner_text("table:last-of-type")
    assert page.get_attribute("a[href='results.json']", "href") == "results.json"
    page.close()
