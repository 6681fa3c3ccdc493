"""evaluate's report.html in headless Chromium, offline: it loads from file:// with every
network request sent to a dead proxy, every image decodes, every curve is drawn with a
size, every in-page link lands. A screenshot is saved under the test's tmp dir (or where
$METAUAS_REPORT_SCREENSHOT says)."""

from __future__ import annotations

import os

import pytest
from browser import headless_chrome
from test_report_figures import evaluate_both

pytestmark = pytest.mark.slow


def _driver(tmp_path):
    return headless_chrome(tmp_path / "profile", (1200, 1400))


CHECKS = """
const imgs = [...document.images];
const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
const curves = [...document.querySelectorAll('svg.figure polyline.curve')];
const flat = curves.filter(c => { const b = c.getBBox(); return b.width <= 0 && b.height <= 0; }).length;
const figures = document.querySelectorAll('svg.figure').length;
const dead = [...document.querySelectorAll('a[href^="#"]')].filter(a => !document.getElementById(
    a.getAttribute('href').slice(1))).length;
const remote = performance.getEntriesByType('resource').map(e => e.name).filter(n => !/^(data|file):/.test(n));
return {images: imgs.length, broken, curves: curves.length, flat, figures, dead, remote,
        thresholds: document.querySelectorAll('svg.figure line.threshold').length};
"""


def test_report_loads_offline_with_every_image_and_curve(mvtec_root, checkpoint, tmp_path):
    out = tmp_path / "eval"
    evaluate_both(mvtec_root, checkpoint, out)
    driver = _driver(tmp_path)
    try:
        driver.get((out / "report.html").resolve().as_uri())
        found = driver.execute_script(CHECKS)
        shot = os.environ.get("METAUAS_REPORT_SCREENSHOT", str(tmp_path / "report.png"))
        driver.save_screenshot(shot)
    finally:
        driver.quit()
    assert found["images"] >= 4 and found["broken"] == [], found  # overlays: 2 classes x 2 methods
    assert found["figures"] == 10 and found["curves"] == 12 and found["flat"] == 0, found
    assert found["thresholds"] == 4 and found["dead"] == 0 and found["remote"] == [], found
    assert os.path.getsize(shot) > 10_000
