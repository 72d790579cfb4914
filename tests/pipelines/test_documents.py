"""DocumentsPipeline in a TestPipeline: pages -> `ocr` rows in reading order, document and page rejects."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from quarry.operators.documents import makepdf as m
from quarry.operators.documents import pdf as pdf_ops
from quarry.operators.ids import content_id, digest
from quarry.pipelines.documents import DocumentsPipeline, PdfRecord
from quarry.schemas.common import Origin
from quarry.schemas.documents import DocumentsConfig

CFG = DocumentsConfig.model_validate({"documents": {"max_pages": 2, "dpi": 72}})


def rec(name: str, data: bytes) -> PdfRecord:
    return PdfRecord(content_id("documents", name, digest(data)), "test", Origin(file=f"/in/{name}", key=name),
                     digest(data), data)


def test_rows_and_rejects():
    two = m.two_column_page("Title", ["l1", "l2", "l3"], ["r1", "r2", "r3"])
    records = [rec("a.pdf", m.build([two, m.scan_page(), m.prose_page("P3", ["x"])])),
               rec("enc.pdf", m.encrypted([two])), rec("junk.pdf", b"not a pdf")]
    with TestPipeline() as p:
        out = p | beam.Create(records) | DocumentsPipeline(CFG)
        assert_that(out.rows | beam.Map(lambda r: (r.origin.key, r.page_number, r.page_count, r.text, r.task,
                                                   r.answer == r.text, r.verifier.kind, r.pages_capped,
                                                   r.width, r.height, r.document_id == records[0].document_id)),
                    equal_to([("a.pdf#page=1", 1, 3, "Title\nl1\nl2\nl3\nr1\nr2\nr3", "ocr", True, "ocr", True,
                               612, 792, True)]), label="rows")
        assert_that(out.rejected | beam.Map(lambda r: (r.origin.key, r.stage, r.reason)),
                    equal_to([("a.pdf", "open", pdf_ops.TOO_MANY_PAGES), ("a.pdf#page=2", "page",
                                                                           pdf_ops.NO_TEXT_LAYER),
                              ("enc.pdf", "open", pdf_ops.ENCRYPTED), ("junk.pdf", "open", pdf_ops.NOT_A_PDF)]),
                    label="rejects")


def test_line_boxes_are_pixels_and_1000_grid():
    page = m.Page([m.Text(306, 396, 20, "center")])  # letter page middle, baseline at half height
    with TestPipeline() as p:
        out = p | beam.Create([rec("c.pdf", m.build([page]))]) | DocumentsPipeline(CFG)
        assert_that(out.rows | beam.Map(lambda r: _box_ok(r)), equal_to([True]))


def _box_ok(row) -> bool:
    (line,) = row.lines
    x0, y0, _x1, y1 = line.box  # 72 dpi: pixels == points
    b = line.box_1000
    return (line.text == "center" and abs(x0 - 306) <= 2 and y0 < 396 <= y1 + 1 and
            abs(b[0] - x0 / 612 * 1000) <= 2 and abs(b[3] - y1 / 792 * 1000) <= 2 and line.score == 1.0)
