"""Headless Chromium for the dashboard tests (Debian's `chromium` + `chromium-driver`, driven by Selenium),
and `glo dashboard` started as a real server on a free port.

`make test` installs the two Debian packages when missing (Makefile: system-deps).  Without them the
browser tests are skipped, or fail when $CI is set: CI must not pass by skipping them.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.orch_helpers import GLO_MAIN, REPO, glo_env

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)


def _which(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return next((p for p in extra if os.access(p, os.X_OK)), None)


def find_chromium() -> tuple[str | None, str | None]:
    return (_which(CHROMIUM_NAMES, ("/usr/bin/chromium",)),
            _which(DRIVER_NAMES, ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")))


def missing_reason() -> str | None:
    """Why no browser test can run here, or None."""
    chromium, driver = find_chromium()
    if chromium is None or driver is None:
        return ("headless Chromium is missing (apt-get install chromium chromium-driver, or `make test` as root): "
                f"chromium={chromium or 'not found'}, chromedriver={driver or 'not found'}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chrome(width: int = 1360, height: int = 900) -> Iterator[Any]:
    """A headless Chromium session (Selenium WebDriver); the browser's console is kept (driver.get_log)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = find_chromium()
    assert chromium and driver_path, missing_reason()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-sync", "--metrics-recording-only", "--mute-audio", f"--window-size={width},{height}",
                "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium refuses to run its sandbox as root
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def full_screenshot(driver: Any, path: str | Path) -> Path:
    """A PNG of the whole page (beyond the window), through the DevTools protocol."""
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data["data"]))
    return path


def console_errors(driver: Any) -> list[str]:
    """Severe messages of the browser's console since the last call (script errors, CSP violations)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


class Dashboard:
    """`glo dashboard --db DB --port 0` in a subprocess; `url` is what it printed."""

    def __init__(self, db: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", GLO_MAIN, "dashboard", "--db", str(db), "--port", "0",
                                      *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env or glo_env(), cwd=REPO)
        self.url = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"(http://\S+/)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"glo dashboard did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
