"""The command line: help that teaches, one clear line for every mistake, inspect over DuckDB."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quarry.dags.cli import main, with_workers


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands_and_examples():
    out = subprocess.run([sys.executable, "-m", "quarry.dags.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for word in ("run", "list", "inspect", "demo", "examples:", "--workers"):
        assert word in out


def test_list_names_dags_and_stages(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "caption" in out and "dedup" in out and "balance" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "nosuchdag", "--input", "x", "--output", "y"], "unknown DAG 'nosuchdag'"),
    (["run", "caption", "--input", "/nonexistent/*.tar", "--output", "OUT"], "no files match"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--set", "clip.treshold=1"], "unknown key 'clip.treshold'"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--set", "balance.vocabulary=/nope.txt"],
     "balance.vocabulary"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--config", "/nope.yaml"], "config file /nope.yaml"),
    (["run", "caption", "--input", "DEMO", "--output", "OUT", "--set", "clip.pretrained=/nope/vit.bin"],
     "CLIP weights for ViT-B-32: checkpoint file '/nope/vit.bin' does not exist"),
    (["run", "caption", "--input", "DEMO", "--output", "OUT"], "ViT-B-32/laion2b_s34b_b79k are not in the local cache"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--workers", "0"], "--workers 0: give 1 or more"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--workers", "2", "--", "--runner=DataflowRunner"],
     "--workers sets DirectRunner processes"),
    (["run", "caption", "--input", "x", "--output", "OUT", "--workers", "2", "--", "--direct_num_workers=3"],
     "both set the worker count"),
    (["run", "caption", "--input", "DEMO", "--output", "OUT", "--", "--runner=DataflowRunner", "--project=p"],
     "--runner=DataflowRunner: its workers cannot read local paths"),
    (["run", "caption", "--input", "gs://bucket/shards/*.tar", "--output", "OUT", "--", "--runner=DataflowRunner"],
     "cannot read local paths (OUT)"),
    (["run", "imagemining", "--input", "gs://b/rows.jsonl", "--output", "gs://b/out", "--set", "kb.path=/data/kb.jsonl",
      "--set", "qa.templates=gs://b/t.yaml", "--", "--runner=DataflowRunner"],
     "cannot read local side files (kb.path=/data/kb.jsonl)"),
])
def test_mistakes_fail_before_the_pipeline_with_one_line(capsys, tmp_path, demo_dir, argv, message):
    demo_input = str(demo_dir / "inputs" / "caption")
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("DEMO", demo_input) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    message = message.replace("OUT", str(tmp_path / "out"))
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_workers_is_the_direct_runners_multi_process_options():
    assert with_workers(None, ["--x=1"]) == ["--x=1"]
    assert with_workers(1, []) == []
    assert with_workers(4, ["--runner=DirectRunner"]) == [
        "--runner=DirectRunner", "--direct_num_workers=4", "--direct_running_mode=multi_processing"]


def test_show_config_prints_every_key(capsys):
    code, out, _ = run_cli(capsys, "run", "caption", "--show-config", "--set", "balance.t=9")
    assert code == 0 and "threshold: 0.3" in out and "t: 9" in out


def test_existing_run_needs_overwrite(capsys, demo_dir):
    code, _, err = run_cli(capsys, "run", "caption", "--input", str(demo_dir / "inputs" / "caption"),
                           "--output", str(demo_dir / "caption"), "--set", "clip.model=quarry-tiny",
                           "--set", "clip.pretrained=none")
    assert code == 2 and "already holds a run" in err and "--overwrite" in err


def test_inspect_summary_and_sql(capsys, demo_dir):
    code, out, _ = run_cli(capsys, "inspect", str(demo_dir / "caption"))
    assert code == 0
    for word in ("rows by source x tier x task", "stock", "webcrawl", "rejects by stage and reason", "near_duplicate"):
        assert word in out
    code, out, _ = run_cli(capsys, "inspect", str(demo_dir / "caption"), "--sql",
                           "SELECT count(*) AS n FROM rejects WHERE reason = 'corrupt_image'")
    assert code == 0 and "3" in out
    code, _, err = run_cli(capsys, "inspect", str(demo_dir / "caption"), "--sql", "SELECT nope FROM shards")
    assert code == 2 and "nope" in err


def test_resume_help_names_exactly_the_resumable_dags():
    from quarry.dags.registry import DAGS
    out = subprocess.run([sys.executable, "-m", "quarry.dags.cli", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    listed = " ".join(out.split("DAGs that resume:")[1].split()).split("--")[0]
    named = {w.strip(" ,") for w in listed.split(",")}
    assert named == {name for name, spec in DAGS.items() if spec.resumable}
