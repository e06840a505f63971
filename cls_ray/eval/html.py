"""A report as one HTML page: the Markdown the reports write (headings, paragraphs, pipe tables,
images, inline code and bold), with every image embedded, so the page opens anywhere on its
own. Only that subset: a report is written by this code, not by users."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
th { background: #f4f4f4; }
img { max-width: 100%; margin: 1rem 0; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 .2rem; }
"""

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _image(alt: str, src: str, base: Path) -> str:
    path = base / src
    kind = _TYPES.get(path.suffix.lower())
    if kind is None or not path.is_file():
        return f"<p><em>missing image: {html.escape(src)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:{kind};base64,{data}">'


def markdown_to_html(md: str, base: Path, title: str = "cls-ray report") -> str:
    """The page of `md`; images are read relative to `base` and embedded."""
    body: list[str] = []
    para: list[str] = []
    lines = md.splitlines()
    i = 0

    def flush() -> None:
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush()
        elif m := re.match(r"^(#{1,4}) (.+)$", line):
            flush()
            n = len(m.group(1))
            body.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif m := _IMAGE.match(line.strip()):
            flush()
            body.append(_image(m.group(1), m.group(2), base))
        elif (
            line.lstrip().startswith("|")
            and i + 1 < len(lines)
            and set(lines[i + 1].replace("|", "").strip()) <= set("-: ")
        ):
            flush()
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(line))
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append("".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])))
                i += 1
            trs = "".join(f"<tr>{r}</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            continue
        else:
            para.append(line.strip())
        i += 1
    flush()
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html(md_path: Path) -> Path:
    """`report.md` → `report.html` next to it (images embedded)."""
    out = md_path.with_suffix(".html")
    title = next((ln[2:] for ln in md_path.read_text().splitlines() if ln.startswith("# ")), "")
    out.write_text(markdown_to_html(md_path.read_text(), md_path.parent, title or "cls-ray"))
    return out
