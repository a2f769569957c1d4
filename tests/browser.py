"""A real browser for the tests: Debian's chromium and chromium-driver, driven by Selenium, headless.

Selenium is given the driver's path and SE_OFFLINE, so Selenium Manager downloads nothing; Chromium runs
with a fresh profile, without its background traffic (updates, sync, field trials), and resolves no host
name but 127.0.0.1's: a page that tried to load something from another host fails to, and the test sees
the attempt in the performance log. CI sets PUBLISHER_REQUIRE_BROWSER so that a missing browser fails the
tests instead of skipping them (.ci/run installs both packages).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
         "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
         "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
         # Nothing but loopback resolves: even a test that fails keeps its traffic on this machine.
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")


def require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium (pip install -e '.[test]')")
    if not missing:
        return
    message = f"browser tests need {', '.join(missing)}: install the Debian packages chromium chromium-driver"
    if os.environ.get("PUBLISHER_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium window of this size, with a fresh profile and the performance log on."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: use what is given, download nothing
    with tempfile.TemporaryDirectory(prefix="publisher-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (DevTools Network.requestWillBeSent events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def set_viewport(driver: Any, width: int, height: int = 900) -> None:
    """The page's viewport exactly this wide (the window's frame is not counted, as on a phone)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def full_page_screenshot(driver: Any, path: Path, width: int) -> Path:
    """A screenshot of the whole page at this viewport width, as PNG."""
    set_viewport(driver, width)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    set_viewport(driver, width, min(int(height), 4000))
    driver.save_screenshot(str(path))
    return path
