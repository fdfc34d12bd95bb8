"""A real browser: headless Debian Chromium driven by Playwright loads the page, checks the steps
slider's range against the sampler's, moves a mix slider, clicks Generate, sees frames arrive and the
final image shown large, switches model and presses Generate at once (the new model's settings run),
and saves a screenshot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from facegen.pipeline import FaceGenerator
from facegen.sampling import DEFAULT_STEPS, default_guidance, default_guidance_interval
from facegen.studio import Studio, step_range
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
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.get_by_text("facegen studio").first.wait_for()
            # The steps slider spans exactly what the first model's default sampler accepts.
            first = models["ddpm"]
            lo, hi = step_range(first, first.samplers[0], studio.limits)
            slider = page.locator("#steps input[type=range]")
            page.wait_for_function(
                f"() => document.querySelector('#steps input[type=range]')?.max === '{hi}'", timeout=15_000
            )
            assert (slider.get_attribute("min"), slider.get_attribute("max")) == (str(lo), str(hi))
            # Move the second group's slider to 1: the readout shows a 50/50 blend.
            number = page.locator("#mix-1 input[type=number]")
            number.fill("1")
            number.press("Enter")
            page.locator("#mix-readout").get_by_text("50%").first.wait_for(timeout=15_000)
            # Record every text the status shows: frames can come faster than a poll could see them.
            page.evaluate(
                """() => { window.statuses = []; const el = document.querySelector('#status');
                new MutationObserver(() => window.statuses.push(el.innerText))
                    .observe(el, {subtree: true, childList: true, characterData: true}); }"""
            )
            page.locator("#generate").click()
            page.locator("#status").get_by_text("Done").wait_for(timeout=60_000)
            seen = page.evaluate("() => window.statuses")
            assert any(re.match(r"Step \d+/\d+", s) for s in seen), seen
            assert page.locator("#preview img").count() >= 1
            assert page.locator("#files").get_by_text(".png").count() >= 1
            # A 16 px test face is shown large, not at 16 px in an empty panel.
            box = page.locator("#preview img").first.bounding_box()
            assert box is not None and box["width"] >= 300, box
            # Set a guidance of 5 for the DDPM, switch to the score model and press Generate at once: it
            # runs with the score model's own sampler, steps and guidance, never with the DDPM settings
            # the page showed a moment before.
            sde = models["sde"]
            guidance = page.locator("#guidance input[type=number]")
            guidance.fill("5")
            guidance.press("Enter")
            page.locator("#model input").click()
            page.get_by_role("option", name="sde", exact=True).click()
            page.evaluate("() => { window.statuses = []; }")
            page.locator("#generate").click()
            page.wait_for_function(  # a new run's frames, then its result
                """() => window.statuses.some(s => s.startsWith('Step'))
                    && document.querySelector('#status').innerText.startsWith('Done')""",
                timeout=60_000,
            )
            text = page.locator("#status").inner_text()
            settings = f"· {sde.samplers[0]} · {DEFAULT_STEPS[sde.samplers[0]]} steps · seed 0 · guidance "
            assert settings + f"{default_guidance(sde.config):g} ·" in text, text
            lo_sigma, hi_sigma = default_guidance_interval(sde.config)  # the cost line says where it guides
            page.locator("#nfe").get_by_text(f"σ in ({lo_sigma:g}, {hi_sigma:g}]").wait_for(timeout=15_000)
            lo, hi = step_range(sde, sde.samplers[0], studio.limits)
            assert (slider.get_attribute("min"), slider.get_attribute("max")) == (str(lo), str(hi))
            # From a one-pass model (1 step) back to a diffusion model: no bounds error on the way.
            for name in ("dcgan", "ddpm"):
                page.locator("#model input").click()
                page.get_by_role("option", name=name, exact=True).click()
                page.wait_for_timeout(1500)
            assert page.get_by_text("less than minimum").count() == 0
            assert page.locator("#steps input[type=range]").get_attribute("min") == "2"
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
