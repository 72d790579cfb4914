"""The svg DAG end to end through run_dag: hostile demo files get their codes, nothing local leaks,
nothing is fetched, the manifest adds up, reruns give the same shards, real icons become pairs."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from quarry.dags.demos import svg as svg_demo
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.dags.svg import SPEC
from quarry.pipelines.svg import REJECT_STAGES, STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.config import ConfigError
from quarry.schemas.svg import SvgRow

PAPIRUS = Path("/usr/share/icons/Papirus")

# What each demo file must become: (stage, reason), or None for a kept pair.
EXPECTED = {
    "chart.svg": None, "triangle-geometry.svg": None, "inkscape-star.svg": None, "latin1.svg": None,
    "script-and-handlers.svg": None, "house-copy.svg": None,
    "house.svg": ("dedup", "exact_duplicate"),  # house-copy.svg comes first by origin
    "billion-laughs.svg": ("prepare", "unsafe_svg"), "xxe-local-file.svg": ("prepare", "unsafe_svg"),
    "use-bomb.svg": ("prepare", "unsafe_svg"), "malformed.svg": ("prepare", "invalid_svg"),
    "not-utf8.svg": ("prepare", "invalid_svg"), "empty-drawing.svg": ("render", "blank_render"),
    "remote-image-only.svg": ("render", "blank_render"), "huge-path.svg": ("prepare", "too_long"),
    "gzip-bomb.svgz": ("prepare", "too_large"), "filter-bomb.svg": ("render", "render_error"),
    "loopback-refs.svg": None, "loopback-dtd.svg": None, "loopback-entity.svg": ("prepare", "unsafe_svg"),
}


def run(inputs: list[str], out: Path, sets: list[str], source: str = "demo"):
    cfg = resolve_config(SPEC, None, sets, source)
    return run_dag(SPEC, inputs, str(out), cfg)


def digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.glob("[dr]*/**/*.parquet"))}


NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 10 10"'


def loopback_files(folder: Path, base: str) -> None:
    """Three more inputs that name a live loopback server in every way an SVG can."""
    (folder / "loopback-refs.svg").write_text(
        f'<svg {NS}><image href="{base}/a.png" width="5" height="5"/><use xlink:href="{base}/b.svg#x"/>'
        f'<style>@import url({base}/c.css);</style><rect width="4" height="9" fill="url({base}/d#g)" '
        f'stroke="#000"/><path d="M5 1L9 9H5Z" fill="#a33"/></svg>')
    (folder / "loopback-dtd.svg").write_text(
        f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "{base}/e.dtd"><svg {NS}><circle cx="3" cy="5" r="2"/>'
        '<rect x="6" y="1" width="3" height="8" fill="#36c"/></svg>')
    (folder / "loopback-entity.svg").write_text(
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{base}/f.txt">]><svg {NS}><text>&x;</text></svg>')


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run over the demo input plus the loopback files, with the server listening throughout."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = tmp_path_factory.mktemp("svg-demo")
    try:
        demo = svg_demo.build(base / "input")
        inputs, sets = demo.patterns, demo.sets
        loopback_files(base / "input", f"http://127.0.0.1:{server.server_address[1]}")
        manifest = run(inputs, base / "out", sets)
    finally:
        server.shutdown()
        server.server_close()
    return base, inputs, sets, manifest, hits


@pytest.mark.slow
def test_every_demo_file_gets_its_code(demo_run):
    base, *_ = demo_run
    con = duckdb.connect()
    rejects = {k: (s, r) for k, s, r in con.sql(
        f"SELECT origin.key, stage, reason FROM read_parquet('{base}/out/rejects/*.parquet')").fetchall()}
    kept = {k for (k,) in con.sql(
        f"SELECT DISTINCT origin.key FROM read_parquet('{base}/out/data/**/*.parquet')").fetchall()}
    assert set(rejects) | kept == set(EXPECTED)
    for name, expected in EXPECTED.items():
        if expected is None:
            assert name in kept, (name, rejects.get(name))
        else:
            assert rejects.get(name) == expected, name


@pytest.mark.slow
def test_manifest_adds_up(demo_run):
    base, _, _, m, _ = demo_run
    pairs = m.extra["pairs"]
    assert m.dag == "svg" and not m.one_to_one and m.extra["pairs_balanced"] is True
    assert m.inputs == len(EXPECTED) == pairs + m.rejected_total
    assert m.kept == 2 * pairs == m.stages["rows"].outputs and m.stages["rows"].inputs == pairs
    assert m.stages["prepare"].inputs == m.inputs
    assert m.stages["exact_dedup"].inputs - m.stages["exact_dedup"].outputs == 1
    assert m.rejected["prepare"] == {"unsafe_svg": 4, "invalid_svg": 2, "too_long": 1, "too_large": 1}
    assert sum(m.rows_by_partition.values()) == m.kept
    assert "resvg" in m.extra["renderer"]


@pytest.mark.slow
def test_shards_have_the_row_schema_and_both_tasks(demo_run):
    base, *_ = demo_run
    files = list((base / "out" / "data").rglob("*.parquet"))
    assert files and all(f.parent.parent.name == "source=demo" for f in files)
    for f in files:
        table = pq.read_table(f)
        assert table.schema.remove_metadata().equals(arrow_schema(SvgRow).remove_metadata())
        assert set(table["tier"].to_pylist()) == {f.parent.name.removeprefix("tier=")}
    con = duckdb.connect()
    per_pair = con.sql(f"SELECT pair_id, list_sort(list(task)), count(DISTINCT sample_id), count(DISTINCT phash) "
                       f"FROM read_parquet('{base}/out/data/**/*.parquet') GROUP BY 1").fetchall()
    assert all(tasks == ["image_to_svg", "svg_to_image"] and ids == 2 and hashes == 1
               for _, tasks, ids, hashes in per_pair)
    pngs = con.sql(f"SELECT image.bytes, width, height FROM read_parquet('{base}/out/data/**/*.parquet')").fetchall()
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" and max(w, h) == 256 for b, w, h in pngs)


@pytest.mark.slow
def test_nothing_from_a_local_file_appears_in_any_output(demo_run):
    base, *_ = demo_run
    secrets = [line for line in Path("/etc/passwd").read_text().splitlines() if line][:3] if Path(
        "/etc/passwd").exists() else []
    blobs = b"".join(p.read_bytes() for p in (base / "out").rglob("*") if p.is_file())
    con = duckdb.connect()
    text = "\n".join(str(r) for r in con.sql(
        f"SELECT svg, removed FROM read_parquet('{base}/out/data/**/*.parquet')").fetchall())
    text += "\n".join(str(r) for r in con.sql(f"SELECT * FROM read_parquet('{base}/out/rejects/*.parquet')").fetchall())
    for line in secrets:
        assert line not in text and line.encode() not in blobs
    assert "passwd" not in con.sql(f"SELECT string_agg(svg, '') FROM read_parquet('{base}/out/data/**/*.parquet')"
                                   ).fetchall()[0][0]


@pytest.mark.slow
def test_rerun_gives_identical_shards(demo_run, tmp_path):
    base, inputs, sets, *_ = demo_run
    run(inputs, tmp_path / "again", sets)
    assert digests(base / "out") == digests(tmp_path / "again")


@pytest.mark.slow
def test_a_loopback_server_named_by_inputs_receives_nothing(demo_run):
    base, *_, hits = demo_run
    assert hits == []
    svgs = [r[0] for r in duckdb.connect().sql(
        f"SELECT svg FROM read_parquet('{base}/out/data/**/*.parquet') WHERE origin.key LIKE 'loopback%'").fetchall()]
    assert len(svgs) == 4 and not any("127.0.0.1" in s for s in svgs)


@pytest.mark.slow
def test_real_icon_theme_svgs_mostly_become_pairs(tmp_path):
    if not PAPIRUS.is_dir():
        pytest.skip(f"{PAPIRUS} is absent (Debian papirus-icon-theme, installed by scripts/apt-packages.txt)")
    files = sorted(p for p in (PAPIRUS / "64x64" / "apps").glob("*.svg") if not p.is_symlink())
    sample = random.Random(11).sample(files, min(50, len(files)))
    with tarfile.open(tmp_path / "papirus.tar", "w") as tar:
        for f in sample:
            data = f.read_bytes()
            info = tarfile.TarInfo(f.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    m = run([str(tmp_path / "papirus.tar")], tmp_path / "out", ["render.size=64"], source="papirus")
    assert m.inputs == len(sample) and m.extra["pairs_balanced"]
    assert m.extra["pairs"] >= 0.8 * len(sample), m.rejected
    assert set(m.rejected) <= {"dedup", "render", "prepare"}


def test_config_is_strict():
    with pytest.raises(ConfigError, match="tiers.chars"):
        resolve_config(SPEC, None, ["tiers.chars=[5,4,3,2]"], None)
    with pytest.raises(ConfigError, match="tasks"):
        resolve_config(SPEC, None, ["tasks=[svg_to_image,svg_to_image]"], None)
    with pytest.raises(ConfigError, match="unknown key 'reader.image_column'"):
        resolve_config(SPEC, None, ["reader.image_column=x"], None)
    cfg = resolve_config(SPEC, None, ["render.size=128", "tasks=[image_to_svg]"], "web")
    assert cfg.render.size == 128 and cfg.tasks == ["image_to_svg"] and cfg.source == "web"


@pytest.mark.slow
def test_decontam_drops_pairs_whose_render_is_a_benchmark_image(tmp_path):
    import pyarrow as pa

    from quarry.operators.svg.prepare import prepare_svg
    from quarry.operators.svg.render import RenderOptions, render

    demo = Path(__file__).resolve().parents[2] / "dags" / "demo_data" / "svg"
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("chart.svg", "triangle-geometry.svg", "inkscape-star.svg"):
        (folder / name).write_bytes((demo / name).read_bytes())
    # The benchmark holds the chart as a picture at another size (pHash is scale-invariant).
    chart = render(prepare_svg((demo / "chart.svg").read_bytes()), RenderOptions(size=400))
    (tmp_path / "bench").mkdir()
    pq.write_table(pa.table({"question": ["Which quarter had the highest sales in the bar chart?"],
                             "answer": ["Q4"], "image": [chart.png]}), tmp_path / "bench" / "chartqa.parquet")
    m = run([str(folder)], tmp_path / "out", ["render.size=128", f"decontam.bench={tmp_path / 'bench'}"])
    assert m.rejected == {"decontam": {"contaminated_image": 1}}
    assert m.extra["pairs"] == 2 and m.extra["pairs_balanced"]
    assert m.extra["contamination"]["by_benchmark"] == {"chartqa": 1}
    kept = {k for (k,) in duckdb.connect().sql(
        f"SELECT DISTINCT origin.key FROM read_parquet('{tmp_path}/out/data/**/*.parquet')").fetchall()}
    assert kept == {"triangle-geometry.svg", "inkscape-star.svg"}


def test_every_reject_reason_is_listed_for_its_stage(demo_run):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's) and every (stage, reason) the run wrote."""
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"}
    listed = {(REJECT_STAGES.get(stage, stage), r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(demo_run[0] / "out")).items() for r in reasons
               if stage != "read"}
    assert len(written) >= 6 and written <= listed, written - listed
