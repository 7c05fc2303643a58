"""Screenshot an HTML report in headless Chromium (how docs/figures/report_screenshot.png is made).

    python experiments/report_screenshot.py demo/report.html docs/figures/report_screenshot.png [--height 1500]

Needs Debian's `chromium` and `chromium-driver` (as .ci/run installs them) and selenium (the dev
extra). The window is `--width` pixels wide (1200); the picture is the top `--height` pixels of the
page, or with `--section ID` the part of the page that starts at that section's heading (`--above
PX` higher). With `--colors K` it is reduced to a K-colour palette (Pillow): a screenshot for the
docs at a fraction of the size, at no visible cost (the page is flat colours and anti-aliased text).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--section", default=None, help="scroll to this element id first (e.g. exchange)")
    ap.add_argument("--above", type=int, default=0, help="with --section: start this many pixels above it")
    ap.add_argument("--colors", type=int, default=0, help="reduce to this many colours (0: keep all)")
    a = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--window-size={a.width},{a.height}"):
            opts.add_argument(arg)
        browser = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                   options=opts)
        try:
            browser.set_page_load_timeout(30)
            browser.get(a.report.resolve().as_uri())
            browser.set_window_size(a.width, a.height)
            if a.section:
                browser.execute_script(f"document.getElementById({a.section!r}).scrollIntoView(); "
                                       f"window.scrollBy(0, -{a.above})")
            a.out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(a.out))
        finally:
            browser.quit()
    if a.colors:
        from PIL import Image

        Image.open(a.out).convert("RGB").quantize(a.colors).save(a.out, optimize=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
