"""A report page seen as a person sees it: a headless Chromium renders the HTML file and writes
a PNG screenshot. Optional: the browser is a system program (`apt-get install chromium` on
Debian), looked up on PATH or named by `CLS_RAY_BROWSER`; nothing of it is a Python dependency."""

from __future__ import annotations

import os
import shutil
import signal
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
    "--disable-crash-reporter",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for a renderer
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
    """Renders `page` (an HTML file) in a headless browser and writes its top `width` x
    `height` pixels to `out` (PNG)."""
    page, out = Path(page).resolve(), Path(out).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    browser = find_browser()
    if browser is None:
        named = os.environ.get("CLS_RAY_BROWSER")
        raise BrowserError(
            f"CLS_RAY_BROWSER={named} is not a program"
            if named
            else "no headless browser found: install Chromium (Debian: apt-get install "
            "chromium) or set CLS_RAY_BROWSER to its path"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    # the browser's helpers may still be closing files in the profile: cleanup may not fail
    with tempfile.TemporaryDirectory(
        prefix="cls-ray-browser-", ignore_cleanup_errors=True
    ) as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.as_uri(),
        ]
        try:  # its own process group: a timeout ends the renderer and helpers too
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:  # not executable, not a program
            raise BrowserError(f"{browser} cannot be started: {e}") from e
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BrowserError(f"{browser} did not finish within {timeout_s:.0f} s") from e
    if proc.returncode != 0:
        text = (stderr or stdout).decode(errors="replace").strip().splitlines()[-3:]
        raise BrowserError(f"{browser} exited {proc.returncode}: {' | '.join(text)}")
    if not out.is_file():
        raise BrowserError(f"{browser} exited 0 but wrote no screenshot to {out}")
    return out
