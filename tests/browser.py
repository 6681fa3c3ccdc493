"""One headless Chromium for the browser tests (evaluate's report, the app's page).

Debian's chromium and chromium-driver are installed when missing (apt-get, as root);
where that cannot be done the test skips, saying why. The browser is offline: every
network request but loopback (Chromium's default bypass) goes to a dead proxy, so a page that fetches anything from
the web fails visibly instead of passing on a connected machine only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402


def browser_paths() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing Debian's packages when missing."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if found[0] and found[1]:
        return found[0], found[1]
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
    if not (found[0] and found[1]):
        pytest.skip(f"apt-get could not install chromium and chromium-driver: {proc.stderr[-300:]}")
    return found[0], found[1]


def headless_chrome(profile: Path, window: tuple[int, int]) -> webdriver.Chrome:
    """A headless, offline Chromium with its own profile folder and window size."""
    chromium, chromedriver = browser_paths()
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
        "--proxy-server=127.0.0.1:9",  # offline: a dead proxy; loopback (the page's server) goes direct
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)
