"""The annotation page in a real browser (Playwright driving Debian's Chromium) against a real server.

The backends are the exact colour fakes on generated PNG frames, so what the page shows can be checked
against known masks. Without Chromium or Playwright the tests skip and say how to install them.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
from fakes import ColourGrounder, ColourSegmenter
from PIL import Image

from segvlm.annotate.project import Project
from segvlm.annotate.server import AnnotationServer
from segvlm.config import PipelineConfig, TrackingConfig
from segvlm.masks import RLE
from segvlm.testing.media import Sprite, render
from segvlm.tracking import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package only)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: apt-get install -y chromium (the browser tests drive Debian's Chromium)"
)

H, W, N = 120, 200, 16
RED, BLUE = (220, 30, 30), (30, 60, 220)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    import uvicorn

    red = Sprite("red", RED, (30, 36), [(20, 10 + 4 * t) for t in range(N)])
    blue = Sprite("blue", BLUE, (30, 30), [(70, 120)] * N)
    frames, truth = render([red, blue], H, W, N)
    clip = tmp_path / "clip"
    clip.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(clip / f"{index:04d}.png")
    config = PipelineConfig(tracking=TrackingConfig(reground_every=1000, min_mask_area=1))
    pipe = Pipeline(config, grounder=ColourGrounder({"red box": RED}), segmenter=ColourSegmenter())
    project = Project.open(tmp_path / "project", [clip], pipe)
    server = AnnotationServer(project)
    port = free_port()
    runner = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not runner.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", server, truth, tmp_path
    runner.should_exit = True
    thread.join(timeout=10)
    project.close()


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


def canvas_pixel(page, x: float, y: float) -> list[int]:
    """RGBA of the view canvas at frame pixel (x, y)."""
    return page.evaluate(
        """([x, y, w, h]) => {
            const view = document.getElementById('view');
            const scale = Math.min(view.width / w, view.height / h);
            const ox = (view.width - w * scale) / 2, oy = (view.height - h * scale) / 2;
            return Array.from(view.getContext('2d').getImageData(ox + x * scale, oy + y * scale, 1, 1).data);
        }""",
        [x, y, W, H],
    )


def click_frame(page, x: float, y: float, button: str = "left") -> None:
    box = page.locator("#view").bounding_box()
    scale = min(box["width"] / W, box["height"] / H)
    ox, oy = (box["width"] - W * scale) / 2, (box["height"] - H * scale) / 2
    page.mouse.click(box["x"] + ox + x * scale, box["y"] + oy + y * scale, button=button)


def wait_message(page, text: str, timeout: float = 20_000) -> None:
    page.wait_for_function(f"document.getElementById('message').textContent.includes({text!r})", timeout=timeout)


def test_label_correct_propagate_export_and_reload(served, browser):
    url, server, truth, tmp_path = served
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('frame 1 /')")

    # Auto-label from a query: the red box is found and tracked.
    page.fill("#query", "red box")
    page.click("#autolabel button")
    wait_message(page, "autolabel done")
    page.wait_for_selector("#object-list li")
    assert page.locator("#object-list li").first.inner_text().strip().endswith("red box")

    # A new object by one click on the blue box: its pixels on the canvas turn to the object's colour.
    bx, by = 135.0, 85.0
    before = canvas_pixel(page, bx, by)
    page.keyboard.press("n")
    click_frame(page, bx, by)
    wait_message(page, "add object")
    page.wait_for_timeout(300)
    after = canvas_pixel(page, bx, by)
    assert after != before and after[1] > before[1]  # object 2 is green in the palette, blended over blue
    masks = server.project.session("clip").result[0].get(2)
    assert masks is not None and np.array_equal(masks.mask, truth["blue"][0])

    # Undo takes the object away, redo brings it back.
    page.keyboard.press("Control+z")
    wait_message(page, "undo")
    page.wait_for_timeout(300)
    assert canvas_pixel(page, bx, by) == before
    page.keyboard.press("Control+Shift+z")
    wait_message(page, "redo")
    page.wait_for_selector("#object-list li:nth-child(2)")

    # Approve frame 3 of object 2, propagate it forward: frames up to 2 fill in; 3 stays as approved (empty).
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("2")
    page.keyboard.press("l")
    wait_message(page, "approved")
    page.keyboard.press("Home")
    page.keyboard.press("f")
    wait_message(page, "propagate done")
    result = server.project.session("clip").result
    assert [result[p].get(2) is not None for p in range(5)] == [True, True, True, False, False]
    assert server.project.session("clip").locked(2) == [3]

    # Export PNG masks from the page; the file decodes to the objects' ids.
    page.select_option("#format", "png")
    page.click("#export")
    wait_message(page, "exported")
    index = np.asarray(Image.open(tmp_path / "project" / "exports" / "clip" / "png" / "00001.png"))
    assert np.array_equal(index == 2, truth["blue"][1]) and (index == 1).sum() == truth["red"][1].sum()

    # Reload: the work is there, with its undo history.
    page.reload()
    page.wait_for_selector("#object-list li:nth-child(2)")
    assert not page.locator("#undo").is_disabled()
    page.screenshot(path=str(tmp_path / "page.png"))
    assert errors == []


def test_help_overlay_lists_every_shortcut(served, browser):
    url, *_ = served
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('frame 1 /')")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    rows = page.locator("#help-table tr").all_inner_texts()
    for key in ("Ctrl+Z", "F / R / G", "W / Shift+W", "N", "L", "Esc"):
        assert any(row.startswith(key) for row in rows), key
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()
    assert RLE  # masks travel as COCO RLE (decoded in the page by rle.js)
