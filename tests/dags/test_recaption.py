"""The caption DAG with the recaption stage on, end to end on the demo input, against a fake deterministic
OpenAI-compatible endpoint: the manifest adds up (recaption outcomes included), rows carry both captions and
which one trains, reruns give the same shards, a bad endpoint or config stops the run with one line."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import duckdb
import pytest

from quarry.dags.demos.caption import DEMO_SETS, build_caption_input
from quarry.dags.registry import DAGS
from quarry.dags.runner import resolve_config, run_dag
from quarry.schemas.config import ConfigError

TAIL = ", photographed in clear daylight with soft shadows, sharp detail and natural colours throughout the frame."


def _completion(text):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def deterministic(server, body, n):
    """The same reply for the same caption on every run; one caption in 4 fails for good, one in 4 is boilerplate."""
    prompt = body["messages"][0]["content"][-1]["text"]
    caption = re.search(r"<original>(.*?)</original>", prompt, re.S).group(1)
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    h = int(hashlib.sha256(caption.encode()).hexdigest(), 16) % 4
    if h == 0:
        return 500, {"error": "model crashed"}, None
    if h == 1:
        return 200, _completion(f"The image shows {caption}{TAIL}"), None
    return 200, _completion(f"{caption.rstrip('.')}{TAIL}"), None


def sets(url, *more):
    return [*DEMO_SETS, "recaption.enabled=true", "recaption.model=recap", f"recaption.base_url={url}",
            "recaption.preflight=false", "recaption.backoff_s=0", "recaption.max_retries=1", *more]


def run(tmp_path, name, url, *more):
    spec = DAGS["caption"]
    inp = tmp_path / "in"
    if not inp.exists():
        build_caption_input(inp)
    cfg = resolve_config(spec, None, sets(url, *more), "demo")
    return run_dag(spec, [str(inp / "*.tar")], str(tmp_path / name), cfg)


def rows(run_dir):
    con = duckdb.connect()
    return con.sql(f"SELECT sample_id, caption, recaption, recaption_status, caption_source, train_caption "
                   f"FROM read_parquet('{run_dir}/data/**/*.parquet', hive_partitioning=true) ORDER BY sample_id"
                   ).fetchall()


def test_recaption_stage_end_to_end(chat_server, tmp_path):
    s = chat_server(deterministic)
    m = run(tmp_path, "a", s.base_url, "recaption.merge_ratio=0.5")
    assert m.balanced and m.inputs == m.kept + m.rejected_total
    rec = m.extra["recaption"]
    assert rec["model"] == "recap" and rec["endpoint"] == s.base_url + "/v1/chat/completions"
    assert rec["ocr_check"].startswith("skipped")
    assert rec["outcomes_balanced"] and rec["requested"] == m.stages["recaption"].inputs > 0
    assert sum(rec["outcomes"].values()) == rec["requested"]
    assert rec["outcomes"]["ok"] == m.stages["recaption"].outputs
    assert {k: v for k, v in rec["outcomes"].items() if k != "ok"} == rec["rejected"] == m.rejected["recaption"]
    assert set(rec["rejected"]) == {"http_error", "boilerplate"}
    got = rows(tmp_path / "a")
    assert len(got) == m.kept == sum(rec["caption_source"].values())
    for sample_id, caption, recaption, status, source, train in got:
        assert status == "ok" and recaption == caption.rstrip(".") + TAIL
        assert train == (recaption if source == "recaption" else caption)
    assert 0 < rec["caption_source"].get("recaption", 0) < m.kept  # about half
    assert m.extra["clip"]["by_lang"]["en"]["model"] == "quarry-tiny/none"
    # every pair was asked: one whose caption gets a reply once (no duplicate request for a row), one whose caption
    # gets a 500 at most twice (max_retries=1; a lost connect can take one of its two attempts unseen by the server)
    asked = Counter(re.search(r"<original>(.*?)</original>", b["messages"][0]["content"][-1]["text"]).group(1)
                    for b in s.bodies())  # captions repeat across the demo's rows: counts are per caption text
    failing = {c for c in asked if int(hashlib.sha256(c.encode()).hexdigest(), 16) % 4 == 0}
    failed_rows, to_failing = rec["rejected"]["http_error"], sum(asked[c] for c in failing)
    assert sum(asked[c] for c in asked if c not in failing) == rec["requested"] - failed_rows
    assert failed_rows < to_failing <= 2 * failed_rows  # the retries happened, and only once each

    again = run(tmp_path, "b", s.base_url, "recaption.merge_ratio=0.5")  # a rerun: the same rows, ids and shards
    assert rows(tmp_path / "b") == got and again.extra["recaption"]["outcomes"] == rec["outcomes"]
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a" / "data").rglob("*.parquet"))
    assert files == sorted(p.relative_to(tmp_path / "b").as_posix()
                           for p in (tmp_path / "b" / "data").rglob("*.parquet"))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["extra"]["recaption"]["outcomes"] == rec["outcomes"]


def test_keep_original_keeps_every_balanced_pair(chat_server, tmp_path):
    s = chat_server(deterministic)
    m = run(tmp_path, "k", s.base_url, "recaption.on_failure=keep_original", "recaption.merge_ratio=1.0")
    assert m.balanced and "recaption" not in m.rejected
    got = rows(tmp_path / "k")
    statuses = {status for *_, status, _, _ in [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in got]}
    assert statuses == {"ok", "http_error", "boilerplate"}
    for _, caption, recaption, status, source, train in got:
        assert (source, train) == (("recaption", recaption) if status == "ok" else ("original", caption))


def test_recaption_off_by_default_writes_original_rows(demo_dir):
    got = rows(demo_dir / "caption")
    assert got and {(r[2], r[3], r[4]) for r in got} == {(None, "off", "original")}
    assert all(r[5] == r[1] for r in got)
    manifest = json.loads((demo_dir / "caption" / "manifest.json").read_text())
    assert "recaption" not in manifest["extra"] and manifest["extra"]["clip"]["model"] == "quarry-tiny"


def test_an_endpoint_that_is_down_stops_the_run_before_it_starts(tmp_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    spec = DAGS["caption"]
    build_caption_input(tmp_path / "in")
    cfg = resolve_config(spec, None, [*DEMO_SETS, "recaption.enabled=true", "recaption.model=recap",
                                      f"recaption.base_url=http://127.0.0.1:{port}"], "demo")
    with pytest.raises(ConfigError, match="unreachable.*recaption.preflight=false"):
        run_dag(spec, [str(tmp_path / "in" / "*.tar")], str(tmp_path / "out"), cfg)


def test_config_errors_are_one_clear_line(tmp_path):
    spec = DAGS["caption"]
    with pytest.raises(ConfigError, match="recaption.model"):
        resolve_config(spec, None, ["recaption.enabled=true"], None)
    with pytest.raises(ConfigError, match="merge_ratio"):
        resolve_config(spec, None, ["recaption.merge_ratio=1.5"], None)
    path = tmp_path / "c.yaml"
    path.write_text("recaption:\n  enabled: true\n  model: m\n  on_failure: drop\n")
    with pytest.raises(ConfigError, match="on_failure"):
        resolve_config(spec, str(path), [], None)
    cfg = resolve_config(spec, None, ["clip.enabled=false", "recaption.prompt=" + str(tmp_path / "missing.txt"),
                                      "recaption.enabled=true",
                                      "recaption.model=m", "recaption.preflight=false"], None)
    from PIL import Image

    from quarry.dags.caption import plan

    (tmp_path / "in").mkdir()
    Image.new("RGB", (300, 300), (9, 80, 200)).save(tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "a.txt").write_text("a blue square on a wall")
    with pytest.raises(ConfigError, match="recaption.prompt: cannot read"):
        plan([str(tmp_path / "in")], cfg)
