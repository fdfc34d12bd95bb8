"""Screenshot of the studio for the README: the shipped checkpoints, 4 faces, a blend, in headless Chromium.

python docs/screenshot.py [--model ddpm] [--out docs/studio.png]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.studio import Studio, load_group_classifier, load_models  # noqa: E402
from facegen.ui import launch  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--model", default="ddpm")
    p.add_argument("--out", type=Path, default=Path("docs/studio.png"))
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    models, failures = load_models(a.checkpoints)
    studio = Studio(models, failures, classifier=load_group_classifier(a.checkpoints))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(studio, "127.0.0.1", port, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.get_by_label("Model").first.click()
            page.get_by_role("option", name=a.model, exact=True).click()
            page.wait_for_timeout(500)
            for selector, value in (("#mix-1 input[type=number]", "1"),):
                page.locator(selector).fill(value)
                page.locator(selector).press("Enter")
            faces = page.get_by_label("Faces").locator("xpath=..").locator("input[type=number]").first
            faces.fill("4")
            faces.press("Enter")
            page.locator("#generate").click()
            page.locator("#status").get_by_text("Done").wait_for(timeout=300_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(a.out), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(a.out)


if __name__ == "__main__":
    main()
