"""The report as a person sees it: `cls-ray report --screenshot` writes the demo's page again from
the figures a real demo run saved (tests/data/demo_report.json) and a headless Chromium renders
it; the screenshot shows the plots (their bars' colours), not broken images."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cls_ray.cli.main import main
from cls_ray.eval.screenshot import BrowserError, find_browser, screenshot

SAVED = Path(__file__).parent / "data" / "demo_report.json"
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours: the bars

needs_browser = pytest.mark.skipif(
    find_browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)"
)


def _pixels_near(img: Image.Image, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return sum(
        n
        for n, px in img.convert("RGB").getcolors(maxcolors=1 << 24)
        if all(abs(a - b) <= tol for a, b in zip(px, rgb, strict=True))
    )


@needs_browser
def test_the_report_page_shows_its_plots_in_a_real_browser(tmp_path, capsys):
    out_dir = tmp_path / "reports" / "demo"
    out_dir.mkdir(parents=True)
    shutil.copy(SAVED, out_dir / "demo.json")
    args = ["--set", f"state_dir={tmp_path}"]
    assert main(["report", "--screenshot", "--json", *args]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    shot = Path(result["screenshots"][0])
    assert shot == out_dir / "report.screenshot.png"
    img = Image.open(shot)
    assert img.size == (1200, 2400)
    # The accuracy plot's two bar colours cover a real area: the embedded PNGs were drawn.
    assert _pixels_near(img, BLUE) > 20_000 and _pixels_near(img, ORANGE) > 20_000
    # Without its plots the same page shows none of those colours.
    html = Path(result["report_html"])
    bare = html.with_name("bare.html")
    bare.write_text(html.read_text().split("<img", 1)[0] + "</body></html>")
    plain = Image.open(screenshot(bare, tmp_path / "bare.png"))
    assert _pixels_near(plain, BLUE) < 500 and _pixels_near(plain, ORANGE) < 500


def test_without_a_browser_the_command_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    md = tmp_path / "r.md"
    md.write_text("# r\n")
    assert main(["report", str(md), "--screenshot", "--set", f"state_dir={tmp_path}"]) == 1
    assert "apt-get install chromium" in capsys.readouterr().err
    monkeypatch.setenv("CLS_RAY_BROWSER", str(tmp_path / "no-such-browser"))
    with pytest.raises(BrowserError, match="is not a program"):
        screenshot(tmp_path / "r.html", tmp_path / "r.png")


def _fake_browser(tmp_path, body: str) -> str:
    exe = tmp_path / "fake-browser"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_browser_that_fails_hangs_or_writes_nothing_is_a_clear_error(tmp_path, monkeypatch):
    page = tmp_path / "p.html"
    page.write_text("<p>x</p>")
    cases = [
        ("echo 'cannot open display' >&2; exit 3", "exited 3: cannot open display", 10),
        ("exit 0", "wrote no screenshot", 10),
        ("sleep 30", "did not finish within 1 s", 1),
    ]
    for body, message, timeout in cases:
        monkeypatch.setenv("CLS_RAY_BROWSER", _fake_browser(tmp_path, body))
        with pytest.raises(BrowserError, match=message):
            screenshot(page, tmp_path / "p.png", timeout_s=timeout)
