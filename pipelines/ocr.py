"""OCR under Beam's RunInference.

    PCollection[(key, rgb_array)] -> RunOcr(cfg) -> PCollection[(key, OcrResult)]

`OcrModelHandler` is the engine config plus `load_model` / `run_inference`;
RunInference batches (`BatchElements`, `ocr.min_batch_size`..`max_batch_size`),
loads one engine per worker process (shared by its threads, in the DoFn's
setup), and puts the accelerator hint on the inference step when
`ocr.device` is a GPU. A batch goes to the engine's `read_batch` (PaddleOCR
predicts the batch at once; rapidocr's detector takes one picture at a time
and its recogniser batches the lines of a picture).

One picture that makes the native engine fail does not fail its batch: the
engine is called once more per picture of a failed batch, and a picture that
still fails comes back as `OcrResult(error=...)`, a reject downstream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from quarry.operators.ocr.engine import OcrEngine, OcrLine, make_engine
from quarry.schemas.ocr_search import OcrEngineConfig

METRICS_NAMESPACE = "quarry_ocr"


def _engine_errors() -> tuple[type[BaseException], ...]:
    """What the native engines raise for a picture they cannot process (not programming errors)."""
    # ArithmeticError: rapidocr divides by a zero side for an empty picture.
    errors: list[type[BaseException]] = [ValueError, RuntimeError, MemoryError, ArithmeticError]
    try:
        import cv2

        errors.append(cv2.error)
    except ImportError:  # pragma: no cover - opencv comes with rapidocr
        pass
    try:
        from rapidocr.main import RapidOCRError

        errors.append(RapidOCRError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


_ENGINES: dict[str, OcrEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(cfg: OcrEngineConfig) -> OcrEngine:
    """One loaded engine per process and config.

    Each RunInference step holds its model in its own `shared.Shared` handle, so
    the picture OCR and the crop re-read would load the same models twice per
    worker; this cache makes them share one engine (onnxruntime and Paddle
    predictors take concurrent calls).
    """
    key = cfg.model_dump_json()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = make_engine(cfg).load()
        return engine


@dataclass(frozen=True)
class OcrResult:
    lines: tuple[OcrLine, ...] = ()
    error: Optional[str] = None


class OcrModelHandler(ModelHandler[np.ndarray, OcrResult, OcrEngine]):
    """RunInference handler: RGB arrays -> OCR lines. Pickles as its config; the engine loads on the worker."""

    def __init__(self, cfg: OcrEngineConfig, accelerator: Optional[str] = None):
        super().__init__()
        make_engine(cfg)  # validate now, at pipeline construction
        self._cfg = cfg
        self._accelerator = accelerator or cfg.accelerator  # an argument wins over the config

    def load_model(self) -> OcrEngine:
        return shared_engine(self._cfg)

    def run_inference(self, batch: Sequence[np.ndarray], model: OcrEngine,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[OcrResult]:
        errors = _engine_errors()
        try:
            return [OcrResult(tuple(lines)) for lines in model.read_batch(batch)]
        except errors:
            pass
        out = []
        for image in batch:  # find the picture that failed; the others still get read
            try:
                out.append(OcrResult(tuple(model.read(image))))
            except errors as e:
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, "engine_errors").inc()
                out.append(OcrResult(error=f"{type(e).__name__}: {str(e)[:300]}"))
        return out

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(a.nbytes) for a in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self._cfg.min_batch_size, "max_batch_size": self._cfg.max_batch_size}

    def share_model_across_processes(self) -> bool:
        return self._cfg.share_model

    def get_resource_hints(self) -> dict[str, Any]:
        if not self._cfg.device.startswith("gpu") or not self._accelerator:
            return {}
        return {"accelerator": self._accelerator}

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        if inference_args:
            raise ValueError(f"OcrModelHandler takes no inference_args, got {sorted(inference_args)}")


class RunOcr(beam.PTransform):
    """PCollection[(key, rgb uint8 array)] -> PCollection[(key, OcrResult)]; keys pass through."""

    def __init__(self, cfg: OcrEngineConfig, accelerator: Optional[str] = None,
                 model_handler: Optional[OcrModelHandler] = None):
        super().__init__()
        self._handler = model_handler or OcrModelHandler(cfg, accelerator)

    def expand(self, pairs):
        return pairs | "OcrRunInference" >> RunInference(KeyedModelHandler(self._handler))
