"""Headless Chromium for tests that must see what a real browser sees.

Debian's ``chromium`` and ``chromium-driver`` packages (the same version, always) are
driven through Selenium's WebDriver: no browser is downloaded at test time.
``scripts/ensure-test-deps`` installs the packages when they are missing. Set
CHROMIUM_BINARY and CHROMEDRIVER to use other paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from .processes import descendant_pids, kill_pids, wait_gone
from .waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-test-deps"

# Needed to run as root in a sandboxed container with no network but loopback: without the
# background-networking flags Chromium keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--window-size=1024,768",
)


def find_chromium() -> tuple[str, str] | None:
    """Paths of the Chromium binary and of its chromedriver, or None when one is missing."""
    binary = os.environ.get("CHROMIUM_BINARY") or shutil.which("chromium")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if binary and driver and os.access(binary, os.X_OK) and os.access(driver, os.X_OK):
        return binary, driver
    return None


def install_test_deps(timeout: float = 900.0) -> str:
    """Run ``scripts/ensure-test-deps`` (apt-get; needs root or password-less sudo) for at
    most ``timeout`` seconds; returns what it printed, or why it did not finish."""
    try:
        result = subprocess.run(
            ["bash", str(ENSURE_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{ENSURE_SCRIPT} did not finish within {timeout:g}s"
    return f"{ENSURE_SCRIPT} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"


def ensure_chromium(timeout: float = 900.0) -> tuple[str, str] | str:
    """Chromium's and chromedriver's paths, installing them first when they are missing.
    Returns the two paths, or a string saying why they are missing."""
    found = find_chromium()
    if found:
        return found
    output = install_test_deps(timeout)
    return find_chromium() or f"chromium and chromedriver ({output})"


class Browser:
    """One headless Chromium with a fresh profile, driven by chromedriver.

    ``timeout`` bounds page loads and scripts. Always ``quit()`` (or use ``with``): it
    ends chromedriver and every Chromium process by PID, even when the driver is stuck.
    """

    def __init__(self, binary: str, driver: str, *, timeout: float = 20.0) -> None:
        self.binary = binary
        self.driver_path = driver
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="pushservice-chromium-"))
        self.driver_log = self.profile / "chromedriver.log"
        self._driver: Any = None
        self._service: Any = None
        self.quit_error: Exception | None = None

    def start(self) -> Browser:
        """Launch Chromium; returns once it can load pages."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = self.binary
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile / 'profile'}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # A path for the driver keeps Selenium Manager (which downloads drivers) out.
        self._service = Service(self.driver_path, log_output=str(self.driver_log))
        try:
            self._driver = webdriver.Chrome(service=self._service, options=options)
            self._driver.set_page_load_timeout(self.timeout)
            self._driver.set_script_timeout(self.timeout)
        except BaseException:
            self.quit()
            raise
        return self

    @property
    def driver(self) -> Any:
        """The Selenium WebDriver, for anything this class does not wrap."""
        if self._driver is None:
            raise RuntimeError("the browser is not running: call start()")
        return self._driver

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the page has loaded."""
        self.driver.get(url)

    def evaluate(self, expression: str, *args: Any) -> Any:
        """The value of a JavaScript expression in the page (``arguments[i]`` are ``args``)."""
        return self.driver.execute_script(f"return ({expression});", *args)

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript statements in the page; returns what the script returns."""
        return self.driver.execute_script(script, *args)

    def wait_for(self, expression: str, timeout: float = 10.0, *, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy and return its value.

        On timeout the error shows ``what`` (default: the expression) and the console.
        """
        return wait_until(
            lambda: self.evaluate(expression),
            timeout,
            interval=0.05,
            message=lambda: f"{what or expression} in the browser; console: {self.console()}",
        )

    def console(self) -> list[str]:
        """Console messages and page errors logged since the last call."""
        try:
            return [entry["message"] for entry in self.driver.get_log("browser")]
        except Exception as exc:  # noqa: BLE001 - diagnostics only; the driver may be gone
            return [f"(console unavailable: {exc})"]

    def quit(self) -> None:
        """End the browser and its driver; idempotent, never raises."""
        process = getattr(self._service, "process", None) if self._service else None
        pids = [process.pid, *descendant_pids(process.pid)] if process else []
        try:
            if self._driver is not None:
                self._driver.quit()
        except Exception as exc:  # noqa: BLE001 - a stuck or dead driver is killed below
            self.quit_error = exc
        finally:
            self._driver = None
            kill_pids(pids)
            wait_gone(pids, 5)
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self if self._driver is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.quit()
