"""`cls-ray report`: the demo's report written again from its saved figures (Markdown, plots, one
HTML page with the plots in it), or any Markdown report given as a path turned into that page."""

from __future__ import annotations

import json
from pathlib import Path

from cls_ray.config import Config
from cls_ray.demo import write_demo_report
from cls_ray.eval.html import write_html
from cls_ray.eval.screenshot import screenshot


def cmd_report(args, cfg: Config) -> dict:
    if args.paths:
        pages = []
        for p in map(Path, args.paths):
            if p.suffix != ".md" or not p.is_file():
                raise FileNotFoundError(f"{p}: not a Markdown file")
            pages.append(str(write_html(p)))
            print(f"{p} -> {pages[-1]}")
        return {"pages": pages, **_screenshots(args, pages)}
    out_dir = cfg.state_path / "reports" / "demo"
    saved = out_dir / "demo.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved}: no demo report yet; run `cls-ray demo` first")
    report = json.loads(saved.read_text())
    write_demo_report(report, out_dir)
    print(f"report: {report['report_path']}; as one page: {report['report_html']}")
    return {
        "report_path": report["report_path"],
        "report_html": report["report_html"],
        **_screenshots(args, [report["report_html"]]),
    }


def _screenshots(args, pages: list[str]) -> dict:
    """With `--screenshot`: each page as a headless browser shows it (its top 1200 x 2400
    pixels), `<page>.screenshot.png` beside it (never a figure the page embeds)."""
    if not getattr(args, "screenshot", False):
        return {}
    shots = [str(screenshot(p, Path(p).with_suffix(".screenshot.png"))) for p in pages]
    for s in shots:
        print(f"screenshot: {s}")
    return {"screenshots": shots}
