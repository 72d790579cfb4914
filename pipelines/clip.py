"""CLIP scoring under Beam's RunInference.

    PCollection[(key, (image_bytes, caption))] -> ScoreClip(cfg) -> PCollection[(key, score)]

`ClipModelHandler` is the config plus `load_model`/`run_inference`;
RunInference does the rest: `BatchElements` with the config's min/max batch
size, the model loaded once per worker process (shared by its threads, loaded
in the DoFn's setup) or, where the runner runs several SDK processes on one
machine, once per machine (`clip.share_model`, on by default there: Beam's
multi_process_shared serves one model to every process, which saves a copy
per process and lets the one copy's torch threads use every core), metrics under the `quarry_clip` namespace, and the accelerator
resource hint on the inference step only. Scores are plain floats in [-1, 1];
NaN marks image bytes that did not decode (see `quarry.operators.clip`).
Keys pass through untouched, so they can be any picklable value.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions


def _import_run_inference():
    """Beam's RunInference module without torch.

    `apache_beam.ml.inference.base` imports its optional ModelManager (for
    `use_model_manager`, which quarry does not use) inside `try/except
    ImportError`, and that module imports torch and scipy at its top: ~210 MiB
    in every process that merely builds or runs a RunInference step (the
    pipeline's driver, every SDK process that only proxies to a shared model).
    Here that one import fails, so Beam takes its own fallback (ModelManager =
    None; Beam imports it lazily where `use_model_manager` asks for it);
    `resource`, imported in the same `try`, is put back. Only the process that
    loads the model imports torch (through open_clip).
    """
    import importlib.abc
    import sys

    if "apache_beam.ml.inference.base" in sys.modules:
        return sys.modules["apache_beam.ml.inference.base"]

    class _Defer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "apache_beam.ml.inference.model_manager":
                raise ImportError("deferred by quarry.pipelines.clip (imports torch)")
            return None

    defer = _Defer()
    sys.meta_path.insert(0, defer)
    try:
        from apache_beam.ml.inference import base
    finally:
        sys.meta_path.remove(defer)
    if getattr(base, "resource", None) is None:
        try:
            import resource
        except ImportError:  # not POSIX
            resource = None
        base.resource = resource
    return base


_base = _import_run_inference()
KeyedModelHandler, ModelHandler, RunInference = _base.KeyedModelHandler, _base.ModelHandler, _base.RunInference

from quarry.operators.clip import ClipScorer
from quarry.pipelines.spill import MALLOC_ARENAS
from quarry.schemas.caption import ClipConfig

# Beam's accelerator resource hint: `clip.accelerator` (off unless set), on the
# inference step only, and only when `clip.device` is not `cpu`. Dataflow reads
# it (GPU type and count, and whether to install the NVIDIA driver on the
# worker); the DirectRunner, Spark and Flink ignore it. Dataflow GPUs also need
# Runner v2 and a worker image with CUDA torch.

METRICS_NAMESPACE = "quarry_clip"

Example = tuple[bytes, str]  # (image bytes, caption)


class ClipModelHandler(ModelHandler[Example, float, ClipScorer]):
    """RunInference handler: (image bytes, caption) batches -> CLIP scores.

    Pickles as the config; the model is built in `load_model` on the worker.
    """

    def __init__(self, cfg: ClipConfig, accelerator: Optional[str] = None,
                 processes_per_machine: Optional[int] = None, setting: str = "clip"):
        super().__init__()
        ClipScorer(cfg)  # validate the config now, at pipeline construction
        self._cfg = cfg
        self._setting = setting  # the config section the model comes from, for load errors (clip.by_lang.zh)
        self._accelerator = accelerator or cfg.accelerator  # an argument wins over the config
        self._processes = processes_per_machine

    @property
    def shared(self) -> bool:
        """One model per machine: as configured, else unless the runner runs this step in one process."""
        return self._cfg.share_model if self._cfg.share_model is not None else self._processes != 1

    def copies_on_machine(self) -> int:
        return 1 if self.shared else (self._processes or 1)

    def with_processes(self, processes_per_machine: Optional[int]) -> "ClipModelHandler":
        """This handler for a runner that runs `processes_per_machine` SDK processes per machine (None: unknown)."""
        clone = copy.copy(self)
        clone._processes = processes_per_machine
        return clone

    def load_model(self) -> ClipScorer:
        return ClipScorer(self._cfg, self.copies_on_machine(), self._setting).load()

    def run_inference(
        self, batch: Sequence[Example], model: ClipScorer, inference_args: Optional[dict[str, Any]] = None
    ) -> Iterable[float]:
        scores = model.score_bytes_batch(batch)
        undecodable = sum(s != s for s in scores)  # NaN != NaN
        if undecodable:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "undecodable_images").inc(undecodable)
        return scores

    def get_num_bytes(self, batch: Sequence[Example]) -> int:
        # The default pickles the whole batch (megabytes of image bytes) just to measure it.
        return sum(len(image) + len(caption) for image, caption in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self._cfg.min_batch_size, "max_batch_size": self._cfg.max_batch_size}

    def share_model_across_processes(self) -> bool:
        return self.shared

    def get_resource_hints(self) -> dict[str, Any]:
        # RunInference puts these on its inference ParDo only (not on batching).
        # `auto` counts as GPU: it is what a GPU worker should run.
        if self._cfg.device == "cpu" or not self._accelerator:
            return {}
        return {"accelerator": self._accelerator}

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        if inference_args:
            raise ValueError(f"ClipModelHandler takes no inference_args, got {sorted(inference_args)}")


class ScoreClip(beam.PTransform):
    """PCollection[(key, (image_bytes, caption))] -> PCollection[(key, float score)].

    One output per input, same key; NaN for undecodable bytes. Decide with
    `quarry.operators.clip.decide(score, cfg.threshold, label)` downstream.
    `model_handler` replaces the handler built from `cfg` (to instrument it, as
    the benchmark does); batching and hints then come from it.
    """

    def __init__(
        self,
        cfg: ClipConfig,
        accelerator: Optional[str] = None,
        model_handler: Optional[ClipModelHandler] = None,
        setting: str = "clip",
    ):
        super().__init__()
        self._handler = model_handler or ClipModelHandler(cfg, accelerator, setting=setting)

    def expand(self, pairs):
        options = pairs.pipeline.options
        processes = processes_per_machine(options)
        handler = self._handler.with_processes(processes)
        if processes and processes > 1:
            # The DirectRunner's SDK processes are children of this one and read MALLOC_ARENA_MAX at start:
            # glibc otherwise gives each thread of the process that serves the model its own heap arena (up
            # to 8 per core), where freed activation buffers stay resident (measured: ~140 MiB of a 2-process
            # caption run's summed RSS). A value the user set wins.
            os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
        if options is not None:
            # Workers import this module before they unpickle any step (Beam's --beam_plugin), so that
            # unpickling RunInference there finds its module already imported without torch.
            setup = options.view_as(SetupOptions)
            setup.beam_plugins = sorted({*(setup.beam_plugins or []), __name__})
        return pairs | "ClipRunInference" >> RunInference(KeyedModelHandler(handler))


_DIRECT_RUNNERS = {"DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner"}


def processes_per_machine(options: Optional[PipelineOptions]) -> Optional[int]:
    """How many SDK processes of one machine run a step, where the runner's options say: the DirectRunner
    in memory or with threads 1, with multi_processing its `direct_num_workers` (0: one per core); None for
    any other runner (Dataflow runs one process per vCPU, portable runners as their environment says)."""
    if options is None:
        return 1
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else getattr(runner, "__name__", type(runner).__name__)
    if name is not None and name.split(".")[-1] not in _DIRECT_RUNNERS and name.lower() != "direct":
        return None
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return 1
    return direct.direct_num_workers or os.cpu_count() or 1
