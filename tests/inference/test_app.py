"""`metauas app` in a real headless browser: the example, files chosen and dropped (a
synthetic drop event), prompt | query | heatmap | mask per query under each file's own
name, the colour bar, the fitted threshold moved and restored, and the downloads checked
against the Python API. Screenshots go to the test's tmp dir (METAUAS_APP_SCREENSHOT:
also a copy of the segmented example there). Debian's chromium and chromium-driver are
installed when missing (apt-get, as root); where that cannot be done the test skips."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import cv2
import numpy as np
import pytest
from browser import headless_chrome

selenium = pytest.importorskip("selenium")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as seen  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow
HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"


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


@pytest.fixture
def driver(tmp_path):
    browser = headless_chrome(tmp_path / "profile", (1200, 1300))
    (tmp_path / "downloads").mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path / "downloads")}
    )
    yield browser
    browser.quit()


def _segmented(driver, count: int) -> None:
    WebDriverWait(driver, 180).until(seen.text_to_be_present_in_element((By.ID, "status"), f"{count} image(s)"))


def _captions(driver) -> list[list[str]]:
    return [
        [c.text for c in box.find_elements(By.TAG_NAME, "figcaption")]
        for box in driver.find_elements(By.CLASS_NAME, "result")
    ]


def _verdicts(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CLASS_NAME, "verdict")]


def _coloured(driver, element, path) -> float:
    """Share of an element's pixels, as the screen shows them, that are strongly coloured."""
    element.screenshot(str(path))
    pixels = cv2.imread(str(path)).astype(int)
    return float((pixels.max(axis=2) - pixels.min(axis=2) > 80).mean())


def _downloaded(folder, name: str) -> bytes:
    path = folder / name
    for _ in range(600):  # up to a minute for the browser to finish writing it
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded; the folder holds {sorted(p.name for p in folder.iterdir())}")


def _drop(driver, zone_id: str, paths) -> None:
    """A synthetic drop: the files go into a DataTransfer (through a file input the test
    adds, the one way a test may hand a browser local files) and dragenter, dragover and
    drop are dispatched on the zone, as a user's drag would."""
    picker = driver.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.multiple = true;"
        "document.body.append(i); return i;"
    )
    picker.send_keys("\n".join(map(str, paths)))
    driver.execute_script(
        """
        const [zone, picker] = arguments, data = new DataTransfer();
        for (const f of picker.files) data.items.add(f);
        for (const type of ['dragenter', 'dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
        picker.remove();""",
        driver.find_element(By.ID, zone_id),
        picker,
    )


def test_dropped_files_get_four_named_tiles_and_an_adjustable_threshold(server, driver, mvtec_root, tmp_path):
    tile = mvtec_root / "tile"
    hostile = tmp_path / HOSTILE_NAME
    shutil.copy(tile / "test/blob/001.png", hostile)
    driver.get(server)
    driver.find_element(By.ID, "normals").send_keys("\n".join(str(tile / f"train/good/00{i}.png") for i in range(3)))
    _drop(driver, "queries-zone", [tile / "test/blob/000.png", tile / "test/good/000.png", hostile])
    assert driver.current_url == server, "the drop must not navigate away to the file"
    listed = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#queries-list li")]
    assert listed == ["000.png", "000.png (2)", HOSTILE_NAME]  # a name given twice is told apart
    driver.find_element(By.ID, "run").click()
    _segmented(driver, 3)

    captions = _captions(driver)
    assert [[c.split(": ", 1)[0] for c in row] for row in captions] == [["prompt", "query", "heatmap", "mask"]] * 3
    assert [row[1].split(": ", 1)[1] for row in captions] == listed  # each tile names its own file
    assert all(row[0].split(": ", 1)[1] in ("000.png", "001.png", "002.png") for row in captions)
    with pytest.raises(NoAlertPresentException):  # the hostile name is text, never markup
        driver.switch_to.alert.text
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    verdicts = _verdicts(driver)
    assert "anomalous" in verdicts[0] and verdicts[2].startswith(HOSTILE_NAME)
    assert "fitted on 3 normal images" in driver.find_element(By.ID, "fitted").text
    fitted = float(driver.find_element(By.ID, "tnumber").get_attribute("value"))
    heatmap = driver.find_element(By.CSS_SELECTOR, ".result canvas[data-role=heatmap]")
    assert _coloured(driver, heatmap, tmp_path / "heatmap.png") > 0.2, "the heatmap must be drawn in colour"
    driver.save_screenshot(str(tmp_path / "dropped.png"))

    masks = driver.find_elements(By.CSS_SELECTOR, "canvas[data-role=mask]")
    white = (
        "return Array.from(arguments[0].getContext('2d')"
        ".getImageData(0, 0, arguments[0].width, arguments[0].height).data)"
        ".filter((v, i) => i % 4 == 0 && v == 255).length"
    )
    assert driver.execute_script(white, masks[0]) > 0  # the defect is marked at the fitted threshold
    number = driver.find_element(By.ID, "tnumber")
    number.clear()
    number.send_keys("1")
    assert all(v.endswith("normal") for v in _verdicts(driver))
    assert all(driver.execute_script(white, m) == 0 for m in masks)
    driver.save_screenshot(str(tmp_path / "threshold-1.png"))
    slider = driver.find_element(By.ID, "threshold")
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert all(v.endswith("anomalous") for v in _verdicts(driver)) and number.get_attribute("value") == "0.0000"
    driver.find_element(By.ID, "reset").click()
    assert float(number.get_attribute("value")) == fitted and "anomalous" in _verdicts(driver)[0]

    driver.find_element(By.ID, "clear").click()  # an upload over the server's limit is told before it is sent
    assert not driver.find_elements(By.CLASS_NAME, "result") and not driver.find_elements(
        By.CSS_SELECTOR, "#queries-list li"
    )
    (tmp_path / "huge.png").write_bytes(os.urandom(25 << 20))
    driver.find_element(By.ID, "normals").send_keys(str(tmp_path / "huge.png"))
    driver.find_element(By.ID, "queries").send_keys(str(tile / "test/good/000.png"))
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 120).until(
        seen.text_to_be_present_in_element((By.ID, "status"), "the page takes up to 32 MB")
    )


def _api_results(example: dict, folder):
    """What the Python API makes of the example's files (the page must agree)."""
    from metauas.inference.api import Segmenter

    for f in example["normals"] + example["queries"]:
        (folder / f["name"]).write_bytes(base64.b64decode(f["data"]))
    segmenter = Segmenter.load(None, method="lookup", size=64, device="cpu")
    segmenter.set_prompts(*(folder / f["name"] for f in example["normals"]))
    threshold = segmenter.fit_threshold()
    results = segmenter.segment([folder / f["name"] for f in example["queries"]])
    return threshold, {f["name"]: r for f, r in zip(example["queries"], results)}


def test_example_downloads_match_the_api(server, driver, tmp_path):
    driver.get(server)
    driver.find_element(By.ID, "example").click()
    _segmented(driver, 2)
    assert _coloured(driver, driver.find_element(By.ID, "colourbar"), tmp_path / "bar.png") > 0.2
    captions = _captions(driver)
    assert [row[3] for row in captions] == ["mask: brick-gravel-spot.png", "mask: brick-crack.png"]
    assert all("anomalous" in v for v in _verdicts(driver))
    driver.save_screenshot(os.environ.get("METAUAS_APP_SCREENSHOT", str(tmp_path / "example.png")))
    driver.save_screenshot(str(tmp_path / "example.png"))

    downloads = tmp_path / "downloads"
    driver.find_elements(By.CSS_SELECTOR, "button[data-download=map]")[1].click()
    single = _downloaded(downloads, "brick-crack_map.png")
    driver.find_element(By.ID, "zip").click()
    archive = zipfile.ZipFile(io.BytesIO(_downloaded(downloads, "metauas-page.zip")))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == [
        "maps/brick-crack.png",
        "maps/brick-gravel-spot.png",
        "masks/brick-crack.png",
        "masks/brick-gravel-spot.png",
        "predictions.csv",
    ]
    assert archive.read("maps/brick-crack.png") == single
    rows = list(csv.DictReader(io.StringIO(archive.read("predictions.csv").decode())))

    from metauas.inference.app import example_body

    (tmp_path / "files").mkdir()
    threshold, api = _api_results(json.loads(example_body()), tmp_path / "files")
    assert [r["query"] for r in rows] == list(api)
    for row in rows:
        result = api[row["query"]]
        assert abs(float(row["score"]) - result.score) <= 1e-6 and abs(float(row["threshold"]) - threshold) <= 1e-6
        assert row["anomalous"] == str(result.score > threshold) and row["method"] == "lookup"
        level = cv2.imdecode(np.frombuffer(archive.read(row["map"]), np.uint8), cv2.IMREAD_UNCHANGED)
        expected = np.round(np.clip(result.map, 0, 1) * 65535)  # predict's map file; one step of float noise
        assert level.dtype == np.uint16 and np.abs(level - expected).max() <= 1  # between two processes' threads
        mask = cv2.imdecode(np.frombuffer(archive.read(row["mask"]), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask == 255, level > float(row["threshold"]) * 65535)  # as the page compares
        near = np.abs(result.map - float(row["threshold"])) < 1e-4  # 16-bit steps: only there may they differ
        assert np.array_equal((mask == 255)[~near], (result.map > threshold)[~near]) and mask.any()
    driver.find_element(By.ID, "csv").click()
    assert _downloaded(downloads, "predictions.csv") == archive.read("predictions.csv")
    driver.find_elements(By.CSS_SELECTOR, "button[data-download=mask]")[0].click()
    alone = cv2.imdecode(
        np.frombuffer(_downloaded(downloads, "brick-gravel-spot_mask.png"), np.uint8), cv2.IMREAD_GRAYSCALE
    )
    assert np.array_equal(
        alone, cv2.imdecode(np.frombuffer(archive.read("masks/brick-gravel-spot.png"), np.uint8), cv2.IMREAD_GRAYSCALE)
    )
