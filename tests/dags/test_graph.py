"""Every DAG's Beam graph, translated to the runner API offline (what Dataflow, Flink and Spark receive):
resource hints sit only where the config declares them, on model steps only."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest

from quarry.dags.demo import DEMOS
from quarry.dags.registry import DAGS
from quarry.dags.runner import build_dag, resolve_config

L4 = "type:nvidia-l4;count:1;install-nvidia-driver"
HINT = "beam:resources:accelerator:v1"


def hinted(name: str, demo, sets: list[str], tmp_path) -> dict[str, dict[str, bytes]]:
    spec = DAGS[name]
    cfg = resolve_config(spec, None, demo.sets + sets, demo.source or f"demo-{name}")
    pipeline = beam.Pipeline()
    build_dag(spec, pipeline, cfg, spec.plan(demo.patterns, cfg), str(tmp_path / "out"))
    proto = pipeline.to_runner_api()
    envs = proto.components.environments
    return {t.unique_name: dict(envs[t.environment_id].resource_hints)
            for t in proto.components.transforms.values()
            if t.environment_id and envs[t.environment_id].resource_hints}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph-inputs")
    return {name: build(root / name) for name, build in DEMOS.items()}


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_no_resource_hints_unless_declared(demos, name, tmp_path):
    assert hinted(name, demos[name], [], tmp_path) == {}


@pytest.mark.parametrize("name, sets", [
    ("caption", ["clip.enabled=true", "clip.model=quarry-tiny", "clip.pretrained=none", "clip.device=auto",
                 f"clip.accelerator={L4}"]),
    ("ocr_search", ["ocr.device=gpu", f"ocr.accelerator={L4}"]),
])
def test_a_declared_accelerator_sits_on_the_model_steps_only(demos, name, sets, tmp_path):
    hints = hinted(name, demos[name], sets, tmp_path)
    assert hints, "no step carries the hint"
    for step, h in hints.items():
        assert step.endswith("BeamML_RunInference"), step  # RunInference's inference ParDo, not batching or I/O
        assert h == {HINT: L4.encode()}


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_plan_only_saves_the_graph_and_writes_nothing(demos, name, tmp_path, capsys):
    from apache_beam.portability.api import beam_runner_api_pb2

    from quarry.dags.cli import main

    demo, out, graph = demos[name], tmp_path / "out", tmp_path / "graph.pb"
    argv = ["run", name, "--output", str(out), "--plan-only", str(graph), "--source", demo.source or "demo"]
    for pattern in demo.patterns:
        argv += ["--input", pattern]
    for s in demo.sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert "nothing ran" in capsys.readouterr().out
    assert not out.exists()
    proto = beam_runner_api_pb2.Pipeline.FromString(graph.read_bytes())
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any("WriteRejects" in n for n in names)


# gui's demo is a folder of saved pages, served from a local folder by design (a remote gui run takes URL lists)
@pytest.mark.parametrize("name", sorted(set(DEMOS) - {"gui"}))
def test_a_remote_run_bakes_no_local_path_into_its_graph(name, tmp_path, capsys, fake_remote_fs):
    """Inputs, side files and output on a remote filesystem (`fakefs://`, as gs:// for Dataflow): the saved job
    graph (its steps' pickled functions, where configs travel) names no path of the machine that built it."""
    import shutil

    from quarry.dags.cli import main

    local = tmp_path / "demo"
    demo = DEMOS[name](local)
    shutil.copytree(tmp_path, fake_remote_fs / "bucket", dirs_exist_ok=True)

    def remote(text: str) -> str:
        return text.replace(str(tmp_path), "fakefs://bucket")

    graph = tmp_path / "graph.pb"
    argv = ["run", name, "--output", "fakefs://bucket/out", "--plan-only", str(graph),
            "--source", demo.source or "demo"]
    for pattern in demo.patterns:  # a folder on a remote filesystem is given as a glob of its files
        argv += ["--input", remote(pattern) + ("/**" if os.path.isdir(pattern) else "")]
    for s in demo.sets:
        key, _, value = s.partition("=")
        values = value.strip("[]").split(",") if value.startswith("[") else [value]
        values = [remote(v) + ("/**" if os.path.isdir(v) else "") for v in values]
        argv += ["--set", f"{key}=" + (f"[{','.join(values)}]" if value.startswith("[") else values[0])]
    code = main(argv + ["--", "--runner=DataflowRunner", "--project=quarry-test-1", "--region=us-central1",
                        "--temp_location=gs://quarry-test/tmp"])
    assert code == 0, capsys.readouterr().err
    baked = b"".join(_pickled_payloads(graph.read_bytes()))
    assert b"fakefs://bucket" in baked  # the config travels with the steps: the search below sees it
    assert str(tmp_path).encode() not in baked and str(local).encode() not in baked


def _pickled_payloads(graph: bytes):
    """The graph's ParDo functions, unpickled to bytes (Beam stores them base64 + zlib or bz2): where configs
    and paths travel."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability.api import beam_runner_api_pb2

    proto = beam_runner_api_pb2.Pipeline.FromString(graph)
    for t in proto.components.transforms.values():
        if t.spec.urn != "beam:transform:pardo:v1":
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload
        try:
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            continue
        for inflate in (zlib.decompress, bz2.decompress):
            try:
                yield inflate(raw)
                break
            except (zlib.error, OSError, ValueError):
                continue
