"""Every DAG's Beam graph, translated to the runner API offline (what Dataflow, Flink and Spark receive):
resource hints sit only where the config declares them, on model steps only."""

from __future__ import annotations

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
