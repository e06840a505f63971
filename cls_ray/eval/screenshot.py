"""A report page seen as a person sees it: a headless Chromium renders the HTML file and writes
a PNG screenshot. Optional: the browser is a system program (`apt-get install chromium` on
Debian), looked up on PATH or named by `CLS_RAY_BROWSER`; nothing of it is a Python dependency."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, offline and quiet: no first-run pages, no background requests (the machine may have
# no network), a fresh profile, and no sandbox (the namespaces it needs are absent in containers).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    pass


def find_browser() -> str | None:
    """The browser to use: `CLS_RAY_BROWSER` when set, else the first of BROWSERS on PATH."""
    named = os.environ.get("CLS_RAY_BROWSER")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(
    page: str | Path,
    out: str | Path,
    width: int = 1200,
    height: int = 2400,
    timeout_s: float = 60.0,
) -> Path:
    """Renders `page` (an HTML file) in a headless browser and writes the view to `out` (PNG)."""
    page, out = Path(page).resolve(), Path(out).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    browser = find_browser()
    if browser is None:
        raise BrowserError(
            "no headless browser found: install Chromium (Debian: apt-get install chromium) "
            "or set CLS_RAY_BROWSER to its path"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="cls-ray-browser-") as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise BrowserError(f"{browser} did not finish within {timeout_s:.0f} s") from e
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BrowserError(f"{browser} exited {done.returncode}: {' | '.join(tail)}")
    return out
