"""report.html in a real headless Chromium, with the network blocked.

Selenium drives the system's Chromium through the system's chromedriver (both given by path, so
Selenium Manager never runs and nothing is downloaded). The browser's resolver maps every host
to nothing and CDP blocks http(s) and ws(s) URLs, so the only way the page can show is on its
own. Without Chromium the test is skipped, unless the environment sets CI: then it fails, since
.ci/run installs it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from report_fixture import full_run
from stitchlab.report import write_report

# Debian's chromium and chromium-driver packages; STITCHLAB_CHROMIUM and
# STITCHLAB_CHROMEDRIVER point elsewhere.
CHROMIUM = Path(os.environ.get("STITCHLAB_CHROMIUM") or shutil.which("chromium")
                or "/usr/bin/chromium")
CHROMEDRIVER = Path(os.environ.get("STITCHLAB_CHROMEDRIVER") or shutil.which("chromedriver")
                    or "/usr/bin/chromedriver")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (.ci/run does)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need(CHROMIUM.is_file() and CHROMEDRIVER.is_file(),
          f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} "
          "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium is not installed (pip install -e '.[test]')")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-extensions", "--window-size=1280,1600",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs",
                               {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """The full-featured run's report, opened from a copy (the page and its figures folder)."""
    run_dir = full_run(tmp_path_factory.mktemp("browser"))
    if not (run_dir / "report.html").is_file():
        write_report(run_dir)
    site = tmp_path_factory.mktemp("site")
    shutil.copy(run_dir / "report.html", site / "report.html")
    browser.get_log("browser")  # drop anything logged before the page
    browser.get_log("performance")
    browser.get((site / "report.html").as_uri())
    return browser, json.loads((run_dir / "results.json").read_text())


def test_no_console_errors(page):
    driver, _ = page
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_page_requests_nothing_but_itself_and_data_uris(page):
    driver, _ = page
    here = driver.current_url
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        # Requests made for the report (not for the browser's own start page).
        if msg["method"] == "Network.requestWillBeSent" and \
                msg["params"].get("documentURL") == here:
            urls.append(msg["params"]["request"]["url"])
    assert here in urls, "the page's own request is missing: is the performance log on?"
    outside = [u for u in urls if not u.startswith(("file://", "data:"))]
    assert not outside, outside


def test_every_image_decodes(page):
    driver, _ = page
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth,"
        " i.naturalHeight]);")
    assert len(images) >= 10
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt


def test_headline_tables_show_the_run_numbers(page):
    from selenium.webdriver.common.by import By

    driver, results = page
    for m in results["models"]:
        css = f'#headline-models td[data-model="{m["name"]}"]'
        cell = driver.find_element(By.CSS_SELECTOR, css)
        assert cell.text == f"{100 * m['test_accuracy']:.2f}%"
    sp = results["splice"]
    cells = driver.find_elements(By.CSS_SELECTOR, "#headline-splice td.splice-accuracy")
    assert len(cells) == len(sp["models"]) ** 2
    for c in cells:
        i = sp["models"].index(c.get_attribute("data-encoder"))
        j = sp["models"].index(c.get_attribute("data-decoder"))
        assert c.text == f"{100 * sp['accuracy'][i][j]:.2f}%"
    reading = driver.find_element(By.ID, "reading").text
    assert f"{100 * sp['accuracy'][0][1]:.1f}%" in reading


def test_screenshot_is_not_blank(page):
    driver, _ = page
    png = driver.get_screenshot_as_png()
    img = imread(io.BytesIO(png))  # (h, w, 4) in [0, 1]
    rgb = img[..., :3]
    assert rgb.shape[0] > 500 and rgb.shape[1] > 500
    assert rgb.std() > 0.05
    q = np.round(rgb * 255).astype(np.uint32)
    assert np.unique(q[..., 0] << 16 | q[..., 1] << 8 | q[..., 2]).size > 50
