"""A headless Chromium on the view, through selenium: what the suite's picture test and ``twinsim bench view`` load.

Debian's ``chromium`` and ``chromium-driver`` (the set-up script installs them); WebGL in software (SwiftShader),
since the machines this runs on have no GPU for a browser.
"""

from __future__ import annotations

import shutil
from typing import Any

from twinsim.errors import TwinsimError

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader")


class BrowserMissing(TwinsimError, RuntimeError):
    """No headless browser here to load the view in."""


def have_chromium() -> bool:
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


def headless_chromium(width: int = 1280, height: int = 800) -> Any:
    """A selenium driver of a headless Chromium window of ``width`` x ``height`` pixels (quit it when done)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise BrowserMissing("Debian's chromium and chromium-driver are not installed (the set-up script, .ci/setup, "
                             "installs them)")
    try:
        from selenium import webdriver
    except ImportError:
        raise BrowserMissing("selenium is not installed (pip install -e '.[test]')") from None
    opts = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.binary_location = chromium
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver))
