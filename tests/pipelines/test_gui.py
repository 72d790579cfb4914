"""Reading gui inputs: URL lists, URL tables, folders of saved pages (no browser)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quarry.dags.gui import SPEC
from quarry.dags.runner import resolve_config
from quarry.pipelines.gui import final_url_of, plan_gui_inputs, read_gui_file, url_problem
from quarry.pipelines.read import InputError
from quarry.schemas.common import Reject
from quarry.schemas.gui import PageInput


def cfg(*sets):
    return resolve_config(SPEC, None, list(sets), None)


def read_all(paths, c):
    out = []
    for f in plan_gui_inputs(paths, c):
        out.extend(read_gui_file(f, "src", c))
    return out


@pytest.mark.parametrize("url, ok", [
    ("https://example.org/a?b=c", True),
    ("http://example.org:8080/", True),
    ("file:///srv/pages/a.html", True),
    ("file:///etc/passwd", False),
    ("file:///srv/pages/", False),
    ("ftp://example.org/", False),
    ("javascript:alert(1)", False),
    ("example.org/no-scheme", False),
    ("http:///no-host", False),
    ("http://example.org:99999/", False),
    ("http://exa mple.org/", False),
    ("https://example.org/" + "a" * 5000, False),
])
def test_url_problem(url, ok):
    assert (url_problem(url) is None) == ok


def test_url_list_lines_become_pages_or_rejects(tmp_path):
    (tmp_path / "urls.txt").write_text("# a comment\nhttps://example.org/\n\nnot a url\nhttps://example.org/b\n")
    recs = read_all([str(tmp_path / "urls.txt")], cfg())
    pages = [r for r in recs if isinstance(r, PageInput)]
    rejects = [r for r in recs if isinstance(r, Reject)]
    assert [p.url for p in pages] == ["https://example.org/", "https://example.org/b"]
    assert [(r.stage, r.reason, r.origin.key) for r in rejects] == [("read", "invalid_url", "line:4")]
    assert pages[0].origin.key == "line:2" and pages[0].viewport.name == "desktop"


def test_extra_viewports_make_one_page_each_with_distinct_stable_ids(tmp_path):
    (tmp_path / "urls.txt").write_text("https://example.org/\n")
    c = cfg("render.extra_viewports=[{name: mobile, width: 390, height: 844, device_scale_factor: 2, is_mobile: true}]")
    pages = read_all([str(tmp_path / "urls.txt")], c)
    assert [p.viewport.name for p in pages] == ["desktop", "mobile"]
    assert len({p.page_id for p in pages}) == 2
    assert [p.page_id for p in read_all([str(tmp_path / "urls.txt")], c)] == [p.page_id for p in pages]


def test_jsonl_and_parquet_url_tables(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join([
        json.dumps({"url": "https://example.org/1", "source": "cc-2024"}),
        "{broken",
        json.dumps({"link": "https://example.org/2"}),
        json.dumps({"url": "gopher://old"}),
    ]) + "\n")
    pq.write_table(pa.table({"url": ["https://example.org/3", None]}), tmp_path / "b.parquet")
    recs = read_all([str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")], cfg())
    got = [(r.url, r.source) if isinstance(r, PageInput) else (r.reason, r.origin.key) for r in recs]
    assert got == [("https://example.org/1", "cc-2024"), ("invalid_json", "line:2"), ("missing_url", "line:3"),
                   ("invalid_url", "line:4"), ("https://example.org/3", "src"), ("missing_url", "row:1")]


def test_parquet_without_the_url_column_fails_before_the_run(tmp_path):
    pq.write_table(pa.table({"href": ["https://example.org/"]}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match="input.url_column"):
        plan_gui_inputs([str(tmp_path / "c.parquet")], cfg())
    assert len(plan_gui_inputs([str(tmp_path / "c.parquet")], cfg("input.url_column=href"))) == 1


def test_a_folder_of_saved_pages_is_served_from_its_root(tmp_path):
    (tmp_path / "site" / "sub").mkdir(parents=True)
    (tmp_path / "site" / "index.html").write_text("<p>x</p>")
    (tmp_path / "site" / "sub" / "page.htm").write_text("<p>y</p>")
    (tmp_path / "site" / "style.css").write_text("p{}")
    files = plan_gui_inputs([str(tmp_path / "site")], cfg())
    assert sorted(f.path.rsplit("/", 1)[-1] for f in files) == ["index.html", "page.htm"]
    assert {f.root for f in files} == {str(tmp_path / "site")}
    pages = read_all([str(tmp_path / "site")], cfg())
    assert sorted(p.url for p in pages) == ["index.html", "sub/page.htm"] and {p.kind for p in pages} == {"html"}


def test_inputs_with_nothing_to_read_fail_early(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="none of the 1 matching files"):
        plan_gui_inputs([str(tmp_path / "notes.csv")], cfg())


@pytest.mark.parametrize("kind,final,expected", [
    ("html", "http://127.0.0.1:41234/shop/cart.html", "shop/cart.html"),
    ("html", "http://127.0.0.1:5/a%20b.html?x=1#top", "a b.html?x=1#top"),
    ("html", "http://localhost:80/index.html", "index.html"),
    ("html", "https://example.org/away.html", "https://example.org/away.html"),  # left the folder: as it was
    ("url", "http://127.0.0.1:8000/page.html", "http://127.0.0.1:8000/page.html"),  # a web page keeps its URL
])
def test_final_url_of_served_pages_is_the_path_in_the_folder(kind, final, expected):
    class Page:  # final_url_of reads only the page's kind
        pass

    p = Page()
    p.kind = kind
    assert final_url_of(p, final) == expected
