"""Text lines from pictures: one interface, two PP-OCR engines.

    engine = make_engine(OcrEngineConfig())     # validated, nothing loaded yet
    engine.load()                               # models into memory (once per worker)
    lines = engine.read_batch([rgb_array, ...]) # -> list[list[OcrLine]]

- `rapidocr` (default): the PP-OCR detection, direction-classifier and
  recognition models as ONNX files shipped inside the rapidocr wheel, run by
  onnxruntime. Works offline; the models cover Chinese and English.
- `paddleocr`: PaddleOCR 3 (optional extra `quarry[paddle]`) on local model
  directories (`inference.yml` + weights), the way PaddleOCR runs on a GPU.
  PaddleOCR's default model download needs a model hub this project cannot
  reach, so the directories are required, and a missing package or directory
  fails at `preflight()` with what to install or where to put the models.

Both engines get an RGB uint8 array and return lines with a quadrilateral (4
corners, clockwise from top-left, pixels of that array) and a confidence.
Huge pictures never reach an engine whole: `fit_for_ocr` downscales them to
`max_side` (after `decode_image` has refused decompression bombs by their
header), and the caller maps boxes back with the returned scale.
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from quarry.schemas.ocr_search import OcrEngineConfig


class OcrLoadError(RuntimeError):
    """An engine or its models cannot be loaded; the message says what to provide."""


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: text, confidence, and its quadrilateral in pixels."""

    text: str
    score: float
    quad: tuple[float, ...]  # x1,y1,x2,y2,x3,y3,x4,y4: top-left, top-right, bottom-right, bottom-left

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = self.quad[0::2], self.quad[1::2]
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def height(self) -> float:
        """Text height: the mean length of the quad's left and right edges (right for rotated lines too)."""
        q = self.quad
        left = math.dist((q[0], q[1]), (q[6], q[7]))
        right = math.dist((q[2], q[3]), (q[4], q[5]))
        return (left + right) / 2

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> "OcrLine":
        """The line in another pixel grid: (x * factor + dx, y * factor + dy)."""
        q = tuple(v * factor + (dx if i % 2 == 0 else dy) for i, v in enumerate(self.quad))
        return OcrLine(self.text, self.score, q)


def ocr_scale(width: int, height: int, max_side: int, min_short_side: int = 0, max_upscale: float = 1.0) -> float:
    """Scale for OCR: long side within `max_side`; small pictures up towards `min_short_side` (<= max_upscale)."""
    down = max_side / max(width, height)
    up = min(max_upscale, min_short_side / min(width, height)) if min_short_side else 1.0
    return min(down, max(1.0, up))


def fit_for_ocr(image: Image.Image, max_side: int, min_short_side: int = 0,
                max_upscale: float = 1.0) -> tuple[np.ndarray, float]:
    """RGB array sized by `ocr_scale`, and that scale (array px / original px)."""
    w, h = image.size
    scale = ocr_scale(w, h, max_side, min_short_side, max_upscale)
    if scale != 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return arr, scale


def _quad(points: Any) -> tuple[float, ...]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) != 4:  # a polygon: fall back to its bounding rectangle
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return tuple(round(float(v), 2) for v in pts.reshape(-1))


class OcrEngine(abc.ABC):
    """What every engine provides. Subclasses validate config in `__init__`, load in `load()`."""

    name = "base"

    def __init__(self, cfg: OcrEngineConfig):
        self.cfg = cfg
        self._model: Any = None

    def preflight(self) -> None:
        """Raise OcrLoadError now if `load()` would fail (missing package or model files)."""

    @abc.abstractmethod
    def models(self) -> dict[str, str]:
        """Which models run, for the manifest."""

    def label(self) -> str:
        m = self.models()
        return f"{self.name}/{m.get('det', '?')}/{m.get('rec', '?')}"

    @abc.abstractmethod
    def load(self) -> "OcrEngine":
        """Load the models once (a worker calls it in setup); returns self."""

    @abc.abstractmethod
    def read(self, image: np.ndarray) -> list[OcrLine]:
        """The text lines of one RGB picture."""

    def read_batch(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        return [self.read(im) for im in images]


def _rapidocr_root() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent


class RapidOcrEngine(OcrEngine):
    """PP-OCR through rapidocr's onnxruntime engine, models from the wheel unless given."""

    name = "rapidocr"

    def _params(self) -> dict[str, Any]:
        cfg = self.cfg
        p: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.use_cls": cfg.use_angle_cls,
            "Global.max_side_len": max(cfg.max_side, cfg.det_limit_side_len),
            "Global.text_score": 0.3,  # low floor: the DAG's own text filter decides what is valid
            "Det.limit_side_len": cfg.det_limit_side_len,
            "Det.limit_type": cfg.det_limit_type,
        }
        if cfg.det_model:
            p["Det.model_path"] = cfg.det_model
        if cfg.rec_model:
            p["Rec.model_path"] = cfg.rec_model
        if cfg.rec_keys:
            p["Rec.rec_keys_path"] = cfg.rec_keys
        if cfg.threads:
            p["EngineConfig.onnxruntime.intra_op_num_threads"] = cfg.threads
            p["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        if cfg.device.startswith("gpu"):
            p["EngineConfig.onnxruntime.use_cuda"] = True
            if ":" in cfg.device:
                p["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = int(cfg.device.split(":", 1)[1])
        return p

    def preflight(self) -> None:
        try:
            import rapidocr  # noqa: F401
        except ImportError as e:
            raise OcrLoadError(f"ocr.engine=rapidocr needs the rapidocr package ({e}); pip install rapidocr") from None
        for key, path in (("ocr.det_model", self.cfg.det_model), ("ocr.rec_model", self.cfg.rec_model),
                          ("ocr.rec_keys", self.cfg.rec_keys)):
            if path and not Path(path).is_file():
                raise OcrLoadError(f"{key}: no file {path} (give an .onnx model file, or unset it for the "
                                   "PP-OCR models shipped in the rapidocr wheel)")
        if not self.cfg.det_model or not self.cfg.rec_model:
            shipped = sorted(p.name for p in (_rapidocr_root() / "models").glob("*.onnx"))
            models = self.models()
            wanted = [models[k] for k, given in (("det", self.cfg.det_model), ("rec", self.cfg.rec_model)) if not given]
            missing = [m for m in wanted if not any(name.startswith(m) for name in shipped)]
            if missing:
                raise OcrLoadError(f"rapidocr's wheel lacks {missing} (it has {shipped}) and cannot download them "
                                   "here; give ocr.det_model / ocr.rec_model as local .onnx files")

    def models(self) -> dict[str, str]:
        from rapidocr import RapidOCR

        cfg = RapidOCR(params=self._params()).cfg  # config only: models load on first use
        out = {}
        for key, section in (("det", cfg.Det), ("rec", cfg.Rec), ("cls", cfg.Cls)):
            if key == "cls" and not self.cfg.use_angle_cls:
                continue
            given = section.model_path
            if given:
                out[key] = Path(str(given)).name
            else:
                out[key] = f"{section.ocr_version.value}_{key}_{section.model_type.value}"  # rapidocr's naming
        out["runtime"] = "onnxruntime"
        return out

    def rec_model_path(self) -> Path:
        if self.cfg.rec_model:
            return Path(self.cfg.rec_model)
        stem = self.models()["rec"]
        return next(p for p in sorted((_rapidocr_root() / "models").glob("*.onnx")) if p.name.startswith(stem))

    def charset(self) -> str:
        """The characters the recogniser can output (`ocr.rec_keys`, or the ONNX model's own dictionary)."""
        if self.cfg.rec_keys:
            return "".join(Path(self.cfg.rec_keys).read_text(encoding="utf-8").split("\n"))
        import onnxruntime

        session = onnxruntime.InferenceSession(str(self.rec_model_path()), providers=["CPUExecutionProvider"])
        return "".join(session.get_modelmeta().custom_metadata_map.get("character", "").split("\n"))

    def load(self) -> "RapidOcrEngine":
        if self._model is None:
            self.preflight()
            from rapidocr import RapidOCR

            self._model = RapidOCR(params=self._params())
        return self

    def read(self, image: np.ndarray) -> list[OcrLine]:
        if self._model is None:
            self.load()
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # rapidocr takes arrays as OpenCV BGR
        out = self._model(bgr)
        if out.boxes is None or out.txts is None:
            return []
        return [OcrLine(str(t), float(s), _quad(b)) for b, t, s in zip(out.boxes, out.txts, out.scores)]


class PaddleOcrEngine(OcrEngine):
    """PaddleOCR 3 pointed at local model directories (GPU when `device=gpu`)."""

    name = "paddleocr"

    def preflight(self) -> None:
        try:
            import paddleocr  # noqa: F401
        except ImportError:
            raise OcrLoadError(
                "ocr.engine=paddleocr needs PaddleOCR and PaddlePaddle, which are not installed: "
                "pip install 'quarry[paddle]' (paddleocr + paddlepaddle, or paddlepaddle-gpu for GPUs), "
                "or use the offline default ocr.engine=rapidocr") from None
        for key, path in (("ocr.det_model", self.cfg.det_model), ("ocr.rec_model", self.cfg.rec_model)):
            if not path:
                raise OcrLoadError(
                    f"{key} is required with ocr.engine=paddleocr: a local PP-OCR model directory "
                    "(inference.yml + inference.json/pdiparams), e.g. PP-OCRv5_server_det exported by PaddleX; "
                    "PaddleOCR's own download needs a model hub that is not reachable here")
            if not (Path(path) / "inference.yml").is_file():
                raise OcrLoadError(f"{key}: {path} is not a PaddleOCR model directory (no inference.yml)")

    def models(self) -> dict[str, str]:
        out = {"runtime": "paddle"}
        for key, name, path in (("det", self.cfg.det_model_name, self.cfg.det_model),
                                ("rec", self.cfg.rec_model_name, self.cfg.rec_model)):
            out[key] = name or (Path(path).name if path else "?")
        return out

    def load(self) -> "PaddleOcrEngine":
        if self._model is None:
            self.preflight()
            os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")  # no hub probing offline
            from paddleocr import PaddleOCR

            cfg = self.cfg
            kwargs: dict[str, Any] = {
                "text_detection_model_dir": cfg.det_model,
                "text_recognition_model_dir": cfg.rec_model,
                "use_doc_orientation_classify": False,
                "use_doc_unwarping": False,
                "use_textline_orientation": False,  # its classifier would need a third model directory
                "text_det_limit_side_len": cfg.det_limit_side_len,
                "text_det_limit_type": cfg.det_limit_type,
                "device": cfg.device,
            }
            if cfg.det_model_name:
                kwargs["text_detection_model_name"] = cfg.det_model_name
            if cfg.rec_model_name:
                kwargs["text_recognition_model_name"] = cfg.rec_model_name
            if cfg.threads:
                kwargs["cpu_threads"] = cfg.threads
            self._model = PaddleOCR(**kwargs)
        return self

    def read_batch(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        if self._model is None:
            self.load()
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]  # Paddle, like OpenCV, takes BGR arrays
        results = self._model.predict(bgr)
        out = []
        for res in results:
            texts, scores, polys = res["rec_texts"], res["rec_scores"], res["rec_polys"]
            out.append([OcrLine(str(t), float(s), _quad(p)) for t, s, p in zip(texts, scores, polys)])
        return out

    def read(self, image: np.ndarray) -> list[OcrLine]:
        return self.read_batch([image])[0]


ENGINES: dict[str, type[OcrEngine]] = {"rapidocr": RapidOcrEngine, "paddleocr": PaddleOcrEngine}


def make_engine(cfg: OcrEngineConfig) -> OcrEngine:
    return ENGINES[cfg.engine](cfg)


def describe(cfg: OcrEngineConfig) -> dict[str, Any]:
    """Engine and models for the manifest (`BuildInfo.extra["ocr"]`)."""
    engine = make_engine(cfg)
    info: dict[str, Any] = {"engine": engine.name, "models": engine.models(), "device": cfg.device}
    import importlib.metadata as md

    for pkg in ("rapidocr", "onnxruntime") if engine.name == "rapidocr" else ("paddleocr", "paddlepaddle"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return info


__all__ = ["OcrEngine", "OcrLine", "OcrLoadError", "PaddleOcrEngine", "RapidOcrEngine", "describe",
           "fit_for_ocr", "make_engine"]
