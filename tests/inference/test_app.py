"""`metauas app` in a real headless browser: upload a normal image and queries, see heatmaps,
move the threshold slider. Debian's chromium and chromium-driver are installed when
missing (apt-get, as root); where that cannot be done the test skips and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import cv2
import pytest

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402 - after the importorskip above
from selenium.webdriver.chrome.service import Service  # noqa: E402 - after the importorskip above
from selenium.webdriver.common.by import By  # noqa: E402 - after the importorskip above
from selenium.webdriver.support import expected_conditions as seen  # noqa: E402 - after the importorskip above
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402 - after the importorskip above

pytestmark = pytest.mark.slow


def _browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing Debian's packages when missing."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium/chromedriver, and no root apt-get to install Debian's packages")
    proc = subprocess.run(
        "apt-get update -qq && apt-get install -y -qq chromium chromium-driver",
        shell=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        pytest.skip(f"apt-get could not install chromium and chromium-driver: {proc.stderr[-300:]}")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`metauas app --method lookup --port 0` in a real process; its URL from its first line."""
    code = "import sys; from metauas.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-c",
            code,
            "app",
            "--method",
            "lookup",
            "--size",
            "64",
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"the app did not start: {line}{proc.stderr.read()[-2000:]}")
    yield line.split(" on ")[-1].split()[0]
    proc.terminate()
    proc.wait(timeout=30)


def test_page_shows_heatmaps_scores_and_a_working_threshold(server, mvtec_root, tmp_path):
    chromium, chromedriver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        tile = mvtec_root / "tile"
        driver.get(server)
        driver.find_element(By.ID, "normals").send_keys(
            "\n".join(str(tile / f"train/good/00{i}.png") for i in range(3))
        )
        queries = [tile / "test/blob/000.png", tile / "test/good/000.png"]
        driver.find_element(By.ID, "queries").send_keys("\n".join(map(str, queries)))
        driver.find_element(By.ID, "run").click()
        WebDriverWait(driver, 120).until(seen.text_to_be_present_in_element((By.ID, "status"), "2 image(s)"))
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".result div")]
        assert [t.split(":")[0] for t in labels] == ["000.png", "000.png"] and all("score" in t for t in labels)
        assert "anomalous" in labels[0]  # the slider starts at the threshold fitted on the normals
        driver.save_screenshot(os.environ.get("METAUAS_APP_SCREENSHOT", str(tmp_path / "whole.png")))
        shot = tmp_path / "page.png"
        driver.find_elements(By.CSS_SELECTOR, ".result canvas")[0].screenshot(str(shot))
        pixels = cv2.imread(str(shot))
        colour = pixels.astype(int).max(axis=2) - pixels.astype(int).min(axis=2)
        assert (colour > 80).mean() > 0.2, "the first result should be drawn as a coloured heatmap"
        slider = driver.find_element(By.ID, "threshold")
        driver.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent(new Event('input'))", slider)
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".result div")]
        assert all(t.endswith("normal") for t in labels) and driver.find_element(By.ID, "tvalue").text == "1.000"
    finally:
        driver.quit()


def test_bad_uploads_are_answered_with_a_message(server):
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"normals": [{"name": "x.png", "data": "bm90IGFuIGltYWdl"}], "queries": []}).encode()
    request = urllib.request.Request(server + "segment", body, {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=60)
    assert err.value.code == 400 and "not an image this page can read" in json.loads(err.value.read())["error"]
    assert urllib.request.urlopen(server, timeout=60).status == 200
