"""A report as one HTML page: headings, tables, paragraphs, the plots embedded, text escaped."""

import base64

from cls_ray.eval.html import markdown_to_html, write_html

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_headings_tables_and_plots_become_one_self_contained_page(tmp_path):
    (tmp_path / "acc.png").write_bytes(PNG)
    md = tmp_path / "report.md"
    md.write_text(
        "# cls-ray demo report\n\nSome **bold** `code` <script>x</script>\n\n"
        "| | new | old |\n|---|---|---|\n| before | 0.15 | 0.96 |\n| after | 0.98 | 0.95 |\n\n"
        "![acc](acc.png)\n![gone](missing.png)\n"
    )
    page = write_html(md).read_text()
    assert page.startswith("<!doctype html>") and "<title>cls-ray demo report</title>" in page
    assert "<h1>cls-ray demo report</h1>" in page
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # text is escaped
    assert page.count("<tr>") == 3 and "<td>0.98</td>" in page and "<th>new</th>" in page
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert "missing image: missing.png" in page


def test_a_table_needs_its_separator_row():
    page = markdown_to_html("| a | b |\njust text\n", base=None)  # no separator: a paragraph
    assert "<table>" not in page and "<p>| a | b | just text</p>" in page
