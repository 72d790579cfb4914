"""The imagemining DAG end to end on the demo input: every planted case gets its code, the
per-stage counts add up, emitted questions leak no name and have a unique answer, tiers rise with
hops, reruns give the same shards; the optional rewriter is filtered again and falls back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from quarry.dags import imagemining
from quarry.dags.demos import imagemining as imagemining_demo
from quarry.dags.runner import reject_counts, resolve_config, run_dag
from quarry.operators.imagemining import qa
from quarry.operators.imagemining.kb import contains_phrase, load_kb, normalise
from quarry.pipelines.imagemining import STAGE_REASONS
from quarry.schemas.arrow import arrow_schema
from quarry.schemas.common import ImageRecord
from quarry.schemas.config import ConfigError
from quarry.schemas.imagemining import QARow

SPEC = imagemining.SPEC
pytestmark = pytest.mark.slow


def run(tmp: Path, name: str, extra_sets: tuple[str, ...] = ()):
    demo = imagemining_demo.build(tmp / "in")
    inputs, sets = demo.patterns, demo.sets  # deterministic: rewriting it changes nothing
    cfg = resolve_config(SPEC, None, sets + list(extra_sets), "demo")
    manifest = run_dag(SPEC, inputs, str(tmp / name), cfg)
    return manifest, tmp / name


def sql(run_dir: Path, query: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW rows AS SELECT * FROM read_parquet('{run_dir}/data/**/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW rejects AS SELECT * FROM read_parquet('{run_dir}/rejects/*.parquet')")
    con.execute(f"CREATE VIEW images AS SELECT * FROM read_parquet('{run_dir}/images/*.parquet')")
    return con.sql(query).fetchall()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run(tmp_path_factory.mktemp("imagemining"), "out")


def test_every_planted_case_gets_its_code(demo):
    manifest, out = demo
    got = {(key.split(":")[-1], stage, reason) for key, stage, reason in
           sql(out, "SELECT origin.key, stage, reason FROM rejects")}
    for planted in [("gone", "read", "missing_image"), ("9", "read", "invalid_json"),
                    ("broken", "decode", "corrupt_image"), ("cat", "link", "unknown_entity"),
                    ("texture", "link", "no_entities"), ("espresso", "filter", "text_shortcut"),
                    ("collins", "filter", "trivial"), ("falcon", "filter", "ambiguous_answer"),
                    ("coins-unboxed", "filter", "ambiguous_reference"), ("hopper-caption", "dedup", "near_duplicate"),
                    ("21", "kb", "invalid_json"), ("83", "kb", "unknown_subject"),
                    ("sky-box", "link", "box_on_blank"), ("flags", "discover", "no_path")]:
        assert planted in got, planted
    kept = {key.split(":")[-1] for (key,) in sql(out, "SELECT origin.key FROM rows")}
    assert {"hopper", "falcon", "coins-boxed", "horse"} <= kept
    assert not kept & {"espresso", "coins-unboxed", "cat", "broken", "gone"}
    # linked from the caption, the alt text, a name
    methods = dict(sql(out, "SELECT origin.key, any_value(link_method) FROM rows GROUP BY 1"))
    assert methods["line:8:horse"] == "normalised:caption"


FLAGS = {"Germany": [29, 39, 181, 141], "United States": [209, 39, 361, 141], "Italy": [389, 39, 541, 141]}


def test_visual_hops_in_the_middle_go_through_the_flags_picture(demo):
    """Grace Hopper and Eileen Collins -> their country (KB) -> its flag in flags.png -> the flag next to it
    (the picture) -> that country's capital (KB): the question shows both pictures and needs both."""
    manifest, out = demo
    rows = sql(out, "SELECT question, answer, image_ids, hop_kinds, chain, trajectory, messages, tier FROM rows "
                    "WHERE visual_hops = 2")
    assert {(a, c[0]["object_name"]) for _, a, _, _, c, *_ in rows} == {
        ("Berlin", "Grace Hopper"), ("Rome", "Grace Hopper"), ("Berlin", "Eileen Collins"),
        ("Rome", "Eileen Collins")}
    sizes = dict(sql(out, "SELECT image_id, width FROM images"))
    for question, answer, ids, kinds, chain, trajectory, messages, tier in rows:
        assert question.startswith("In the second picture, find the country of citizenship of the person in the "
                                   "first picture.")
        assert len(ids) == 2 and sizes[ids[1]] == 570  # the flags picture is stored in DIR/images
        assert kinds == ["visual", "kb", "visual", "kb"] and tier == "hard"
        found, look = chain[1], chain[2]
        assert found["object_name"] == "United States" and look["subject_name"] == "United States"
        assert look["kind"] == "look" and look["image"] == 1 and look["box"] == FLAGS[look["object_name"]]
        assert look["relation"] == ("visual:left" if answer == "Berlin" else "visual:right")
        assert [t["name"] for t in trajectory] == ["search", "crop", "search"]
        msgs = json.loads(messages)
        assert msgs[0] == {"role": "user", "content": question} and answer in msgs[-1]["content"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "tool"] * 1 + ["assistant", "tool"] * 2 + [
            "assistant"]


def test_stage_counts_add_up(demo):
    manifest, out = demo
    st = {k: (v.inputs, v.outputs) for k, v in manifest.stages.items()}
    rej = {stage: sum(r.values()) for stage, r in manifest.rejected.items()}
    read = manifest.inputs - rej["read"]
    assert manifest.inputs == 15  # 15 image rows, one not JSON
    assert st["decode"] == (read, read - rej["decode"])
    assert st["link"] == (st["decode"][1], st["decode"][1] - rej["link"])
    assert st["discover"][0] == st["link"][1]
    assert st["filter"] == (st["discover"][1], st["discover"][1] - rej["filter"])
    assert st["dedup"] == (st["filter"][1], st["filter"][1] - rej["dedup"])
    assert manifest.kept == st["dedup"][1] > 0
    assert not manifest.one_to_one and manifest.balanced is None
    assert manifest.extra["kb"]["skipped_lines"] == rej["kb"] == 2
    assert manifest.extra["unknown_entity_ids"] == 1


def test_rows_leak_no_name_answers_are_unique_and_tiers_rise_with_hops(demo):
    manifest, out = demo
    kb = load_kb(str(Path(manifest.extra["kb_path"])))
    kb.rename_relations(qa.load_templates().relation_aliases)
    rows = [r for f in sorted(out.glob("data/**/*.parquet")) for r in pq.read_table(f).to_pylist()]
    for r in rows:
        q = normalise(r["question"])
        names = set(kb.names_norm(r["image_entity_id"]))
        for hop in r["chain"][1:]:
            names |= set(kb.names_norm(hop["object_id"])) if hop["object_id"] else {normalise(hop["object_name"])}
        assert not any(contains_phrase(q, n) for n in names), r["question"]
        # the chain resolves to one answer: KB hops from the image entity, and from each entity a visual hop
        # takes in another picture
        start, chain = r["image_entity_id"], []
        for hop in r["chain"][1:]:
            if hop["kind"] in ("look", "crop_look"):
                assert hop["image"] >= 1 and hop["box"] and hop["relation"].startswith("visual:")
                start, chain = hop["object_id"], []
            else:
                chain.append((hop["relation"], None))
        ends = qa.resolve(kb, start, chain)
        assert len(ends) == 1
        assert len(r["image_ids"]) == r["visual_hops"] and r["hop_kinds"].count("visual") == r["visual_hops"]
        assert "picture" in r["question"]
    by_hops = {}
    for r in rows:
        key = (r["visual_hops"], r["requires_crop"], r["image_entity_id"])
        by_hops.setdefault(key, {})[r["hops"]] = qa.TIER_NAMES.index(r["tier"])
    assert any(len(v) > 1 for v in by_hops.values())
    for v in by_hops.values():
        tiers = [v[h] for h in sorted(v)]
        assert tiers == sorted(tiers)


def test_schema_images_and_rerun_identity(demo, tmp_path):
    manifest, out = demo
    for f in out.glob("data/**/*.parquet"):
        assert pq.read_schema(f).equals(arrow_schema(QARow), check_metadata=False)
    assert pq.read_schema(next(out.glob("images/*.parquet"))).equals(arrow_schema(ImageRecord), check_metadata=False)
    used = {i for (i,) in sql(out, "SELECT DISTINCT unnest(image_ids) FROM rows")}  # the second pictures too
    assert used > {i for (i,) in sql(out, "SELECT DISTINCT image_id FROM rows")}
    stored = sql(out, "SELECT image_id, width, height, format FROM images")
    assert {i for i, *_ in stored} == used and len(stored) == len(used)  # each used image once, no other
    again, out2 = run(out.parent, "again")  # same input files (origins name them)

    def digests(d):
        return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.glob("[dri]*/**/*.parquet"))}

    assert digests(out) == digests(out2)


def test_missing_kb_and_bad_templates_fail_before_running(tmp_path):
    demo = imagemining_demo.build(tmp_path / "in")
    inputs, sets = demo.patterns, demo.sets
    with pytest.raises(ConfigError, match="kb.path"):
        run_dag(SPEC, inputs, str(tmp_path / "o1"), resolve_config(SPEC, None, [], None))
    with pytest.raises(Exception, match="no such file"):
        run_dag(SPEC, inputs, str(tmp_path / "o2"), resolve_config(SPEC, None, ["kb.path=/nonexistent/kb.jsonl"], None))
    with pytest.raises(ConfigError, match="no language"):
        run_dag(SPEC, inputs, str(tmp_path / "o3"), resolve_config(SPEC, None, sets + ["qa.language=xx"], None))
    assert not (tmp_path / "o1").exists()


def test_sqlite_store_gives_the_same_rows_and_counts(demo, tmp_path):
    manifest, out = demo
    manifest2, out2 = run(tmp_path, "sq", ("kb.store=sqlite",))
    store = Path(manifest2.extra["kb_store"])
    assert store.name == "kb.jsonl.sqlite" and store.is_file()
    query = "SELECT sample_id, question, answer, tier FROM rows ORDER BY sample_id"
    assert sql(out2, query) == sql(out, query) and len(sql(out, query)) == manifest.kept
    rejects = "SELECT sample_id, stage, reason, CASE WHEN stage = 'kb' THEN detail END FROM rejects ORDER BY ALL"
    assert sql(out2, rejects) == sql(out, rejects)  # other details name the input folder
    assert manifest2.stages == manifest.stages and manifest2.rejected == manifest.rejected
    assert (manifest2.inputs, manifest2.kept) == (manifest.inputs, manifest.kept)
    drop = ("load_s",)
    assert ({k: v for k, v in manifest2.extra["kb"].items() if k not in drop}
            == {k: v for k, v in manifest.extra["kb"].items() if k not in drop})
    built = store.stat().st_mtime_ns  # a second run on the same (untouched) KB file reuses the store
    cfg = resolve_config(SPEC, None, [f"kb.path={tmp_path / 'in' / 'kb.jsonl'}", "kb.store=sqlite"], "demo")
    again = run_dag(SPEC, [str(tmp_path / "in" / "images.jsonl")], str(tmp_path / "sq2"), cfg)
    assert store.stat().st_mtime_ns == built and again.kept == manifest.kept


def test_sqlite_store_of_a_remote_kb_needs_a_store_path(tmp_path):
    with pytest.raises(ConfigError, match="store_path"):
        resolve_config(SPEC, None, ["kb.path=gs://bucket/kb.jsonl", "kb.store=sqlite"], None)
    cfg = resolve_config(SPEC, None, ["kb.path=gs://bucket/kb.jsonl", "kb.store=sqlite",
                                      f"kb.store_path={tmp_path / 'kb.sqlite'}"], None)
    assert cfg.kb.resolved_store_path() == str(tmp_path / "kb.sqlite")


def test_a_remote_sqlite_store_reaches_the_workers(demo, tmp_path, fake_remote_fs):
    """kb.store_path on a remote filesystem (gs:// on Dataflow): the driver builds and uploads the store, each
    worker machine fetches it once; the rows are the in-memory KB's."""
    manifest, out = demo
    manifest2, out2 = run(tmp_path, "remote", ("kb.store=sqlite", "kb.store_path=fakefs://bucket/kb.sqlite"))
    assert (fake_remote_fs / "bucket" / "kb.sqlite").is_file()
    query = "SELECT sample_id, question, answer, tier FROM rows ORDER BY sample_id"
    assert sql(out2, query) == sql(out, query) and manifest2.rejected == manifest.rejected


def _paraphrase(server, body, n_seen):
    text = body["messages"][0]["content"]
    question = text.rsplit("Question: ", 1)[-1]
    if "taxon" in question:
        return 500, {"error": "overloaded"}, None
    if "coin" in question:  # a paraphrase that names the coin's creator: must be refused
        reply = question.replace("the creator of", "Charles E. Barber, the creator of")
    else:
        reply = "Tell me: " + question.replace("in this picture", "shown in the photo").replace(
            "in the first picture", "shown in the first photo")
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}, None


def test_rewriter_output_is_filtered_again_and_failures_fall_back(chat_server, tmp_path):
    server = chat_server(_paraphrase)
    sets = (f"rewriter.base_url={server.base_url}", "rewriter.model=fake", "rewriter.max_retries=1",
            "rewriter.backoff_s=0.01", "rewriter.api_key_env=null")
    manifest, out = run(tmp_path, "rw", sets)
    rows = sql(out, "SELECT question, template_question, rewritten FROM rows")
    rewritten = [r for r in rows if r[2]]
    assert rewritten and all(q.startswith("Tell me: ") and "photo" in q for q, _, _ in rewritten), [q for q, _, _ in rewritten if not q.startswith("Tell")]
    assert all(q == t for q, t, rw in rows if not rw)
    assert not any("Barber" in q for q, _, _ in rows)
    rw = manifest.extra["rewriter"]
    assert rw["in"] == manifest.stages["filter"].outputs
    assert rw["out"] >= len(rewritten)  # dedup may drop a rewritten question
    assert rw["fallback_filtered"] >= 1 and rw["filtered.name_leak"] >= 1
    assert rw["fallback_error"] == 1  # the taxon question: 500 twice, then the template is kept
    assert rw["in"] == rw["out"] + rw["fallback_error"] + rw["fallback_filtered"]
    assert any("rewriter failed" in n for n in manifest.notes)


def test_unreachable_rewriter_keeps_every_template_question(tmp_path):
    sets = ("rewriter.base_url=http://127.0.0.1:9", "rewriter.model=fake", "rewriter.max_retries=2",
            "rewriter.backoff_s=0.01", "rewriter.timeout_s=2", "rewriter.api_key_env=null")
    manifest, out = run(tmp_path, "down", sets)
    rw = manifest.extra["rewriter"]
    assert rw["in"] == rw["fallback_error"] > 0 and rw["out"] == 0
    assert manifest.kept > 0
    assert all(not r and q == t for q, t, r in sql(out, "SELECT question, template_question, rewritten FROM rows"))


def test_questions_overlapping_a_benchmark_are_dropped(tmp_path):
    bench = tmp_path / "imagemining_bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "question": "Where was the creator of the coin at the left of this "
                                                         "picture born?", "answer": "London"}) + "\n")
    manifest, out = run(tmp_path, "dc", (f"decontam.bench={bench}",))
    # the question itself, and "When was the creator of the coin at the left ..." (a shared 13-gram)
    assert manifest.rejected["decontam"] == {"contaminated_text": 2}
    st = manifest.stages
    assert st["decontam"].inputs == st["dedup"].outputs and st["decontam"].outputs == manifest.kept
    assert st["decontam"].inputs - st["decontam"].outputs == 2
    assert not sql(out, "SELECT 1 FROM rows WHERE question LIKE 'Where was the creator of the coin at the left%'")


def test_every_reject_reason_is_listed_for_its_stage(demo):
    """STAGE_REASONS names every stage of SPEC (but `read`, the reader's; plus `kb`) and every (stage, reason) written."""
    assert set(STAGE_REASONS) == {s.name for s in SPEC.stages} - {"read"} | {"kb"}
    listed = {(stage, r) for stage, reasons in STAGE_REASONS.items() for r in reasons}
    written = {(stage, r) for stage, reasons in reject_counts(str(demo[1])).items() for r in reasons if stage != "read"}
    assert len(written) >= 6 and written <= listed, written - listed


def test_chinese_templates_give_the_same_questions_in_chinese(demo, tmp_path):
    manifest, out = demo
    zh, out_zh = run(tmp_path, "zh", ("qa.language=zh",))
    assert zh.kept == manifest.kept and zh.rejected == manifest.rejected
    rows = sql(out_zh, "SELECT question, language, answer, image_ids FROM rows")
    assert all(lang == "zh" and "图" in q and not any("a" <= ch.lower() <= "z" for ch in q)
               for q, lang, _, _ in rows), rows
    en = sorted((a, tuple(i)) for a, i in sql(out, "SELECT answer, image_ids FROM rows"))
    assert sorted((a, tuple(i)) for _, _, a, i in rows) == en  # the same chains, worded in Chinese
