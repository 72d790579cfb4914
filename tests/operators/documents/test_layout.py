"""Reading order, columns, tables and tiers from text segments (made ones; one real Debian PDF, skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.operators.documents.layout import TIERS, Segment, page_layout, page_tier


def seg(text, x, y, w=None, h=10.0):
    return Segment(text, (x, y, x + (w if w is not None else 5.0 * len(text)), y + h))


def test_two_columns_read_left_then_right_under_a_wide_title():
    segs = [seg("A title that runs across both columns of the page", 72, 60, w=460)]
    segs += [seg(f"left {i}", 72, 100 + 14 * i, w=200) for i in range(4)]
    segs += [seg(f"right {i}", 320, 100 + 14 * i, w=200) for i in range(4)]
    lay = page_layout(segs)
    assert [ln.text for ln in lay.lines] == ["A title that runs across both columns of the page",
                                             *[f"left {i}" for i in range(4)], *[f"right {i}" for i in range(4)]]
    assert lay.columns == 2 and not lay.table


def test_wide_line_between_column_blocks_makes_bands():
    segs = [seg(f"a{i}", 72, 100 + 14 * i, w=200) for i in range(3)] + [seg(f"b{i}", 320, 100 + 14 * i, w=200)
                                                                      for i in range(3)]
    segs.append(seg("a full width paragraph line in the middle", 72, 160, w=450))
    segs += [seg(f"c{i}", 72, 190 + 14 * i, w=200) for i in range(3)] + [seg(f"d{i}", 320, 190 + 14 * i, w=200)
                                                                       for i in range(3)]
    order = [ln.text for ln in page_layout(segs).lines]
    assert order == ["a0", "a1", "a2", "b0", "b1", "b2", "a full width paragraph line in the middle",
                     "c0", "c1", "c2", "d0", "d1", "d2"]


def test_pieces_on_a_baseline_join_with_spaces_and_table_reads_row_by_row():
    segs = [seg("Hello", 72, 50, w=25), seg("world", 100, 50.5, w=25)]  # a word gap under one font height
    assert page_layout(segs).lines[0].text == "Hello world"
    cells = [["Item", "Count", "Price"], ["apple", "3", "1.20"], ["pear", "5", "0.80"], ["fig", "9", "2.10"]]
    segs = [seg(c, 72 + 130 * j, 100 + 18 * i + (0.7 if j == 1 else 0), w=30, h=8 + j)
            for i, row in enumerate(cells) for j, c in enumerate(row)]
    lay = page_layout(segs)
    assert lay.table and [ln.text for ln in lay.lines] == [c for row in cells for c in row]


def test_empty_page_and_tiers():
    assert page_layout([]).lines == [] and page_layout([seg("  ", 0, 0)]).chars == 0
    sparse = page_layout([seg("one line", 72, 72)], font_size=12)
    assert page_tier(sparse, 612, 792)[0] == "very_easy"
    dense = page_layout([seg("x" * 90, 72, 60 + 9 * i, w=200, h=6) for i in range(80)]
                        + [seg("y" * 90, 320, 60 + 9 * i, w=200, h=6) for i in range(80)], font_size=7)
    tier, facts = page_tier(dense, 612, 792)
    assert facts["columns"] == 2 and facts["chars_per_in2"] > 40 and tier == TIERS[4]


TASN1 = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")  # Debian libtasn1-doc: a Texinfo manual


@pytest.mark.skipif(not TASN1.exists(), reason="libtasn1-doc is not installed")
def test_a_real_two_column_index_reads_as_a_person_reads_it():
    """Page 35 of libtasn1.pdf (looked at rendered): the title, then the left column (A, F, H entries) top to
    bottom, then the right column (M, P, S, T). The running page number "32" (top right) lands at the top of the
    right column: after the left column, before "M"."""
    from quarry.operators.documents import pdf

    page = pdf.extract(TASN1.read_bytes(), pdf.Params(dpi=36, render="none", pages=(35,))).pages[0]
    lay = page_layout([Segment(t, tuple(b)) for t, b in page.segments], page.font_size)
    assert lay.columns == 2
    heads = [ln.split(" .")[0].strip() for ln in lay.text.split("\n")]
    person = ["Concept Index", "A", "asn1Coding program", "asn1Decoding program", "asn1Parser program",
              "ASN.1 schema", "F", "FDL, GNU Free Documentation License", "Future developments", "H",
              "Header file libtasn1.h", "M", "Main type asn1 node", "P", "Porting", "S",
              "Supported ASN.1 types, list of", "T", "threads"]
    assert [h for h in heads if h != "32"] == person
    assert heads.index("32") == person.index("M")
