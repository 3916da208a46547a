"""End to end in a real browser: Debian's chromium, driven by Playwright, on the app's real page.

Also the tool that takes the README's screenshot:
    python tests/test_browser.py --model DIR --screenshot docs/screenshot.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # generous: the test machine may be busy with other work
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
UPLOAD = EXAMPLES / "ISIC_0024496.jpg"  # the melanoma example, 600×450

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                "(apt-get install chromium); scripts/test.sh installs it")


@pytest.fixture(scope="module")
def page(tiny_checkpoint, tmp_path_factory):
    from live_server import live_server
    from playwright.sync_api import sync_playwright

    with live_server(str(tiny_checkpoint), tmp_path_factory.mktemp("gradio-cache")) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        yield page
        browser.close()


def analyse(page, image: Path) -> None:
    """Upload `image` and press Analyse; returns once the results are on the page."""
    page.locator("#upload input[type=file]").set_input_files(str(image))
    page.locator("#upload img").wait_for()
    page.get_by_role("button", name="Analyse").click()
    page.locator("#overlay img").wait_for()
    page.locator("#summary .verdict").wait_for()


def test_upload_analyse_change_heatmap_and_download_the_report(page, tmp_path):
    from playwright.sync_api import expect

    from conftest import TINY_LABELS
    from serving.ui import class_key

    analyse(page, UPLOAD)

    bars = page.locator("#probabilities meter")
    expect(bars).to_have_count(7)
    assert {bars.nth(i).get_attribute("aria-label") for i in range(7)} == {class_key(c) for c in TINY_LABELS}
    values = [int(bars.nth(i).get_attribute("aria-valuenow")) for i in range(7)]
    assert values == sorted(values, reverse=True) and 95 <= sum(values) <= 105  # sorted, rounded percents
    overlay = page.locator("#overlay img")
    assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [600, 450]
    expect(page.locator("#summary")).to_contain_text("not a diagnosis")

    top_overlay = overlay.get_attribute("src")
    top_class = bars.nth(0).get_attribute("aria-label")
    other_class = next(class_key(c) for c in TINY_LABELS if class_key(c) != top_class)
    page.locator("#heatmap-class input").click()
    page.get_by_role("option", name=other_class).click()
    expect(overlay).not_to_have_attribute("src", top_overlay)

    page.get_by_text("Case details (optional) and PDF report").click()
    page.get_by_label("Case reference").fill("browser-test-1")
    page.get_by_role("button", name="Create PDF report").click()
    link = page.locator("#report-file a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    pdf = tmp_path / "report.pdf"
    download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")


def save_screenshot(model: str, path: Path) -> None:
    """The analysed page as the README shows it."""
    import io
    import tempfile

    from live_server import live_server
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as cache, live_server(model, Path(cache)) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        analyse(page, UPLOAD)
        page.wait_for_timeout(1000)  # let the bars finish their animation
        png = page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1000})
        browser.close()
    with Image.open(io.BytesIO(png)) as shot:  # a dithered 256-colour palette: under 200 KB for the repo
        rgb = shot.convert("RGB")
        palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT)
        rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(EXAMPLES.parent)]
    parser = argparse.ArgumentParser(description="Save a screenshot of the analysed page.")
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--screenshot", type=Path, default=EXAMPLES.parent / "docs" / "screenshot.png")
    args = parser.parse_args()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    save_screenshot(args.model, args.screenshot)
    print(args.screenshot)
