"""A real browser: headless Debian Chromium driven by Playwright loads the page, moves a mix slider,
clicks Generate, sees frames arrive and the final image, and saves a screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facegen.pipeline import FaceGenerator
from facegen.studio import Studio
from tests.test_app import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_page_generates_a_face(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from facegen.ui import launch

    models = {f: FaceGenerator.from_checkpoint(p, device="cpu") for f, p in tiny_checkpoints.items()}
    studio = Studio(models, out_dir=tmp_path / "out", min_interval=0.0)
    (tmp_path / "out").mkdir()
    port = free_port()
    demo = launch(studio, "127.0.0.1", port, block=False)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.get_by_text("facegen studio").first.wait_for()
            # Move the second group's slider to 1: the readout shows a 50/50 blend.
            number = page.locator("#mix-1 input[type=number]")
            number.fill("1")
            number.press("Enter")
            page.locator("#mix-readout").get_by_text("50%").first.wait_for(timeout=15_000)
            page.locator("#generate").click()
            page.locator("#status").get_by_text("Step").first.wait_for(timeout=60_000)
            seen = set()
            for _ in range(400):
                text = page.locator("#status").inner_text()
                seen.add(text.split("·")[0].strip())
                if text.startswith("Done"):
                    break
                page.wait_for_timeout(50)
            assert any(s.startswith("Step") for s in seen), seen
            page.locator("#status").get_by_text("Done").wait_for(timeout=60_000)
            assert page.locator("#preview img").count() >= 1
            assert page.locator("#files").get_by_text(".png").count() >= 1
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
