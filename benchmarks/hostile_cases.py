"""The hostile-input campaign's cases: one builder per kind of hostile or broken input, and the harness
that runs a kind end to end through its DAG and measures what the campaign reports.

Used by `benchmarks/hostile_campaign.py` (the table in the README) and `tests/test_hostile.py`
(the same cases as assertions). Plain Python, no pytest.

Each `Case` builds its input in a fresh sandbox (`Sandbox`: `in/`, `out/`, `tmp/`, `home/`, `cwd/`
under one root), optionally with loopback HTTP servers that count every connection they accept;
`run_case` runs it through `run_dag` with TMPDIR, HOME and the working directory pointed into the
sandbox and reports:

- outcome: the reject stage/reason counts and kept rows, or the one-line error of a usage mistake;
- seconds: wall time of `resolve_config` + `run_dag`;
- peak MB: growth of this process's resident-set high-water mark (`ru_maxrss`, RUSAGE_SELF) over
  its value just before the run (exact, kernel-kept; in a process that ran something bigger before,
  it understates, which is why the campaign script runs each kind in a fresh process after one benign
  warm-up run of the same DAG); `child_mb` is the same growth for RUSAGE_CHILDREN, the largest
  descendant reaped (Chromium, the resvg renderer, the SymPy worker);
- leaked bytes: bytes of files created or changed anywhere in the sandbox outside `out/` (inputs,
  TMPDIR leftovers, HOME, the working directory), plus files at the paths a case names as escape
  targets (tar path traversal);
- forbidden requests: connections accepted by the servers a case marks forbidden;
- balanced: the manifest's own balance (`inputs == kept + rejected` for one-to-one DAGs; gui's
  `extra.pages.balanced`, svg's `extra.pairs_balanced`; per-stage counts for ocr_search and imagemining).
"""

from __future__ import annotations

import base64
import gc
import gzip
import io
import json
import os
import resource
import struct
import tarfile
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

GOOD_CAPTION = "a photo of a red brick wall texture in the afternoon light"
MB = 1024 * 1024

# --- loopback servers -------------------------------------------------------------------------------


class LoopbackServer:
    """An HTTP server on a loopback address answering from `routes` (path -> (status, type, body, headers));
    `connections` counts every TCP connection it accepted, `hits` the request paths."""

    def __init__(self, name: str, forbidden: bool, host: str = "127.0.0.1"):
        self.name, self.forbidden = name, forbidden
        self.routes: dict[str, tuple[int, str, bytes, dict]] = {}
        self.hits: list[str] = []
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                status, ctype, body, headers = server.routes.get(self.path.split("?")[0],
                                                                 (404, "text/plain", b"missing", {}))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_POST = do_HEAD = do_PUT = do_OPTIONS = do_GET

        class Counting(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request, client_address):
                server.connections += 1
                super().process_request(request, client_address)

        self.httpd = Counting((host, 0), Handler)
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def html(self, path: str, body: str | bytes, status: int = 200, headers: Optional[dict] = None) -> str:
        self.routes[path] = (status, "text/html", body if isinstance(body, bytes) else body.encode(), headers or {})
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the sandbox a case runs in ---------------------------------------------------------------------


class Sandbox:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.inp, self.out, self.tmp, self.home, self.cwd = (self.root / n for n in ("in", "out", "tmp", "home", "cwd"))
        for d in (self.inp, self.tmp, self.home, self.cwd):
            d.mkdir(parents=True, exist_ok=True)
        self.servers: list[LoopbackServer] = []
        self.escapes: list[Path] = []  # paths that must not exist after the run (traversal targets)
        self._patches: list[tuple[Any, str, Any]] = []

    def server(self, name: str, forbidden: bool = True, host: str = "127.0.0.1") -> LoopbackServer:
        s = LoopbackServer(name, forbidden, host)
        self.servers.append(s)
        return s

    def patch(self, obj: Any, attr: str, value: Any) -> None:
        self._patches.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def close(self) -> None:
        for obj, attr, old in reversed(self._patches):
            setattr(obj, attr, old)
        self._patches.clear()
        for s in self.servers:
            s.close()

    def forbidden_requests(self) -> int:
        return sum(s.connections for s in self.servers if s.forbidden)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def leaked(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple[int, list[str]]:
    """Bytes (and paths) of files new or changed between two snapshots (an emptied new file counts 1 byte)."""
    paths = sorted(p for p, v in after.items() if before.get(p) != v)
    return sum(max(after[p][0], 1) for p in paths), paths


# --- a case, what it builds, what it must give ------------------------------------------------------


@dataclass
class Built:
    patterns: list[str]
    sets: list[str] = field(default_factory=list)
    source: Optional[str] = "hostile"
    output: Optional[Path] = None  # default: the sandbox's out/
    check: Optional[Callable[[Path, Any], None]] = None  # (output dir, manifest) -> raises AssertionError


@dataclass(frozen=True)
class Case:
    kind: str
    dag: str
    what: str
    build: Callable[[Sandbox], Built]
    rejects: dict[str, int] = field(default_factory=dict)  # "stage/reason" -> count, exactly the run's rejects ...
    variable: tuple[str, ...] = ()  # ... but for these "stage/reason" keys: any count >= 1 (what the data decides)
    kept: Optional[int] = None  # rows written (None: any number >= min_kept)
    min_kept: int = 0
    error: Optional[tuple[str, str]] = None  # (exception class name, text in its message): a usage mistake
    slow: bool = False
    max_s: float = 90.0  # the test's time bound (a loaded 2-core CI machine)
    max_mb: float = 1500.0  # the test's bound on peak MB growth
    known: str = ""  # a finding left open (the file is not this campaign's to change): the test expects it to fail


@dataclass
class Result:
    kind: str
    dag: str
    outcome: str
    seconds: float
    peak_mb: float
    child_mb: float
    leaked_bytes: int
    leaked_paths: list[str]
    forbidden: int
    balanced: Optional[bool]
    rejected: dict[str, int] = field(default_factory=dict)
    kept: Optional[int] = None
    error: Optional[str] = None  # the expected one-line error, "Type: message"
    crash: Optional[str] = None  # an exception that should not have escaped (traceback)
    check_error: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def problems(self, case: Case) -> list[str]:
        """Everything that makes this result fail the campaign (empty: the case passed)."""
        out = []
        if self.crash:
            out.append(f"crash: {self.crash.strip().splitlines()[-1]}")
        if case.error is not None:
            if self.error is None:
                out.append(f"expected {case.error[0]}, got {self.outcome}")
            elif not self.error.startswith(case.error[0] + ":") or case.error[1] not in self.error:
                out.append(f"expected {case.error[0]} with {case.error[1]!r}, got {self.error!r}")
            elif "\n" in self.error:
                out.append("the error is more than one line")
        elif not self.crash:
            if self.error:
                out.append(f"unexpected error {self.error}")
            fixed = {k: n for k, n in self.rejected.items() if k not in case.variable}
            if fixed != case.rejects or not all(self.rejected.get(k, 0) >= 1 for k in case.variable):
                out.append(f"rejects {self.rejected} != expected {case.rejects} (+ {list(case.variable)})")
            if case.kept is not None and self.kept != case.kept:
                out.append(f"kept {self.kept} != expected {case.kept}")
            if (self.kept or 0) < case.min_kept:
                out.append(f"kept {self.kept} < {case.min_kept}")
            if self.balanced is not True:
                out.append(f"manifest balanced: {self.balanced}")
        if self.check_error:
            out.append(f"check: {self.check_error}")
        if self.leaked_bytes:
            out.append(f"leaked {self.leaked_bytes} bytes: {self.leaked_paths[:5]}")
        if self.forbidden:
            out.append(f"{self.forbidden} forbidden request(s)")
        return out


def stage_balance(dag: str, m: Any) -> Optional[bool]:
    """Whether the manifest accounts for every input (see the module docstring)."""
    if m is None:
        return None
    if m.one_to_one:
        return m.balanced
    if dag == "gui":
        return bool(m.extra.get("pages", {}).get("balanced"))
    if dag == "svg":
        return bool(m.extra.get("pairs_balanced"))
    rej = {stage: sum(r.values()) for stage, r in m.rejected.items()}
    st = {k: (v.inputs, v.outputs) for k, v in m.stages.items()}
    read = m.inputs - rej.get("read", 0)
    dc = rej.get("decontam", 0)
    if dag == "ocr_search":
        decode, ocr, tasks = (st.get(s, (0, 0)) for s in ("decode", "ocr", "tasks"))
        return (decode[0] == read and decode[0] - decode[1] == rej.get("decode", 0)
                and ocr[0] == decode[1] and ocr[0] - ocr[1] == rej.get("ocr", 0)
                and tasks[0] - tasks[1] == rej.get("verify", 0) and m.kept == ocr[1] + tasks[1] - dc)
    if dag == "imagemining":
        decode, link, discover = (st.get(s, (0, 0)) for s in ("decode", "link", "discover"))
        filt, dedup = st.get("filter", (0, 0)), st.get("dedup", (0, 0))
        return (decode[0] == read and decode[0] - decode[1] == rej.get("decode", 0)
                and link[0] == decode[1] and link[0] - link[1] == rej.get("link", 0)
                and discover[0] == link[1] and filt[0] - filt[1] == rej.get("filter", 0)
                and dedup[0] == filt[1] and dedup[0] - dedup[1] == rej.get("dedup", 0)
                and m.kept == dedup[1] - dc)
    return None


def describe(rejected: dict[str, int], kept: Optional[int], m: Any) -> str:
    parts = [k + (f" x{n}" if n > 1 else "") for k, n in sorted(rejected.items())]
    if kept:
        parts.append(f"{kept} row{'s' if kept != 1 else ''} kept")
    if m is not None and m.inputs == 0:
        parts.append("0 inputs")
    blocked = (m.extra.get("requests_blocked") if m is not None else 0) or 0
    if blocked:
        parts.append(f"{blocked} request{'s' if blocked != 1 else ''} blocked")
    return "; ".join(parts) or "nothing"


def run_case(case: Case, root: Path, beam_args: Optional[list[str]] = None) -> Result:
    """Build `case` under `root` (a fresh folder), run it through its DAG, measure, clean up."""
    from quarry.dags.registry import DAGS
    from quarry.dags.runner import resolve_config, run_dag

    box = Sandbox(root)
    old_env = {k: os.environ.get(k) for k in ("TMPDIR", "HOME", "QUARRY_PROGRESS")}
    old_tempdir, old_cwd = tempfile.tempdir, os.getcwd()
    m, crash, error, check_error = None, None, None, None
    try:
        built = case.build(box)
        output = built.output or box.out
        gc.collect()
        before = _snapshot(box.root, box.out)
        os.environ.update(TMPDIR=str(box.tmp), HOME=str(box.home), QUARRY_PROGRESS="0")
        tempfile.tempdir = str(box.tmp)
        os.chdir(box.cwd)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        try:
            spec = DAGS[case.dag]
            cfg = resolve_config(spec, None, built.sets, built.source)
            m = run_dag(spec, built.patterns, str(output), cfg, beam_args=beam_args)
        except Exception as e:  # noqa: BLE001 - the campaign reports whatever escapes
            usage = {"ConfigError", "InputError", "UsageError"} & {c.__name__ for c in type(e).__mro__}
            if case.error is not None and usage:
                error = f"{type(e).__name__}: {e}"
            else:
                crash = traceback.format_exc()
        seconds = time.perf_counter() - t0
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        child = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss - child0) / 1024
    finally:
        os.chdir(old_cwd)
        tempfile.tempdir = old_tempdir
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        time.sleep(0.2)  # requests a browser sent just before it closed reach the servers
        box.close()
    if m is not None and built.check is not None:
        try:
            built.check(output, m)
        except AssertionError as e:
            check_error = str(e) or "assertion failed"
    leak_bytes, leak_paths = leaked(before, _snapshot(box.root, box.out))
    for p in box.escapes:
        if os.path.lexists(p):
            leak_paths.append(str(p))
            leak_bytes += max(os.lstat(p).st_size, 1)
    rejected = {f"{s}/{r}": n for s, rs in (m.rejected if m is not None else {}).items() for r, n in rs.items()}
    kept = m.kept if m is not None else None
    if crash:
        outcome = "CRASH " + crash.strip().splitlines()[-1][:160]
    elif error:
        outcome = error.splitlines()[0]
    else:
        outcome = describe(rejected, kept, m)
    outcome = outcome.replace(str(box.root), "<sandbox>")
    return Result(case.kind, case.dag, outcome, round(seconds, 2), round(max(peak, 0.0), 1), round(max(child, 0.0), 1),
                  leak_bytes, leak_paths, box.forbidden_requests(), stage_balance(case.dag, m), rejected, kept,
                  error, crash, check_error)


# --- input builders ---------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth gradient with noise: passes every caption heuristic (size, aspect, not solid)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // width, yy * 255 // height, (xx * 3 + yy * 5 + seed * 40) % 256], -1)
    arr = arr + rng.integers(0, 30, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, **params) -> bytes:
    return encode(im.convert("RGB") if im.mode not in ("RGB", "L", "CMYK") else im, "JPEG", quality=90, **params)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 20_000) -> bytes:
    """A genuine 1-bit side x side PNG of zeros: 400 Mpx in ~50 KB of zlib."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    """A real 8x8 GIF whose logical screen claims 65535 x 65535 (4.3 Gpx)."""
    data = bytearray(encode(Image.new("P", (8, 8), 1), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def gif_frame_bomb() -> bytes:
    """A 320x240 two-frame GIF whose second frame's image descriptor claims 65535 x 65535 (4.3 Gpx)."""
    frames = [photo(320, 240, s) for s in (15, 16)]
    data = bytearray(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50))
    pos = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)  # header, screen, global colour table
    images = 0
    while data[pos] != 0x3B:  # walk the blocks to the second image descriptor
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # 0x2C image descriptor
            images += 1
            if images == 2:
                data[pos + 5:pos + 9] = struct.pack("<HH", 65535, 65535)
                return bytes(data)
            packed = data[pos + 9]
            pos += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1  # + local table + LZW code size
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    raise AssertionError("no second frame")


def animation(frames: int = 1000, side: int = 240) -> bytes:
    rng = np.random.default_rng(7)
    base = photo(side, side, 3).convert("P", palette=Image.ADAPTIVE, colors=64)
    ims = []
    for i in range(frames):
        im = base.copy()
        x, y = int(rng.integers(0, side - 20)), int(rng.integers(0, side - 20))
        im.paste(i % 64, (x, y, x + 20, y + 20))
        ims.append(im)
    return encode(ims[0], "GIF", save_all=True, append_images=ims[1:], duration=20, loop=0)


def png16() -> bytes:
    yy, xx = np.mgrid[0:240, 0:320]
    im = Image.fromarray(((xx * 200 + yy * 70) % 65536).astype(np.uint16))
    assert im.mode == "I;16"
    return encode(im, "PNG")


def palette_alpha_png() -> bytes:
    im = photo(320, 240, 5).convert("P", palette=Image.ADAPTIVE, colors=32)
    return encode(im, "PNG", transparency=0)


def exif_jpeg(orientation: int = 6, width: int = 400, height: int = 260) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(photo(width, height, 9), exif=exif)


def damaged_exif_jpeg() -> bytes:
    """Orientation 6 plus an ASCII Make tag renumbered as RATIONAL (Pillow's exif_transpose raises on it)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    data = jpeg(photo(400, 260, 11), exif=exif)
    marker = struct.pack(">HH", 0x010F, 2)
    return data.replace(marker, struct.pack(">HH", 0x011A, 2), 1)


def add_member(tar: tarfile.TarFile, name: str, data: bytes, **info_fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in info_fields.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def image_pair(folder: Path, stem: str, data: bytes, caption: str | bytes = GOOD_CAPTION, ext: str = "jpg") -> None:
    (folder / f"{stem}.{ext}").write_bytes(data)
    (folder / f"{stem}.txt").write_bytes(caption if isinstance(caption, bytes) else caption.encode())


def with_control(box: Sandbox) -> None:
    """One good image-caption pair beside the hostile one: it must still be kept."""
    image_pair(box.inp, "control", jpeg(photo(320, 240, 1)), "a photo of a sunny beach with blue water and sand")


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def gzip_bomb(path: Path, head: bytes, filler: bytes, total: int, tail: bytes = b"") -> None:
    """A gzip file inflating to `head` + `filler` repeated to `total` bytes + `tail`: gzip members one after
    the other (RFC 1952; every reader inflates them as one stream), the 16 MiB filler member compressed once."""
    block = filler * (16 * MB // len(filler))
    member = gzip.compress(block, compresslevel=9, mtime=0)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(head, mtime=0))
        for _ in range(total // len(block)):
            fh.write(member)
        fh.write(gzip.compress(tail, mtime=0))


def demo_file(*parts: str) -> bytes:
    return resources.files("quarry.dags").joinpath("demo_data", *parts).read_bytes()


# --- caption --------------------------------------------------------------------------------------

CAPTION_SETS = ["clip.model=quarry-tiny", "clip.pretrained=none", "clip.threshold=-1.0"]


def caption_case(kind: str, what: str, make: Callable[[Sandbox], Optional[Built]], control: bool = True,
                 **expect) -> Case:
    def build(box: Sandbox) -> Built:
        if control:
            with_control(box)
        built = make(box)
        return built or Built([str(box.inp)], list(CAPTION_SETS))

    if control and "kept" not in expect and "error" not in expect:
        expect["kept"] = 1
    return Case(kind, "caption", what, build, **expect)


def _file(name: str, data: Callable[[], bytes], caption: str | bytes = GOOD_CAPTION):
    def make(box: Sandbox) -> None:
        stem, ext = name.rsplit(".", 1)
        image_pair(box.inp, stem, data(), caption, ext)
    return make


def _rotated_check(out: Path, m: Any) -> None:
    import duckdb

    sizes = duckdb.connect().sql(f"SELECT origin.key, width, height FROM read_parquet('{out}/data/**/*.parquet')"
                                 ).fetchall()
    got = {k: (w, h) for k, w, h in sizes}
    assert got.get("rotated.jpg") == (260, 400), f"EXIF orientation 6 not applied: {got}"


def _tar_traversal(box: Sandbox) -> None:
    with tarfile.open(box.inp / "traversal.tar", "w") as tar:
        for i, name in enumerate(("../../escaped", "/tmp/quarry-hostile-escaped", "a/../../../escaped-too")):
            add_member(tar, name + ".jpg", jpeg(photo(320, 240, 21 + 17 * i).rotate(90 * i, expand=True)))
            add_member(tar, name + ".txt", GOOD_CAPTION.encode())
    box.escapes += [box.root / "escaped.jpg", box.root.parent / "escaped.jpg", box.root / "escaped-too.jpg",
                    box.root.parent / "escaped-too.jpg", Path("/tmp/quarry-hostile-escaped.jpg")]


def _tar_links(box: Sandbox) -> None:
    img = jpeg(photo(320, 240, 22))
    (box.root / "outside.jpg").write_bytes(img)
    with tarfile.open(box.inp / "links.tar", "w") as tar:
        add_member(tar, "sym.jpg", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tar, "sym.txt", GOOD_CAPTION.encode())
        add_member(tar, "up.jpg", b"", type=tarfile.SYMTYPE, linkname=str(box.root / "outside.jpg"))
        add_member(tar, "up.txt", GOOD_CAPTION.encode())
        add_member(tar, "hard.jpg", b"", type=tarfile.LNKTYPE, linkname="../../outside.jpg")
        add_member(tar, "hard.txt", GOOD_CAPTION.encode())
        add_member(tar, "dev.jpg", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add_member(tar, "dev.txt", GOOD_CAPTION.encode())


def _tar_gz_bomb(box: Sandbox) -> None:
    """A .tar.gz whose one image member inflates to 1 GiB of zeros (1 MiB on disk)."""
    size = 1024 * MB
    info = tarfile.TarInfo("bomb.jpg")
    info.size = size
    cap = tarfile.TarInfo("bomb.txt")
    cap.size = len(GOOD_CAPTION)
    tail = cap.tobuf(format=tarfile.USTAR_FORMAT) + GOOD_CAPTION.encode().ljust(512, b"\0") + b"\0" * 1024
    gzip_bomb(box.inp / "bomb.tar.gz", info.tobuf(format=tarfile.USTAR_FORMAT), b"\0", size, tail)


def _jsonl_gz_bomb(box: Sandbox) -> None:
    """A .jsonl.gz inflating to one 1 GiB line (1 MiB on disk)."""
    gzip_bomb(box.inp / "bomb.jsonl.gz", b'{"image": "control.jpg", "caption": "', b"a", 1024 * MB, b'"}\n')


def _jsonl_long_line(box: Sandbox) -> Built:
    with open(box.inp / "long.jsonl", "wb") as fh:
        fh.write(json.dumps({"image": "control.jpg", "caption": "a photo of a cat on a red sofa"}).encode() + b"\n")
        fh.write(b'{"image": "control.jpg", "caption": "')
        chunk = b"word " * (MB // 5)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"}\n')
    return Built([str(box.inp / "long.jsonl")], list(CAPTION_SETS))


def _jsonl_lines(lines: list[bytes]):
    def make(box: Sandbox) -> Built:
        (box.inp / "records.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        return Built([str(box.inp / "records.jsonl")], list(CAPTION_SETS))
    return make


def _truncated_jsonl_gz(box: Sandbox) -> Built:
    for i in range(3):
        (box.inp / f"img{i}.jpg").write_bytes(jpeg(photo(320, 240, 60 + 11 * i).rotate(90 * i, expand=True)))
    lines = b"".join(json.dumps({"image": f"img{i}.jpg", "caption": f"a photo of a cat number {i} on a mat"}).encode()
                     + b"\n" for i in range(3))
    tail = b'{"image": "img0.jpg", "caption": "' + base64.b64encode(os.urandom(150_000)) + b'"}\n'  # incompressible
    data = gzip.compress(lines + tail, mtime=0)
    (box.inp / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    return Built([str(box.inp / "cut.jsonl.gz")], list(CAPTION_SETS))


def _truncated_tar_gz(box: Sandbox) -> Built:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(6):
            add_member(tar, f"s{i}.jpg", jpeg(photo(320, 240, 50 + 7 * i).rotate(90 * (i % 4), expand=True)))
            add_member(tar, f"s{i}.txt", f"a photo of a mountain lake number {i} at dawn".encode())
    data = gzip.compress(buf.getvalue(), mtime=0)
    (box.inp / "cut.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    return Built([str(box.inp / "cut.tar.gz")], list(CAPTION_SETS))


def _jsonl_urls(box: Sandbox) -> Built:
    v = box.server("victim").base
    urls = ["file:///etc/hostname", f"{v}/x.jpg", "s3://bucket/x.jpg", "gs://bucket/x.jpg", "azfs://acct/c/x.jpg",
            f"hdfs://{v[7:]}/x.jpg"]
    (box.inp / "urls.jsonl").write_text("".join(json.dumps({"image": u, "caption": GOOD_CAPTION}) + "\n" for u in urls))
    return Built([str(box.inp / "urls.jsonl")], list(CAPTION_SETS))


def _fifo_and_devices(box: Sandbox) -> Built:
    os.mkfifo(box.inp / "pipe.jpg")
    (box.inp / "pipe.txt").write_text(GOOD_CAPTION)
    (box.inp / "dev.jsonl").write_text("".join(json.dumps({"image": d, "caption": GOOD_CAPTION}) + "\n"
                                               for d in ("/dev/zero", "/dev/stdin", "/dev/urandom")))
    return Built([str(box.inp)], list(CAPTION_SETS))


def _parquet(table_fn: Callable[[], Any]):
    def make(box: Sandbox) -> Built:
        import pyarrow.parquet as pq

        pq.write_table(table_fn(), box.inp / "rows.parquet")
        return Built([str(box.inp / "rows.parquet")], list(CAPTION_SETS))
    return make


def _wrong_types_table():
    import pyarrow as pa

    return pa.table({"image": pa.array([1, 2], pa.int64()), "caption": pa.array([3.5, float("nan")])})


def _nulls_table():
    import pyarrow as pa

    good = jpeg(photo(320, 240, 30))
    return pa.table({"image": pa.array([None, good, good, b""], pa.binary()),
                     "caption": pa.array([GOOD_CAPTION, None, "a photo of a green field under a grey sky", GOOD_CAPTION])})


def _nan_table():
    import pyarrow as pa

    imgs = [jpeg(photo(320, 240, 40 + i)) for i in range(3)]
    return pa.table({"image": imgs, "caption": ["a photo of a dog running on the beach"] * 3,
                     "score": pa.array([float("nan"), float("inf"), float("-inf")]),
                     "source": pa.array([None, "web", ""])})


def _output_is_file(box: Sandbox) -> Built:
    (box.root / "not-a-dir").write_bytes(b"a file where the output directory should be\n")
    return Built([str(box.inp)], list(CAPTION_SETS), output=box.root / "not-a-dir")


def _empty_tar(box: Sandbox) -> Built:
    with tarfile.open(box.inp / "empty.tar", "w"):
        pass
    (box.inp / "empty.jsonl").write_bytes(b"")
    return Built([str(box.inp)], list(CAPTION_SETS))


CAPTION_CASES = [
    caption_case("truncated image", "a JPEG cut in half", _file("cut.jpg", lambda: jpeg(photo())[:6000]),
                 rejects={"decode/corrupt_image": 1}),
    caption_case("zero-byte image", "a 0-byte .jpg with a caption", _file("empty.jpg", lambda: b""),
                 rejects={"decode/corrupt_image": 1}),
    caption_case("PNG bomb", "a genuine 1-bit 20000x20000 PNG (400 Mpx in 50 KB)", _file("bomb.png", png_bomb),
                 rejects={"decode/image_too_large": 1}, max_mb=700),
    caption_case("GIF bomb", "an 8x8 GIF whose logical screen says 65535x65535", _file("bomb.gif", gif_bomb),
                 rejects={"decode/image_too_large": 1}, max_mb=700),
    caption_case("GIF frame bomb", "a 320x240 GIF whose second frame claims 65535x65535 (only the first is decoded)",
                 _file("framebomb.gif", gif_frame_bomb), kept=2, max_mb=700),
    caption_case("1,000-frame animation", "a 240x240 GIF of 1,000 frames (first frame kept)",
                 _file("anim.gif", animation), kept=2, slow=True, max_mb=600),
    caption_case("CMYK JPEG", "an Adobe-style CMYK JPEG",
                 _file("cmyk.jpg", lambda: encode(photo(320, 240, 2).convert("CMYK"), "JPEG", quality=90)), kept=2),
    caption_case("16-bit PNG", "a 16-bit greyscale PNG (I;16)", _file("deep.png", png16), kept=2),
    caption_case("palette + alpha", "a palette PNG with a transparent index", _file("pal.png", palette_alpha_png),
                 kept=2),
    caption_case("EXIF rotation", "orientation 6 on a 400x260 JPEG: stored landscape, kept upright as 260x400",
                 lambda box: (image_pair(box.inp, "rotated", exif_jpeg()),
                              Built([str(box.inp)], list(CAPTION_SETS), check=_rotated_check))[1], kept=2),
    caption_case("damaged EXIF", "orientation 6 plus a mistyped EXIF tag (Pillow's exif_transpose raises)",
                 _file("badexif.jpg", damaged_exif_jpeg), kept=2),
    caption_case("PNG named .jpg", "misleading extension: PNG bytes in a .jpg",
                 _file("really-png.jpg", lambda: encode(photo(320, 240, 3), "PNG")), kept=2),
    caption_case("HTML named .png", "misleading extension: an HTML page saved as .png",
                 _file("page.png", lambda: b"<html><body><script>alert(1)</script></body></html>"),
                 rejects={"decode/corrupt_image": 1}),
    caption_case("tar path traversal", "tar members named ../../escaped.jpg, /tmp/... and a/../../../ (read, never "
                 "extracted)", _tar_traversal, kept=4),
    caption_case("tar symlink members", "symlink to /etc/passwd, to a file outside, a hard link, a device node",
                 _tar_links, rejects={"read/missing_image": 4}),
    caption_case("tar.gz bomb", "a .tar.gz whose image member inflates to 1 GiB of zeros (1 MiB on disk)",
                 _tar_gz_bomb, rejects={"read/file_too_large": 1}, slow=True, max_s=120, max_mb=700),
    caption_case("gzip bomb JSONL line", "a .jsonl.gz inflating to a single 1 GiB line",
                 _jsonl_gz_bomb, rejects={"read/record_too_large": 1}, slow=True, max_s=120, max_mb=700),
    caption_case("100 MB JSONL line", "a 100 MB caption on one JSONL line", _jsonl_long_line,
                 rejects={"read/record_too_large": 1}, slow=True, max_s=120, max_mb=700),
    caption_case("truncated .jsonl.gz", "a gzipped JSONL cut off mid-stream", _truncated_jsonl_gz,
                 rejects={"read/unreadable_file": 1}, kept=3),
    caption_case("truncated .tar.gz", "a gzipped WebDataset tar cut off mid-stream", _truncated_tar_gz,
                 rejects={"read/unreadable_tar": 1}, kept=None, min_kept=2),
    caption_case("misleading .gz", "plain JSONL named .jsonl.gz",
                 lambda box: ((box.inp / "plain.jsonl.gz").write_text(json.dumps({"image": "control.jpg",
                                                                                  "caption": GOOD_CAPTION}) + "\n"),
                              Built([str(box.inp / "plain.jsonl.gz")], list(CAPTION_SETS)))[1],
                 rejects={"read/unreadable_file": 1}, kept=0),
    caption_case("JSONL image URLs", "image fields naming file://, http:// (a loopback server), s3://, gs://, "
                 "azfs://, hdfs:// (nothing fetched)", _jsonl_urls, rejects={"read/missing_image": 6}, kept=0),
    caption_case("FIFO and devices", "a FIFO named .jpg in the input folder, JSONL images /dev/zero, /dev/stdin, "
                 "/dev/urandom", _fifo_and_devices, rejects={"read/missing_image": 3}, max_s=60),
    caption_case("invalid UTF-8 caption", "a caption file of Latin-1 and stray bytes",
                 _file("latin.jpg", lambda: jpeg(photo(320, 240, 4)), b"caf\xe9 au lait \xff\xfe on a table"),
                 rejects={"read/caption_not_text": 1}),
    caption_case("invalid UTF-8 JSONL", "JSONL lines with raw \\xff bytes inside and outside strings",
                 _jsonl_lines([b'{"image": "control.jpg", "caption": "a photo of a cat \xff\xfe on a mat"}',
                               b'\xff\xfe{"image": "control.jpg"}']), rejects={"read/invalid_json": 1}),
    caption_case("100k-deep JSONL", "a JSONL line of 100,000 nested arrays, one of nested objects",
                 _jsonl_lines([deep_json().encode(), ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()]),
                 kept=0, rejects={"read/invalid_json": 2}),
    caption_case("100k-deep sidecar JSON", "an image whose stem.json is 100,000 nested objects",
                 lambda box: (image_pair(box.inp, "meta", jpeg(photo(320, 240, 6))),
                              (box.inp / "meta.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000))[0],
                 rejects={"read/invalid_metadata": 1}),
    caption_case("Parquet wrong types", "image column of int64, caption column of floats with NaN",
                 _parquet(_wrong_types_table), control=False, kept=0, rejects={"read/missing_image": 2}),
    caption_case("Parquet nulls", "null and empty image cells, a null caption",
                 _parquet(_nulls_table), control=False, kept=1,
                 rejects={"read/missing_image": 2, "read/missing_caption": 1}),
    caption_case("NaN/inf columns", "a Parquet with NaN, inf and -inf in an extra column, null and empty source",
                 _parquet(_nan_table), control=False, kept=None, min_kept=1),
    caption_case("homoglyph caption", "a caption in Cyrillic look-alike letters",
                 _file("homoglyph.jpg", lambda: jpeg(photo(320, 240, 12)),
                       "\u0430 \u0440h\u043et\u043e \u043ef \u0430 r\u0435d br\u0456\u0441k w\u0430ll t\u0435xtur\u0435"),
                 rejects={"balance/no_concept_match": 1}),
    caption_case("RTL caption", "Arabic text wrapped in RLO/PDF bidi overrides",
                 _file("rtl.jpg", lambda: jpeg(photo(320, 240, 13)),
                       "\u202e\u0635\u0648\u0631\u0629 \u0642\u0637\u0629 \u0639\u0644\u0649 \u0627\u0644\u0633\u062c\u0627\u062f\u0629 "
                       "\u0627\u0644\u062d\u0645\u0631\u0627\u0621\u202c"), rejects={"balance/no_concept_match": 1}),
    caption_case("zero-width caption", "a caption of zero-width spaces, joiners and control characters",
                 _file("zw.jpg", lambda: jpeg(photo(320, 240, 14)), "\u200b\u200c\u200d\u2060\ufeff\x07\x1b[31m" * 8),
                 rejects={"heuristics/caption_not_text": 1}),
    caption_case("empty inputs", "an empty tar and an empty JSONL file", _empty_tar, control=False, kept=0),
    Case("empty folder", "caption", "an input folder with no files",
         lambda box: Built([str(box.inp)], list(CAPTION_SETS)), error=("InputError", "no files match")),
    Case("missing input", "caption", "an input path that does not exist",
         lambda box: Built([str(box.inp / "nope" / "*.tar")], list(CAPTION_SETS)),
         error=("InputError", "no files match")),
    Case("corrupt Parquet", "caption", "random bytes named .parquet",
         lambda box: ((box.inp / "rows.parquet").write_bytes(os.urandom(4096)),
                      Built([str(box.inp / "rows.parquet")], list(CAPTION_SETS)))[1],
         error=("InputError", "not a readable Parquet file")),
    caption_case("output path is a file", "--output names an existing file", _output_is_file,
                 error=("UsageError", "is not a directory")),
    caption_case("wrong config type", "--set decode.max_pixels=lots",
                 lambda box: Built([str(box.inp)], CAPTION_SETS + ["decode.max_pixels=lots"]),
                 error=("ConfigError", "decode.max_pixels")),
    caption_case("unknown config key", "--set clip.treshold=0.3 (typo)",
                 lambda box: Built([str(box.inp)], CAPTION_SETS + ["clip.treshold=0.3"]),
                 error=("ConfigError", "clip.treshold")),
]


# --- svg ----------------------------------------------------------------------------------------

SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 10 10"'
SVG_SETS = ["render.size=64", "render.timeout_s=3"]
CONTROL_SVG = f'<svg {SVG_NS}><rect x="1" y="1" width="4" height="8" fill="#c33"/><circle cx="7" cy="5" r="2"/></svg>'


def svg_case(kind: str, what: str, name: str, content: Callable[[Sandbox], bytes],
             check: Optional[Callable[[Path, Any], None]] = None, sets: tuple[str, ...] = (), **expect) -> Case:
    def build(box: Sandbox) -> Built:
        (box.inp / "control.svg").write_text(CONTROL_SVG)
        (box.inp / name).write_bytes(content(box))
        return Built([str(box.inp)], SVG_SETS + list(sets), check=check)

    expect.setdefault("kept", 2)  # the control pair: svg_to_image + image_to_svg
    return Case(kind, "svg", what, build, **expect)


def _no_local_file_in_output(out: Path, m: Any) -> None:
    lines = [ln for ln in Path("/etc/passwd").read_text().splitlines() if ln][:3] if Path("/etc/passwd").exists() else []
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert not any(ln.encode() in blob for ln in lines), "a line of /etc/passwd reached the output"


def _loopback_refs(box: Sandbox) -> bytes:
    v = box.server("victim").base
    return (f'<svg {SVG_NS}><image href="{v}/a.png" width="5" height="5"/><use xlink:href="{v}/b.svg#x"/>'
            f'<style>@import url({v}/c.css); rect {{ fill: url({v}/d.svg#g) }}</style>'
            f'<feImage href="{v}/e.png"/><a href="{v}/f"><path d="M5 1L9 9H5Z" fill="#a33"/></a>'
            f'<rect width="4" height="9" stroke="#000" style="background:url({v}/g.png)"/>'
            f'<script href="{v}/h.js"/></svg>').encode()


def _loopback_dtd(box: Sandbox) -> bytes:
    v = box.server("victim").base
    return (f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "{v}/e.dtd"><?xml-stylesheet href="{v}/s.css"?>'
            f'<svg {SVG_NS} xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{v}/inc.xml"/>'
            '<circle cx="3" cy="5" r="2"/><rect x="6" y="1" width="3" height="8" fill="#36c"/></svg>').encode()


def _svgz_bomb(box: Sandbox) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(f'<svg {SVG_NS}><!--'.encode())
        chunk = b" " * MB
        for _ in range(256):
            gz.write(chunk)
        gz.write(b"--></svg>")
    return buf.getvalue()


def _deep_svg(depth: int = 100_000) -> Callable[[Sandbox], bytes]:
    return lambda box: (f"<svg {SVG_NS}>" + "<g>" * depth + '<rect width="5" height="5"/>' + "</g>" * depth
                        + "</svg>").encode()


SVG_CASES = [
    svg_case("SVG entity bomb", "billion laughs: 10 levels of 10 entity references", "laughs.svg",
             lambda box: demo_file("svg", "billion-laughs.svg"), rejects={"prepare/unsafe_svg": 1}),
    svg_case("SVG XXE", "an external entity naming file:///etc/passwd", "xxe.svg",
             lambda box: demo_file("svg", "xxe-local-file.svg"), check=_no_local_file_in_output,
             rejects={"prepare/unsafe_svg": 1}),
    svg_case("SVG XXE to loopback", "an external entity naming a loopback server", "xxe-http.svg",
             lambda box: (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{box.server("victim").base}/f.txt">'
                          f']><svg {SVG_NS}><text>&x;</text></svg>').encode(), rejects={"prepare/unsafe_svg": 1}),
    svg_case("SVG external hrefs", "image, use, @import, url(), feImage, a, script hrefs to a loopback server",
             "refs.svg", _loopback_refs, kept=4),
    svg_case("SVG external DTD + XInclude", "DOCTYPE SYSTEM, xml-stylesheet and xi:include to a loopback server",
             "dtd.svg", _loopback_dtd, kept=4),
    svg_case("svgz bomb", "a .svgz inflating to 256 MiB (256 KiB on disk)", "bomb.svgz", _svgz_bomb,
             rejects={"prepare/too_large": 1}),
    svg_case("100k-deep SVG", "100,000 nested <g> elements", "deep.svg", _deep_svg(), rejects={"prepare/invalid_svg": 1}),
    svg_case("SVG use bomb", "<use> fan-out of 8^6 references", "use.svg", lambda box: demo_file("svg", "use-bomb.svg"),
             rejects={"prepare/unsafe_svg": 1}),
    svg_case("SVG filter bomb", "a few KB of filters resvg spends minutes on (killed at render.timeout_s)", "filter.svg",
             lambda box: demo_file("svg", "filter-bomb.svg"), sets=("render.size=256", "render.timeout_s=2"),
             rejects={"render/render_error": 1}, slow=True),
]


# --- gui ----------------------------------------------------------------------------------------

GUI_SETS = ["render.allow_private_inputs=true", "render.timeout_s=4", "render.extract_timeout_s=4",
            "render.settle=load", "render.pages_in_flight=2"]


def gui_case(kind: str, what: str, page: Callable[[Sandbox, LoopbackServer], str], sets: tuple[str, ...] = (),
             **expect) -> Case:
    """One page on a loopback site (allowed: allow_private_inputs) plus, where the page names one, forbidden servers."""
    def build(box: Sandbox) -> Built:
        site = box.server("site", forbidden=False)
        url = page(box, site)
        (box.inp / "urls.txt").write_text(url + "\n")
        return Built([str(box.inp / "urls.txt")], GUI_SETS + list(sets))

    return Case(kind, "gui", what, build, slow=True, max_s=120, **expect)


def _endless(box, site):
    return site.html("/hang.html", "<html><body><h1>Hang</h1><button>Never</button><script>for(;;){}</script>"
                                   "</body></html>")


def _second_origin(box, site):
    v = box.server("victim").base
    return site.html("/ssrf.html", f"""<html><body><h1>Hello</h1><button>Go</button>
      <img src="{v}/img.png" alt="x"><link rel="stylesheet" href="{v}/style.css"><iframe src="{v}/frame.html"></iframe>
      <script>fetch("{v}/fetch").catch(() => {{}}); navigator.sendBeacon("{v}/beacon", "x");
              new WebSocket("ws://{v[7:]}/ws"); var x = new XMLHttpRequest(); x.open("GET", "{v}/xhr"); x.send();
              new EventSource("{v}/events");</script></body></html>""")


def _metadata(box, site):
    import ipaddress

    from quarry.operators.gui import netguard

    standin = box.server("metadata stand-in", host="127.0.0.2")
    box.patch(netguard, "METADATA", netguard.METADATA | {ipaddress.ip_address("127.0.0.2")})
    m = standin.base
    return site.html("/meta.html", f"""<html><body><h1>Metadata</h1><a href="/x">Link</a>
      <img src="{m}/latest/meta-data/iam/security-credentials/" alt="m"><img src="http://169.254.169.254/latest/" alt="n">
      <script>fetch("{m}/computeMetadata/v1/", {{headers: {{"Metadata-Flavor": "Google"}}}}).catch(() => {{}});</script>
      </body></html>""")


def _million(box, site):
    return site.html("/million.html", """<html><body><h1>Big</h1><button>Top</button><div id="d"></div><script>
      const d = document.getElementById("d"); const f = document.createDocumentFragment();
      for (let i = 0; i < 1000000; i++) { const s = document.createElement("span"); s.textContent = "x" + (i % 10);
        f.appendChild(s); }
      d.appendChild(f);</script></body></html>""")


def _dialogs(box, site):
    return site.html("/dialogs.html", """<html><body><h1>Dialogs</h1><button onclick="alert(1)">Press</button><script>
      alert("a"); confirm("b"); prompt("c"); print();
      window.onbeforeunload = () => "stay"; window.open("/popup.html"); setInterval(() => alert("again"), 50);
      </script></body></html>""")


def _redirect_file(box, site):
    site.routes["/go"] = (302, "text/plain", b"", {"Location": "file:///etc/passwd"})
    return site.base + "/go"


def _big_page(box, site):
    body = b"<html><body><h1>Large</h1><button>OK</button><!--" + b"x" * (10 * MB) + b"--></body></html>"
    site.routes["/big.html"] = (200, "text/html", body, {})
    return site.base + "/big.html"


def _bad_schemes(box: Sandbox) -> Built:
    lines = ["javascript:alert(1)", "data:text/html,<h1>x</h1>", "ftp://127.0.0.1/x",
             "http://", "gopher://127.0.0.1:70/", "chrome://settings", "view-source:http://127.0.0.1/",
             "http://[::1", "\u202ehttp://127.0.0.1/", "file:///etc/passwd"]
    (box.inp / "urls.txt").write_text("\n".join(lines) + "\n")
    return Built([str(box.inp / "urls.txt")], list(GUI_SETS))


GUI_CASES = [
    gui_case("endless JS", "a page whose script never yields (for(;;){}), render.timeout_s=2", _endless,
             sets=("render.timeout_s=2",), rejects={"render/render_timeout": 1}),
    gui_case("second loopback origin", "img, css, iframe, fetch, beacon, WebSocket, XHR, EventSource to another "
             "loopback server", _second_origin, min_kept=1),
    gui_case("metadata address", "requests to 169.254.169.254 and to a loopback stand-in the guard treats as metadata",
             _metadata, min_kept=1),
    gui_case("million-element DOM", "a script appending 1,000,000 spans to one block (Chromium hit-tests each "
             "candidate in O(children): extraction runs into render.extract_timeout_s=2)", _million,
             sets=("render.extract_timeout_s=2",), rejects={"render/render_timeout": 1}),
    gui_case("dialogs", "alert/confirm/prompt/print, beforeunload, popups and an alert every 50 ms", _dialogs,
             min_kept=1),
    gui_case("redirect to file://", "a 302 to file:///etc/passwd", _redirect_file,
             rejects={"render/blocked_redirect": 1}),
    gui_case("10 MB response", "a 10 MB page with render.max_response_bytes at 4 MiB", _big_page,
             sets=("render.max_response_bytes=4194304",), rejects={"render/response_too_large": 1}),
    Case("hostile URL schemes", "gui", "javascript:, data:, ftp:, gopher:, chrome:, view-source:, broken URLs, file:///etc/passwd",
         _bad_schemes, rejects={"read/invalid_url": 10}),
]


# --- ocr_search ---------------------------------------------------------------------------------

OCR_SETS = ["ocr.threads=1"]


def ocr_case(kind: str, what: str, name: str, data: Callable[[], bytes], **expect) -> Case:
    def build(box: Sandbox) -> Built:
        (box.inp / name).write_bytes(data())
        return Built([str(box.inp)], list(OCR_SETS))

    return Case(kind, "ocr_search", what, build, **expect)


def _banner() -> bytes:
    return encode(Image.new("RGB", (30_000, 3), (255, 255, 255)), "PNG")


OCR_CASES = [
    ocr_case("OCR PNG bomb", "ocr_search: the 400 Mpx 1-bit PNG", "bomb.png", png_bomb,
             rejects={"decode/image_too_large": 1}, max_mb=700),
    ocr_case("OCR truncated image", "ocr_search: a PNG cut after its header", "cut.png",
             lambda: encode(photo(), "PNG")[:200], rejects={"decode/corrupt_image": 1}),
    ocr_case("OCR 30000x3 banner", "ocr_search: an extreme aspect ratio picture", "banner.png", _banner,
             rejects={"decode/image_too_small": 1}),
]


# --- imagemining --------------------------------------------------------------------------------


def clean_kb() -> bytes:
    """The demo KB without its two planted bad lines (a line that is not JSON, a fact about an unknown entity)."""
    lines, ids = [], set()
    for line in demo_file("imagemining", "kb.jsonl").decode().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "subject" not in rec:
            ids.add(rec.get("id"))
        lines.append(rec)
    keep = [r for r in lines if "subject" not in r or r["subject"] in ids]
    return "".join(json.dumps(r) + "\n" for r in keep).encode()


def _imagemining(lines: list[str], kb: Optional[bytes] = None) -> Callable[[Sandbox], Built]:
    def build(box: Sandbox) -> Built:
        (box.inp / "kb.jsonl").write_bytes(kb if kb is not None else clean_kb())
        (box.inp / "grace_hopper.jpg").write_bytes(demo_file("grace_hopper.jpg"))
        (box.inp / "images.jsonl").write_text("\n".join(lines) + "\n")
        return Built([str(box.inp / "images.jsonl")], [f"kb.path={box.inp / 'kb.jsonl'}"])
    return build


IMAGEMINING_CASES = [
    Case("NaN/inf boxes", "imagemining", "entity boxes of NaN, Infinity and -Infinity (JSON extensions Python reads)",
         _imagemining(['{"id": "nan", "image": "grace_hopper.jpg", "entities": [{"id": "Q11641", "box": [NaN, 0, 10, 10]}]}',
                       '{"id": "inf", "image": "grace_hopper.jpg", "entities": [{"id": "Q11641", "box": [0, 0, Infinity, Infinity]}]}',
                       '{"id": "ninf", "image": "grace_hopper.jpg", "entities": [{"id": "Q11641", "box": [-Infinity, 0, 5, 5]}]}']),
         rejects={"read/invalid_entities": 3}),
    Case("100k-deep entities", "imagemining", "an image row whose entities are 100,000 nested lists",
         _imagemining(['{"id": "deep", "image": "grace_hopper.jpg", "entities": ' + deep_json() + "}"]),
         rejects={"read/invalid_json": 1}),
    Case("100k-deep KB line", "imagemining", "a knowledge-base line of 100,000 nested objects",
         _imagemining(['{"id": "hopper", "image": "grace_hopper.jpg", "entities": [{"id": "Q11641"}]}'],
                      kb=clean_kb() + ('{"id": ' * 100_000 + "1" + "}" * 100_000).encode() + b"\n"),
         rejects={"kb/invalid_json": 1}, variable=("filter/text_shortcut",), min_kept=1),
]


# --- interleaved --------------------------------------------------------------------------------

INTERLEAVED_SETS = ["relevance.model=quarry-tiny", "relevance.pretrained=none", "relevance.threshold=-1.0"]
ARTICLE = " ".join(json.loads(demo_file("interleaved", "articles.json"))["rocket"][:2])
ARTICLE_2 = " ".join(json.loads(demo_file("interleaved", "articles.json"))["rocket"][2:])


def _interleaved(docs: list[Any], raw: Optional[bytes] = None, name: str = "docs.jsonl") -> Callable[[Sandbox], Built]:
    def build(box: Sandbox) -> Built:
        (box.inp / "rocket.jpg").write_bytes(demo_file("rocket.jpg"))
        lines = [d if isinstance(d, str) else json.dumps(d) for d in docs]
        (box.inp / name).write_bytes(raw if raw is not None else ("\n".join(lines) + "\n").encode())
        return Built([str(box.inp / name)], INTERLEAVED_SETS + ["source=web"])
    return build


def _doc(image: Any, key: str = "path") -> dict:
    return {"id": "doc", "url": "https://example.org/a", "segments": [
        {"type": "text", "text": ARTICLE}, {"type": "image", key: image}, {"type": "text", "text": ARTICLE_2}]}


def _interleaved_long_line(box: Sandbox) -> Built:
    built = _interleaved([_doc("rocket.jpg")])(box)
    with open(box.inp / "docs.jsonl", "ab") as fh:
        fh.write(b'{"id": "long", "segments": [{"type": "text", "text": "')
        chunk = b"word " * (MB // 5)
        for _ in range(100):
            fh.write(chunk)
        fh.write(b'"}]}\n')
    return built


def _interleaved_gz_bomb(box: Sandbox) -> Built:
    (box.inp / "rocket.jpg").write_bytes(demo_file("rocket.jpg"))
    head = (json.dumps(_doc("rocket.jpg")) + "\n").encode() + b'{"id": "bomb", "segments": [{"type": "text", "text": "'
    gzip_bomb(box.inp / "docs.jsonl.gz", head, b"a ", 1024 * MB, b'"}]}\n')
    return Built([str(box.inp / "docs.jsonl.gz")], INTERLEAVED_SETS + ["source=web"])


def _remote_image(box: Sandbox) -> Built:
    v = box.server("victim").base
    docs = [_doc(f"{v}/photo.jpg", "url"), {**_doc(f"{v}/p.jpg"), "id": "path-url"},
            {"id": "mmc4", "text_list": [ARTICLE, ARTICLE_2], "image_info": [
                {"image_name": f"{v}/mmc4.jpg", "raw_url": f"{v}/raw.jpg", "matched_text_index": 1}]}]
    return _interleaved(docs)(box)


def _traversal_image(box: Sandbox) -> Built:
    docs = [{**_doc("../../../../../../etc/passwd"), "id": "etc"}, {**_doc("/proc/self/environ"), "id": "proc"},
            {**_doc("file:///etc/hostname"), "id": "fileurl"}, {**_doc("/dev/zero"), "id": "devzero"}]
    built = _interleaved(docs)(box)
    built.check = _no_local_file_in_output
    return built


INTERLEAVED_CASES = [
    Case("interleaved 100 MB line", "interleaved", "a 100 MB document on one JSONL line", _interleaved_long_line,
         rejects={"read/record_too_large": 1}, kept=1, slow=True, max_s=120),
    Case("interleaved gzip bomb", "interleaved", "a .jsonl.gz whose second line inflates to 1 GiB",
         _interleaved_gz_bomb, rejects={"read/record_too_large": 1}, kept=1, slow=True, max_s=120, max_mb=600),
    Case("remote image URLs", "interleaved", "image segments and MMC4 image_info pointing at a loopback server",
         _remote_image, rejects={"assemble/no_images_left": 3}),
    Case("local-file image paths", "interleaved", "image paths ../../etc/passwd, /proc/self/environ, file://, /dev/zero",
         _traversal_image, rejects={"assemble/no_images_left": 4}),
    Case("MMC4 bad positions", "interleaved", "matched_text_index of -1, 10**30, NaN and a string",
         _interleaved(['{"id": "m%d", "text_list": [%s, %s], "image_info": [{"image_name": "rocket.jpg", '
                       '"matched_text_index": %s}]}' % (i, json.dumps(ARTICLE), json.dumps(ARTICLE), v)
                       for i, v in enumerate(["-1", "1" + "0" * 30, "NaN", '"1"'])]),
         rejects={"read/position_out_of_range": 4}),
    Case("100k-deep document", "interleaved", "a document line of 100,000 nested arrays",
         _interleaved([], raw=('{"segments": ' + deep_json() + "}\n").encode()), rejects={"read/invalid_json": 1}),
]


# --- decontam -----------------------------------------------------------------------------------


def _decontam(rows_fn: Callable[[], Any], bench_fn: Callable[[Path], None],
              check: Optional[Callable[[Path, Any], None]] = None) -> Callable[[Sandbox], Built]:
    def build(box: Sandbox) -> Built:
        import pyarrow.parquet as pq

        (box.inp / "bench").mkdir()
        bench_fn(box.inp / "bench")
        pq.write_table(rows_fn(), box.inp / "train.parquet")
        return Built([str(box.inp / "train.parquet")], [f"decontam.bench={box.inp / 'bench'}"], check=check)
    return build


def _bench_images_unreadable(out: Path, m: Any) -> None:
    index = m.extra["contamination"]["index"]
    assert index["images_unreadable"] == 2 and index["texts_indexed"] == 1, index


def _nothing_indexed(out: Path, m: Any) -> None:
    index = m.extra["contamination"]["index"]
    assert index["texts_indexed"] == 0 and index["texts_too_short"] == 2, index


QUESTION = ("In the figure, triangle ABC is inscribed in the circle with AB as its diameter; if angle CAB is "
            "35 degrees, what is the measure of angle ABC?")


def _train_rows():
    import pyarrow as pa

    return pa.table({"sample_id": ["a", "b", "c", "d"],
                     "question": [QUESTION, None, "", "Name the largest planet in the solar system."],
                     "answer": ["55", None, "", "Jupiter"],
                     "image": pa.array([None, b"", png_bomb(), b"\xff\xd8 not a jpeg"], pa.binary()),
                     "score": [float("nan"), float("inf"), None, 1.0]})


def _bench_good(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["q1", "q2"], "question": [QUESTION, None], "answer": ["55", None],
                             "image": pa.array([png_bomb(), b"garbage"], pa.binary())}), folder / "bench.parquet")


def _bench_wrong_types(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2], "question": pa.array([3.25, float("nan")]), "answer": [True, False]}),
                   folder / "bench.parquet")


DECONTAM_CASES = [
    Case("decontam nulls, NaN, bombs", "decontam", "rows with null/empty text, NaN/inf, a PNG bomb and junk image bytes "
         "against a benchmark with nulls and a bomb image", _decontam(_train_rows, _bench_good, _bench_images_unreadable),
         rejects={"decontam/contaminated_text": 1}, kept=3),
    Case("benchmark wrong types", "decontam", "a benchmark whose question column is float and answer bool "
         "(indexed as too short, nothing matches)", _decontam(_train_rows, _bench_wrong_types, _nothing_indexed),
         kept=4),
]


# --- grade ----------------------------------------------------------------------------------------


def _box_answer(x: str) -> str:
    return f"<|begin_of_box|>{x}<|end_of_box|>"


def _grade(samples: list[Any], rollouts: list[Any]) -> Callable[[Sandbox], Built]:
    def build(box: Sandbox) -> Built:
        def dump(path: Path, rows: list[Any]) -> None:
            path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

        dump(box.inp / "samples.jsonl", samples)
        dump(box.inp / "rollouts.jsonl", rollouts)
        return Built([str(box.inp / "samples.jsonl")], [f"rollouts={box.inp / 'rollouts.jsonl'}"])
    return build


POWER_TOWER = ["9**9**9**9", "9^9^9^9", "\\frac{9^{9^{9^9}}}{1}", "1e999999999", "factorial(10**10)"]

GRADE_CASES = [
    Case("9**9**9**9 rollouts", "grade", "numeric rollouts that are power towers, factorials and huge exponents",
         _grade([{"sample_id": "s1", "task": "math", "question": "2+2?", "answer": "4"}],
                [{"sample_id": "s1", "model": "m", "response": _box_answer(r)} for r in POWER_TOWER]),
         kept=1, slow=True, max_s=150),
    Case("NaN/inf answers", "grade", "answers and rollouts of NaN, inf, -inf, 1e309",
         _grade([{"sample_id": "n1", "task": "math", "question": "?", "answer": "nan"},
                 {"sample_id": "n2", "task": "math", "question": "?", "answer": "inf"},
                 {"sample_id": "n3", "task": "math", "question": "?", "answer": "1e309"}],
                [{"sample_id": s, "model": "m", "response": _box_answer(r)} for s in ("n1", "n2", "n3")
                 for r in ("nan", "NaN", "inf", "-inf", "1e309", "Infinity")]), kept=3),
    Case("100k-deep answer", "grade", "an answer of 100,000 nested JSON lists, a sample line nested as deep",
         _grade([{"sample_id": "d1", "task": "exact", "question": "?", "answer": deep_json()}, deep_json(),
                 {"sample_id": "ok", "task": "exact", "question": "?", "answer": "x"}],
                [{"sample_id": "d1", "model": "m", "response": _box_answer("x")},
                 {"sample_id": "ok", "model": "m", "response": _box_answer("x")}]),
         rejects={"read/invalid_json": 1}, min_kept=1),
]


# --- one benign input per DAG: what the campaign script runs first in each fresh process, so a kind's peak MB
# is what it adds to a warmed-up run of its DAG (models, Chromium, Beam already loaded) ----------------------


def _warm_gui(box: Sandbox) -> Built:
    site = box.server("site", forbidden=False)
    (box.inp / "urls.txt").write_text(site.html("/ok.html", "<html><body><h1>Hello</h1><button>Go</button>"
                                                           "</body></html>") + "\n")
    return Built([str(box.inp / "urls.txt")], list(GUI_SETS))


def _warm_ocr(box: Sandbox) -> Built:
    (box.inp / "photo.jpg").write_bytes(demo_file("rocket.jpg"))
    return Built([str(box.inp)], list(OCR_SETS))


WARMUPS: dict[str, Case] = {
    "caption": caption_case("warm-up", "one good pair", lambda box: None),
    "svg": svg_case("warm-up", "one good SVG", "also.svg", lambda box: CONTROL_SVG.replace("#c33", "#3c3").encode(),
                    kept=None),
    "gui": Case("warm-up", "gui", "one simple page", _warm_gui),
    "ocr_search": Case("warm-up", "ocr_search", "one photo", _warm_ocr),
    "imagemining": Case("warm-up", "imagemining", "one image row",
                        _imagemining(['{"id": "hopper", "image": "grace_hopper.jpg", "entities": [{"id": "Q11641"}]}'])),
    "interleaved": Case("warm-up", "interleaved", "one good document", _interleaved([_doc("rocket.jpg")])),
    "decontam": Case("warm-up", "decontam", "clean rows", _decontam(_train_rows, _bench_wrong_types)),
    "grade": Case("warm-up", "grade", "one sample", _grade([{"sample_id": "s", "task": "math", "question": "1+1?",
                                                            "answer": "2"}],
                                                          [{"sample_id": "s", "model": "m", "response": _box_answer("2")}])),
}


ALL_CASES: list[Case] = [*CAPTION_CASES, *SVG_CASES, *GUI_CASES, *OCR_CASES, *IMAGEMINING_CASES, *INTERLEAVED_CASES,
                         *DECONTAM_CASES, *GRADE_CASES]


def cases_by_kind() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for c in ALL_CASES:
        assert c.kind not in out, c.kind
        out[c.kind] = c
    return out
