"""Small PDFs written by hand (content streams, xref): demo and test inputs with known text and layout.

No PDF library writes them, so the bytes are exactly what the tests mean
(a two-column page, a table, an image-only "scan", and hostile variants).
Text uses the base-14 font Helvetica (PDFium ships metrics and a substitute).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

LETTER = (612.0, 792.0)


@dataclass
class Text:
    x: float  # points from the left
    y: float  # points from the top (baseline)
    size: float
    text: str


@dataclass
class Page:
    texts: list[Text] = field(default_factory=list)
    size: tuple[float, float] = LETTER
    scan: tuple[int, int, bytes] | None = None  # (w, h, gray pixels): drawn full-page, no text layer
    rules: list[tuple[float, float, float, float]] = field(default_factory=list)  # lines x0, y0, x1, y1 (y down)


def _esc(s: str) -> bytes:
    return s.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(p: Page) -> bytes:
    w, h = p.size
    out = []
    if p.scan:
        out.append(f"q {w:.2f} 0 0 {h:.2f} 0 0 cm /Im1 Do Q".encode())
    for x0, y0, x1, y1 in p.rules:
        out.append(f"0.5 w {x0:.2f} {h - y0:.2f} m {x1:.2f} {h - y1:.2f} l S".encode())
    for t in p.texts:
        out.append(b"BT /F1 %.2f Tf %.2f %.2f Td (" % (t.size, t.x, h - t.y) + _esc(t.text) + b") Tj ET")
    return b"\n".join(out)


def build(pages: list[Page], catalog_extra: bytes = b"", trailer_extra: bytes = b"",
          extra_objects: list[bytes] | None = None, page_count: int | None = None) -> bytes:
    """A PDF of `pages`. `catalog_extra` goes into the catalog dict, `extra_objects` are numbered after the
    pages' objects (refer to them as `N 0 R` with N from `first_extra(pages)`), `page_count` overrides
    /Count (a lying page tree)."""
    objs: list[bytes] = []  # object i+1
    objs.append(b"")  # 1 catalog, filled below
    objs.append(b"")  # 2 pages
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")  # 3
    kids = []
    for p in pages:
        stream = zlib.compress(_content(p))
        objs.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_no = len(objs)
        xobj = b""
        if p.scan:
            sw, sh, px = p.scan
            data = zlib.compress(px)
            objs.append(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (sw, sh, len(data))
                        + data + b"\nendstream")
            xobj = b" /XObject << /Im1 %d 0 R >>" % len(objs)
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Contents %d 0 R "
                    b"/Resources << /Font << /F1 3 0 R >>%s >> >>" % (p.size[0], p.size[1], content_no, xobj))
        kids.append(len(objs))
    objs.extend(extra_objects or [])
    objs[0] = b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b" >>"
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + \
        b"] /Count %d >>" % (len(kids) if page_count is None else page_count)
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R " % (len(objs) + 1) + trailer_extra
    out += b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def first_extra(pages: list[Page]) -> int:
    """The object number of the first of `build`'s `extra_objects`."""
    return 3 + sum(2 + (p.scan is not None) for p in pages) + 1


# --- pages with a known reading order -------------------------------------------------------------


def two_column_page(title: str, left: list[str], right: list[str], size: float = 10.0) -> Page:
    """A title across the page, then two columns of lines (read: title, left column, right column)."""
    texts = [Text(72, 72, 18, title)]
    y = 110.0
    for i, line in enumerate(left):
        texts.append(Text(72, y + i * size * 1.4, size, line))
    for i, line in enumerate(right):
        texts.append(Text(320, y + i * size * 1.4, size, line))
    return Page(texts)


def table_page(title: str, header: list[str], rows: list[list[str]], size: float = 10.0) -> Page:
    texts = [Text(72, 72, 16, title)]
    xs = [72 + 130 * i for i in range(len(header))]
    for r, cells in enumerate([header, *rows]):
        y = 110 + r * size * 1.8
        texts.extend(Text(x, y, size, c) for x, c in zip(xs, cells))
    rules = [(72, 110 - size - 2 + r * size * 1.8, 72 + 130 * len(header), 110 - size - 2 + r * size * 1.8)
             for r in range(len(rows) + 2)]
    return Page(texts, rules=rules)


def prose_page(title: str, lines: list[str], size: float = 12.0) -> Page:
    return Page([Text(72, 72, 20, title)] + [Text(72, 110 + i * size * 1.5, size, s) for i, s in enumerate(lines)])


def scan_page(seed: str = "scan") -> Page:
    """An image-only page (noise with dark bars where text would be): no text layer."""
    w, h = 153, 198
    rnd = hashlib.sha256(seed.encode()).digest()
    px = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            dark = 20 <= y % 14 < 24 and 18 <= x < 135 - (y // 14 * 7) % 40
            px[y * w + x] = 40 if dark else 235 + rnd[(x + y) % 32] % 20
    return Page(scan=(w, h, bytes(px)))


# --- hostile variants ---------------------------------------------------------------------------


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def encrypted(pages: list[Page], user_password: bytes = b"secret", owner_password: bytes = b"owner") -> bytes:
    """Standard security handler R2 (RC4 40-bit) with a user password: a reader must ask for it.

    Only the password check is real (O and U entries): the content is not encrypted, which no reader
    sees, since it stops at the password.
    """
    file_id = hashlib.md5(b"quarry-encrypted").digest()
    okey = hashlib.md5((owner_password + _PAD)[:32]).digest()[:5]
    o = _rc4(okey, (user_password + _PAD)[:32])
    p = -44
    key = hashlib.md5((user_password + _PAD)[:32] + o + p.to_bytes(4, "little", signed=True) + file_id).digest()[:5]
    u = _rc4(key, _PAD)
    enc_no = first_extra(pages)
    enc = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (o.hex().encode(), u.hex().encode(), p)
    return build(pages, extra_objects=[enc],
                 trailer_extra=b"/Encrypt %d 0 R /ID [<%s> <%s>]" % (enc_no, file_id.hex().encode(),
                                                                     file_id.hex().encode()))


def with_javascript(pages: list[Page]) -> bytes:
    n = first_extra(pages)
    js = b"<< /S /JavaScript /JS (app.alert\\('quarry'\\); while\\(true\\){}) >>"
    names = b"<< /Names [(boot) %d 0 R] >>" % n
    return build(pages, catalog_extra=b"/Names << /JavaScript %d 0 R >> /OpenAction %d 0 R" % (n + 1, n),
                 extra_objects=[js, names])


def with_attachment(pages: list[Page], payload: bytes = b"#!/bin/sh\necho never\n") -> bytes:
    n = first_extra(pages)
    stream = b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(payload) + payload + b"\nendstream"
    spec = b"<< /Type /Filespec /F (run.sh) /UF (run.sh) /EF << /F %d 0 R >> >>" % n
    names = b"<< /Names [(run.sh) %d 0 R] >>" % (n + 1)
    return build(pages, catalog_extra=b"/Names << /EmbeddedFiles %d 0 R >>" % (n + 2),
                 extra_objects=[stream, spec, names])


def deep_nesting(pages: list[Page], depth: int = 100_000) -> bytes:
    """An object of `depth` nested arrays, referenced from the catalog."""
    n = first_extra(pages)
    return build(pages, catalog_extra=b"/Deep %d 0 R" % n, extra_objects=[b"[" * depth + b"]" * depth])


def many_pages(n: int, text: str = "page") -> bytes:
    """`n` distinct one-line pages (sharing the font): a long document."""
    return build([Page([Text(72, 72, 12, f"{text} {i + 1}")], size=(200, 100)) for i in range(n)])


def huge_page(side: float = 5_000_000.0) -> bytes:
    return build([Page([Text(72, 72, 12, "a page millions of points wide")], size=(side, side))])


def lying_page_count(count: int = 5_000_000) -> bytes:
    """One page under a page tree that claims `count`."""
    return build([prose_page("One page", ["the tree says millions"])], page_count=count)
