"""The documents demo: small PDFs written by hand at demo time (operators/documents/makepdf.py).

Kept: a two-column paper page after a prose page (one document), a table page.
Rejected, one of each: a scan without a text layer, an encrypted PDF, a
truncated one, a non-PDF named .pdf, one with JavaScript, one with an
attachment, a zero-page one, a page millions of points wide, and a 12-page
document (its first documents.max_pages=4 kept, one too_many_pages reject).
"""

from __future__ import annotations

import pathlib

from quarry.dags.demos import DemoInput

LEFT = ["Rendering text into images gives", "exact ground truth for every line,", "its box and its reading order.",
        "The left column is read first,", "from top to bottom."]
MAX_PAGES = 4  # long.pdf (12 pages) keeps 4: the cap, shown small
RIGHT = ["Then the right column follows,", "again from the top of the page.", "A reader who skips the gutter",
         "reads nonsense across columns.", "The DAG must not."]


def pages():
    from quarry.operators.documents import makepdf as m

    paper = [m.prose_page("Document OCR data", ["Each PDF page becomes one training row:",
                                                 "the rendered page, its text in reading order,",
                                                 "and a box for every line of text."]),
             m.two_column_page("Two columns, one title", LEFT, RIGHT)]
    table = [m.table_page("Prices", ["Item", "Count", "Price"], [["apple", "3", "1.20"], ["pear", "5", "0.80"],
                                                                 ["fig", "9", "2.10"]])]
    return paper, table


def build(folder: pathlib.Path) -> DemoInput:
    from quarry.operators.documents import makepdf as m

    folder.mkdir(parents=True, exist_ok=True)
    paper, table = pages()
    files = {
        "paper.pdf": m.build(paper),
        "table.pdf": m.build(table),
        "scan.pdf": m.build([m.scan_page()]),
        "encrypted.pdf": m.encrypted(paper),
        "truncated.pdf": m.build(paper)[:600],
        "not_a_pdf.pdf": b"<html><body>this is not a PDF</body></html>\n",
        "javascript.pdf": m.with_javascript(table),
        "attachment.pdf": m.with_attachment(table),
        "zero_pages.pdf": m.build([]),
        "huge_page.pdf": m.huge_page(),
        "long.pdf": m.many_pages(12),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return DemoInput([str(folder)], [f"documents.max_pages={MAX_PAGES}"])
