"""The svg demo: shipped icons and hostile SVG files, plus two generated ones."""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

from quarry.dags.demos import DemoInput

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data" / "svg"


def _huge_path_svg(segments: int = 12_000) -> str:
    d = "M0 0" + "".join(f"L{i % 97}.{i % 10} {(i * 7) % 89}.5" for i in range(segments))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}" stroke="black"/>'
            "</svg>")


def _gzip_bomb(inflated: int = 16 * 1024 * 1024) -> bytes:
    """A `.svgz` that inflates to `inflated` bytes (4x the default cap; ~16 KiB compressed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><!--')
        chunk = b" " * (1 << 20)
        for _ in range(inflated >> 20):
            gz.write(chunk)
        gz.write(b"--></svg>")
    return buf.getvalue()


def build(folder: Path) -> DemoInput:
    """Write the svg demo input into `folder`: shipped icons and hostile files plus two generated ones.

    Shows: clean pairs (with tiers), a script-and-handler SVG cleaned into a
    pair, a duplicate differing only in ids/whitespace/attribute order
    (dedup/exact_duplicate), an entity bomb and an XXE (prepare/unsafe_svg), a
    `<use>` bomb (unsafe_svg), a filter bomb that would render for minutes
    (render/render_error once render.timeout_s passes), malformed XML (invalid_svg), an empty drawing
    and an SVG whose only content was a remote image (render/blank_render), a
    huge path (too_long), a gzip bomb (too_large) and Latin-1 bytes (a clean
    pair: the encoding is declared).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(DEMO_DATA.iterdir()):
        if f.suffix in (".svg", ".svgz"):
            shutil.copyfile(f, folder / f.name)
    (folder / "huge-path.svg").write_text(_huge_path_svg())
    (folder / "gzip-bomb.svgz").write_bytes(_gzip_bomb())
    return DemoInput([str(folder)], ["render.size=256", "render.timeout_s=2"])
