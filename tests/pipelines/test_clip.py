"""ScoreClip / ClipModelHandler: RunInference wiring of the CLIP scorer."""

from __future__ import annotations

import io
import math
import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from PIL import Image, ImageDraw

from quarry.operators.clip import TINY_MODEL, ClipScorer, import_open_clip
from quarry.pipelines.clip import ClipModelHandler, ScoreClip
from quarry.schemas.caption import ClipConfig


def jpeg(seed: int, size=(320, 240)) -> bytes:
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    d = ImageDraw.Draw(im)
    x, y = seed * 13 % (size[0] // 2), seed * 29 % (size[1] // 2)
    d.rectangle([x, y, x + size[0] // 3, y + size[1] // 3], fill=(seed * 40 % 256, 90, 200))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """One set of quarry-tiny weights for both paths (two random inits would differ)."""
    import torch

    open_clip = import_open_clip()
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("clip") / "quarry_tiny.pt"
    torch.save(open_clip.create_model(TINY_MODEL).state_dict(), path)
    return str(path)


L4 = "type:nvidia-l4;count:1;install-nvidia-driver"


def cfg(**kw) -> ClipConfig:
    return ClipConfig(model=TINY_MODEL, pretrained=kw.pop("pretrained", "none"), **kw)


def test_handler_batching_hints_and_size():
    h = ClipModelHandler(cfg(min_batch_size=4, max_batch_size=16, device="cpu"))
    assert h.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 16}
    assert h.get_resource_hints() == {}
    # off unless set: a GPU device alone puts no hint on the step (Dataflow would otherwise pick a GPU type)
    assert ClipModelHandler(cfg(device="cuda")).get_resource_hints() == {}
    assert ClipModelHandler(cfg(device="auto", accelerator=L4)).get_resource_hints() == {"accelerator": L4}
    assert ClipModelHandler(cfg(device="cpu", accelerator=L4)).get_resource_hints() == {}
    assert ClipModelHandler(cfg(device="cuda:1"), accelerator=L4).get_resource_hints() == {"accelerator": L4}
    assert ClipModelHandler(cfg(share_model=True)).share_model_across_processes()
    assert h.get_num_bytes([(b"x" * 100, "abc")]) == 103
    with pytest.raises(ValueError, match="no inference_args"):
        h.validate_inference_args({"k": 1})
    # Pickles as config: no model, no torch objects.
    assert len(pickle.dumps(h)) < 4096


@pytest.mark.parametrize("share_model, processes, shared, copies", [
    (None, 1, False, 1),  # in-process DirectRunner: one process, one copy, nothing to share
    (None, 2, True, 1),  # multi_processing x2: one model served to both processes
    (None, None, True, 1),  # a runner that does not say (Dataflow: one process per vCPU)
    (False, 2, False, 2),  # told not to share: a copy per process (each gets half the cores)
    (True, 1, True, 1),
])
def test_handler_shares_one_model_per_machine_unless_one_process(share_model, processes, shared, copies):
    h = ClipModelHandler(cfg(share_model=share_model)).with_processes(processes)
    assert h.share_model_across_processes() is shared and h.copies_on_machine() == copies
    assert h.batch_elements_kwargs() == ClipModelHandler(cfg()).batch_elements_kwargs()


@pytest.mark.parametrize("argv, processes", [
    ([], 1),
    (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], 2),
    (["--direct_num_workers=4", "--direct_running_mode=multi_threading"], 1),
    (["--runner=DirectRunner", "--direct_num_workers=3", "--direct_running_mode=multi_processing"], 3),
    (["--runner=DataflowRunner"], None),
    (["--runner=PortableRunner"], None),
])
def test_processes_per_machine_from_the_runner_options(argv, processes):
    from apache_beam.options.pipeline_options import PipelineOptions

    from quarry.pipelines.clip import processes_per_machine

    assert processes_per_machine(PipelineOptions(argv)) == processes


def test_handler_validates_config_at_construction():
    with pytest.raises(ValueError, match="min_batch_size"):
        ClipModelHandler(cfg(min_batch_size=9, max_batch_size=8))


def test_handler_loads_and_scores():
    h = ClipModelHandler(cfg())
    model = h.load_model()
    scores = list(h.run_inference([(jpeg(1), "a chart"), (b"not an image", "x")], model))
    assert -1.0 <= scores[0] <= 1.0 and math.isnan(scores[1])


@pytest.mark.parametrize("share_model", [False, True])
def test_score_clip_matches_bare_scorer(tiny_checkpoint, share_model):
    """RunInference path == ClipScorer.score_bytes_batch on the same weights; keys kept; also with one model
    shared across the worker's processes (Beam's multi_process_shared proxy)."""
    c = cfg(pretrained=tiny_checkpoint, min_batch_size=3, max_batch_size=3, share_model=share_model)
    captions = ["a blue square", "a sunset over hills", "", "a receipt with prices", "two cats", "a map"]
    items = [(jpeg(i), captions[i]) for i in range(len(captions))]
    items.append((b"\x89PNG broken", "undecodable"))
    keys = [("sample", i) for i in range(len(items))]  # any picklable key passes through
    expected = dict(zip(keys, ClipScorer(c).load().score_bytes_batch(items)))

    def check(outputs):
        got = dict(outputs)
        if len(outputs) != len(items) or set(got) != set(keys):
            raise BeamAssertException(f"keys {sorted(got)} != {keys}")
        for k, score in got.items():
            if not isinstance(score, float):
                raise BeamAssertException(f"{k}: {type(score).__name__}, not float")
            want = expected[k]
            if math.isnan(want) != math.isnan(score) or (not math.isnan(want) and abs(score - want) > 1e-5):
                raise BeamAssertException(f"{k}: RunInference {score} != bare {want}")

    with TestPipeline() as p:
        scores = p | beam.Create(list(zip(keys, items))) | "Score" >> ScoreClip(c)
        assert_that(scores, check)


def test_building_a_clip_step_imports_no_torch():
    """The driver and the SDK processes that only proxy to a shared model never import torch (~210 MiB for
    Beam's optional ModelManager, ~150 more for open_clip); preflight of random weights reads config files;
    workers import this module first (Beam plugin), before unpickling RunInference."""
    import subprocess
    import sys

    code = (
        "import sys, apache_beam as beam\n"
        "from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions\n"
        "from quarry.operators.clip import ClipScorer\n"
        "from quarry.pipelines.clip import ScoreClip, _base\n"
        "from quarry.schemas.caption import ClipConfig\n"
        "cfg = ClipConfig(model='ViT-B-32', pretrained='none')\n"
        "ClipScorer(cfg).preflight()\n"
        "p = beam.Pipeline(options=PipelineOptions(['--direct_num_workers=2', '--direct_running_mode=multi_processing']))\n"
        "_ = p | beam.Create([(0, (b'', 'x'))]) | ScoreClip(cfg)\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch imported'\n"
        "assert _base.resource is not None and _base.ModelManager is None\n"
        "assert 'quarry.pipelines.clip' in p.options.view_as(SetupOptions).beam_plugins\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
