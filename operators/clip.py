"""CLIP image-text similarity with open_clip, and the keep/drop decision on it.

Scoring and deciding are separate (NeMo Curator's split): `ClipScorer` turns
(image, caption) pairs into cosine similarities in [-1, 1]; `decide` compares
one score with a threshold, so a threshold can change without re-scoring.
GLM-4.5V §3.1 keeps pairs with a CLIP score >= 0.3 (`ClipConfig.threshold`);
that number is only meaningful for a trained model such as ViT-B-32/laion2b.

Weights (`ClipConfig.pretrained`):
- an open_clip tag (`laion2b_s34b_b79k`, `openai`, ...): taken from the
  Hugging Face cache, downloaded if the machine may (not when
  `HF_HUB_OFFLINE=1`: then a tag missing from the cache fails at once instead
  of after ~46 s of retries on a machine without network);
- a local checkpoint file (.pt/.pth/.bin/.safetensors), e.g. open_clip's
  `open_clip_pytorch_model.bin`, loaded into the architecture `model` names
  with that architecture's default preprocessing (a tag may carry its own);
  for OpenAI-trained weights name the `-quickgelu` variant (`ViT-B-32-quickgelu`);
- `none`: random weights (tests, offline demos; scores mean nothing).
Missing weights raise `ClipWeightsMissing`, whose message says how to provide them.

`quarry-tiny` is a tiny architecture registered here for tests and offline
demos (a forward pass over a batch of 32 takes a few ms on CPU; random weights).

Heavy imports (torch, open_clip) happen in `load()`/`preflight()`, so this module
imports cheaply and a `ClipScorer` pickles as its config alone.
"""

from __future__ import annotations

import difflib
import io
import logging
import math
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Optional

from PIL import Image

from quarry.operators.base import Rejection
from quarry.operators.compat import ensure_torchvision
from quarry.operators.decode import to_rgb, upright
from quarry.schemas.caption import ClipConfig
from quarry.schemas.config import ConfigError

log = logging.getLogger(__name__)

BELOW_THRESHOLD = "clip_below_threshold"
UNDECODABLE = "clip_undecodable"
REASONS: tuple[str, ...] = (BELOW_THRESHOLD, UNDECODABLE)

TINY_MODEL = "quarry-tiny"
# A ViT with 4 patches of 32 px and a 2-layer text tower: ~3.5 M parameters,
# 3.2 M of them the token embedding (open_clip's 49,408-entry BPE vocabulary,
# so the real SimpleTokenizer runs). Random weights only; never a real score.
_TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
RANDOM_WEIGHTS = "none"
# The text tower runs on each caption's own tokens only (see `encode_text_trimmed`): a caption's length in
# tokens (to its end-of-text token) rounds up to a multiple of TEXT_BUCKET, and captions of one length run
# together in forward passes of exactly TEXT_ROWS rows, so a score depends on its own pair alone.
TEXT_BUCKET = 8
TEXT_ROWS = 8
CPU_FORWARD_ROWS = 8  # images per image-tower pass on CPU, unless `clip.forward_rows` says otherwise
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_PRECISIONS = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}  # ClipConfig -> open_clip

# What Pillow raises on bad bytes (see quarry.operators.decode, which rejects
# them before CLIP; here it is only a defence).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError,
)


class ClipLoadError(RuntimeError):
    """The CLIP model cannot be built as configured."""


class UnknownClipModel(ClipLoadError):
    """`ClipConfig.model` names no open_clip architecture."""


class ClipWeightsMissing(ClipLoadError):
    """The weights `ClipConfig.pretrained` names are not on this machine and cannot be fetched."""


# --------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------


def import_open_clip():
    """open_clip, with the torchvision shim applied and `quarry-tiny` registered."""
    ensure_torchvision()
    import open_clip
    import open_clip.factory

    if open_clip.get_model_config(TINY_MODEL) is None:
        # open_clip's public add_model_config() only reads JSON files; its
        # registry is this dict (list_models/get_model_config read it, and
        # get_model_config hands out deep copies).
        open_clip.factory._MODEL_CONFIGS[TINY_MODEL] = _TINY_CONFIG
    return open_clip


def _architectures_on_disk() -> Optional[set[str]]:
    """open_clip's architecture names, read from its model_configs/*.json without importing it (or torch);
    None where the package is not laid out so."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    names = {f[:-5] for loc in locations if os.path.isdir(os.path.join(loc, "model_configs"))
             for f in os.listdir(os.path.join(loc, "model_configs")) if f.endswith(".json")}
    return (names | {TINY_MODEL}) if names else None


def _is_checkpoint_path(pretrained: str) -> bool:
    p = pretrained.strip()
    return (
        p.lower().endswith(CHECKPOINT_SUFFIXES)
        or "/" in p
        or os.sep in p
        or p.startswith("~")
        or os.path.exists(p)
    )


def _hf_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.is_offline_mode())


def _tag_cached(open_clip, tag_cfg: dict) -> bool:
    """Whether the checkpoint of a pretrained tag is already on disk (no network)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if tag_cfg.get("file"):
        return os.path.isfile(tag_cfg["file"])
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo_id, filename = os.path.split(hf_hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names)
    url = tag_cfg.get("url", "")
    return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))


def _how_to_provide(model: str, setting: str = "clip") -> str:
    """How to give `model` its weights; `setting` is the config section that names them (`clip`,
    `clip.by_lang.zh`)."""
    return (
        f"Provide the weights locally: download {model}'s open_clip checkpoint on a machine with network "
        f"and pass the file, e.g. `--set {setting}.pretrained=/path/to/open_clip_pytorch_model.bin`; or "
        f"pre-populate the Hugging Face cache ($HF_HOME) with the tag's repository and set HF_HUB_OFFLINE=1; "
        f"or `--set {setting}.pretrained=none` for random weights (tests only: scores mean nothing)."
    )


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def torch_threads(configured: int, copies_on_machine: int) -> int:
    """torch intra-op threads for a process holding one of `copies_on_machine` models: `configured` when
    set (> 0), else this process's cores divided among the copies (at least 1)."""
    if configured > 0:
        return configured
    return max(1, usable_cores() // max(1, copies_on_machine))


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------


def image_for_clip(data: bytes, size: int) -> Image.Image:
    """Decode image bytes into an upright RGB picture just large enough for CLIP.

    JPEG decodes at a reduced DCT scale (`Image.draft`) that still leaves both
    sides >= `size`, which is what CLIP's resize-shortest-side + centre-crop
    needs; a 4000 px photo then costs a fraction of a full decode. Orientation
    and transparency follow `quarry.operators.decode` (EXIF orientation applied,
    unreadable EXIF ignored; alpha composited on white), so CLIP sees the picture
    the decode stage judged. Raises Pillow's errors on bad bytes.
    """
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", (size, size))
    im.load()  # decode now, so bad data raises here and not inside a batch
    return to_rgb(upright(im))


# --------------------------------------------------------------------------
# scoring and deciding
# --------------------------------------------------------------------------


def clip_thumbnail(img: Image.Image, side: int, quality: int = 90) -> bytes:
    """The RGB picture as a JPEG whose shorter side is at most `side`: what CLIP scores.

    CLIP resizes the shorter side to its input size (224 or 336) anyway, so a
    copy at that size scores the same picture while a pipeline carries a few
    kilobytes per sample instead of the original file.
    """
    short = min(img.size)
    if short > side:
        scale = side / short
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def text_trimmable(model) -> bool:
    """Whether `encode_text_trimmed` gives `model.encode_text`'s embeddings on tokens cut after their end token.

    True for open_clip's `CLIP` (the OpenAI-style text tower): a causal attention mask, so a position
    sees only those before it, and the pooled feature is the end-of-text token's (`argmax`, `eos`);
    the padding after that token then changes nothing. Not for towers that attend both ways, pool
    the last or first position (SigLIP), add a class token, or come from Hugging Face (CustomTextCLIP).
    """
    import torch
    from open_clip.model import CLIP

    mask = getattr(model, "attn_mask", None)
    pos = getattr(model, "positional_embedding", None)
    ctx = getattr(model, "context_length", None)
    if type(model) is not CLIP or mask is None or pos is None or not ctx:
        return False
    if getattr(model, "text_pool_type", None) not in ("argmax", "eos") or pos.shape[0] != ctx:
        return False
    causal = torch.full((ctx, ctx), float("-inf")).triu_(1)
    return tuple(mask.shape) == (ctx, ctx) and bool(torch.equal(mask.float().cpu(), causal))


def text_lengths(tokens, pool_type: str, eos_id: Optional[int]) -> list[int]:
    """Per row, the positions up to and including the one the text tower pools (the end-of-text token)."""

    if pool_type == "eos":
        last = (tokens == eos_id).int().argmax(dim=-1)
    else:  # argmax: open_clip's SimpleTokenizer gives the end token the highest id
        last = tokens.argmax(dim=-1)
    return (last + 1).tolist()


def encode_text_trimmed(model, tokens):
    """`model.encode_text(tokens)` for tokens cut to length L <= context_length (see `text_trimmable`).

    open_clip's own encode_text adds the whole positional embedding and mask (77 positions); here both
    are cut to L. Captions of ~15 tokens then cost the text tower a fifth of 77 tokens' work.
    """
    from open_clip.transformer import text_global_pool
    from torch import nn

    n = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:n].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return x


def decide(score: float, threshold: float, model: str = "") -> Optional[Rejection]:
    """Keep (None) when `score >= threshold`; else `clip_below_threshold`.

    A NaN score (image bytes that did not decode, see `ClipScorer.score_bytes_batch`)
    is `clip_undecodable`. `model` (e.g. `ViT-B-32/laion2b_s34b_b79k`) goes in the
    detail, since a threshold only means something for one model.
    """
    suffix = f" ({model})" if model else ""
    if math.isnan(score):
        return Rejection(UNDECODABLE, f"image bytes could not be decoded for CLIP{suffix}")
    if score >= threshold:
        return None
    return Rejection(BELOW_THRESHOLD, f"score={score:.3f} < {threshold:g}{suffix}")


class ClipScorer:
    """Cosine similarity of CLIP image and text embeddings, per (image, caption) pair.

    Construction validates the config and loads nothing; `load()` builds the
    model once (per process). Pickles as its config: a loaded scorer unpickles
    unloaded. `copies_on_machine` is how many processes of this machine hold a
    model (one when they share it): `load()` gives torch the cores this process
    may use divided by it (`clip.threads` overrides), so that two processes of
    two threads each do not fight over two cores. `setting` is the config section the model comes from
    (`clip`, or `clip.by_lang.zh` for a language's model): error messages name its keys.
    """

    def __init__(self, cfg: ClipConfig, copies_on_machine: int = 1, setting: str = "clip"):
        if not isinstance(cfg, ClipConfig):
            raise TypeError(f"ClipScorer takes a ClipConfig, got {type(cfg).__name__}")
        if not cfg.model.strip():
            raise ConfigError("clip.model is empty; e.g. ViT-B-32")
        if not cfg.pretrained.strip():
            raise ConfigError("clip.pretrained is empty; give an open_clip tag, a checkpoint path, or `none`")
        if not _DEVICE_PATTERN.match(cfg.device):
            raise ConfigError(f"clip.device={cfg.device!r}: expected auto, cpu, cuda or cuda:N")
        if cfg.device == "cpu" and cfg.precision == "fp16":
            raise ConfigError("clip.precision=fp16 needs a GPU; on cpu use fp32 (or bf16)")
        if cfg.min_batch_size > cfg.max_batch_size:
            raise ConfigError(
                f"clip.min_batch_size={cfg.min_batch_size} > clip.max_batch_size={cfg.max_batch_size}"
            )
        if copies_on_machine < 1:
            raise ValueError(f"copies_on_machine={copies_on_machine}: at least 1")
        self.cfg = cfg
        self.copies_on_machine = copies_on_machine
        self.setting = setting
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._run_lock = threading.Lock()  # one forward pass at a time (a shared model serves many processes)
        self._trim = False
        self._rows = 0
        self._model = None
        self._preprocess = None
        self._tokenizer = None
        self._device = None
        self._precision: Optional[str] = None
        self._input_dtype = None
        self._image_size: Optional[int] = None
        self._threads = 0

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "copies_on_machine": self.copies_on_machine, "setting": self.setting}

    def __setstate__(self, state: dict) -> None:
        self.cfg = state["cfg"]
        self.copies_on_machine = state.get("copies_on_machine", 1)
        self.setting = state.get("setting", "clip")
        self._lock = threading.Lock()
        self._reset()

    # ---- identity

    @property
    def random_weights(self) -> bool:
        return self.cfg.pretrained.strip().lower() == RANDOM_WEIGHTS

    @property
    def label(self) -> str:
        """`model/pretrained`, as it appears in rejection details."""
        return f"{self.cfg.model}/{self.cfg.pretrained}"

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about the model.

        Device and precision are the resolved ones once loaded (`cpu`, `fp32`),
        the configured ones before (`auto` on a driver says nothing about workers).
        """
        loaded = self.loaded
        return {
            "model": self.cfg.model,
            "pretrained": self.cfg.pretrained,
            "device": str(self._device) if loaded else self.cfg.device,
            "precision": self._precision if loaded else self.cfg.precision,
            "random_weights": self.random_weights,
        }

    def runtime(self) -> dict[str, Any]:
        """How the loaded model runs here: torch threads, images per image-tower pass, trimmed text tower."""
        return {"threads": self._threads, "forward_rows": self._rows, "trimmed_text": self._trim,
                "copies_on_machine": self.copies_on_machine}

    # ---- loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def image_size(self) -> int:
        """Side of CLIP's square input (after load)."""
        if self._image_size is None:
            raise RuntimeError("ClipScorer.load() first")
        return self._image_size

    def _resolve_runtime(self) -> tuple[str, str]:
        import torch

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ClipLoadError(
                f"clip.device={device} but torch {torch.__version__} sees no CUDA device; use auto or cpu"
            )
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if device.startswith("cuda") else "fp32"
        return device, precision

    def preflight(self) -> None:
        """Check, without building the model, that the architecture exists and the
        weights are at hand. Raises UnknownClipModel / ClipWeightsMissing.

        A DAG calls it before starting a pipeline; `load()` calls it too. For
        random weights and checkpoint files it reads open_clip's architecture
        list from its config files and imports neither torch nor open_clip
        (~360 MiB that a pipeline's driver would then hold for the whole run);
        a pretrained tag needs open_clip's tag registry and imports it.
        """
        pretrained = self.cfg.pretrained.strip()
        known = _architectures_on_disk() if self.random_weights or _is_checkpoint_path(pretrained) else None
        if known is None:
            self._resolve_weights(import_open_clip())
            return
        self._check_architecture(self.cfg.model in known, sorted(known))
        if not self.random_weights:
            self._checkpoint_path(pretrained)

    def _check_architecture(self, exists: bool, known: list[str]) -> None:
        model = self.cfg.model
        if not exists:
            close = difflib.get_close_matches(model, known, n=3, cutoff=0.5)
            common = [m for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-SO400M-14-SigLIP", TINY_MODEL) if m in known]
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownClipModel(
                f"{self.setting}.model={model!r} is not an open_clip architecture; {hint}"
                f"known include {', '.join(common)} ({len(known)} in all: open_clip.list_models())"
            )

    def _checkpoint_path(self, pretrained: str) -> str:
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise ClipWeightsMissing(
                f"CLIP weights for {self.cfg.model}: checkpoint file {pretrained!r} does not exist. "
                + _how_to_provide(self.cfg.model, self.setting)
            )
        return path

    def _resolve_weights(self, open_clip) -> tuple[Optional[str], bool]:
        """(`pretrained` argument for open_clip, force_quick_gelu)."""
        model, pretrained = self.cfg.model, self.cfg.pretrained.strip()
        self._check_architecture(open_clip.get_model_config(model) is not None, open_clip.list_models())
        if self.random_weights:
            return None, False
        if _is_checkpoint_path(pretrained):
            return self._checkpoint_path(pretrained), False
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model)
            known = f"known tags for {model}: {', '.join(tags)}" if tags else f"open_clip has no tags for {model}"
            raise ClipWeightsMissing(
                f"CLIP weights for {model}: {pretrained!r} is neither an open_clip tag for {model} nor an "
                f"existing file ({known}). " + _how_to_provide(model, self.setting)
            )
        if not _tag_cached(open_clip, tag_cfg):
            if _hf_offline():
                raise ClipWeightsMissing(
                    f"CLIP weights for {model}/{pretrained} are not in the local cache and HF_HUB_OFFLINE=1 "
                    f"forbids downloading them. " + _how_to_provide(model, self.setting)
                )
            log.info("downloading CLIP weights %s/%s (set HF_HUB_OFFLINE=1 to fail at once where there is "
                     "no network)", model, pretrained)
            try:
                open_clip.download_pretrained(tag_cfg)
            except (OSError, RuntimeError, ValueError) as e:
                raise ClipWeightsMissing(
                    f"CLIP weights for {model}/{pretrained} could not be downloaded ({type(e).__name__}: "
                    f"{str(e)[:300]}). " + _how_to_provide(model, self.setting)
                ) from e
        # OpenAI-trained tags need QuickGELU; the plain architecture names use
        # nn.GELU, and open_clip only warns about the mismatch (scores degrade).
        return pretrained, bool(tag_cfg.get("quick_gelu", False))

    def load(self) -> "ClipScorer":
        """Build model, preprocessing and tokenizer once; returns self. Thread-safe."""
        if self._model is not None:
            return self
        with self._lock:
            if self._model is not None:
                return self
            self._load()
        return self

    def _load(self) -> None:
        import torch

        open_clip = import_open_clip()
        pretrained, quick_gelu = self._resolve_weights(open_clip)
        device, precision = self._resolve_runtime()
        self._threads = torch_threads(self.cfg.threads, self.copies_on_machine)
        if device == "cpu" and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        # Random weights (pretrained=none) come from a fixed seed, without touching
        # the caller's RNG, so every worker process and every rerun scores alike.
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.cfg.model,
                    pretrained=pretrained,
                    precision=_PRECISIONS[precision],
                    device=device,
                    force_quick_gelu=quick_gelu,
                    pretrained_text=False,  # no separate HF text-tower download; CLIP weights cover it
                )
        except RuntimeError as e:
            if pretrained is None or not os.path.isfile(pretrained):
                raise
            raise ClipLoadError(
                f"checkpoint {pretrained!r} does not fit open_clip architecture {self.cfg.model}: {str(e)[:500]}"
            ) from e
        model.eval()
        size = open_clip.get_model_preprocess_cfg(model).get("size", 224)
        self._image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        self._tokenizer = open_clip.get_tokenizer(self.cfg.model)
        self._preprocess = preprocess
        self._device = torch.device(device)
        self._precision = precision
        self._input_dtype = open_clip.get_input_dtype(_PRECISIONS[precision]) or torch.float32
        self._trim = text_trimmable(model)
        self._rows = self.cfg.forward_rows or (self.cfg.max_batch_size if device.startswith("cuda")
                                               else min(CPU_FORWARD_ROWS, self.cfg.max_batch_size))
        self._model = model
        # One tiny forward pass, so the first real batch does not pay for lazy
        # initialisation (CUDA context, kernels, allocator).
        self.score_batch([Image.new("RGB", (self._image_size, self._image_size))], [""])
        log.info("CLIP ready: %s %s", self.describe(), self.runtime())

    # ---- scoring

    def score_batch(self, images: Sequence[Image.Image], captions: Sequence[str]) -> list[float]:
        """Cosine similarity of each image with its caption, in [-1, 1].

        Every forward pass has a fixed shape: the image tower sees exactly
        `forward_rows` images (`clip.forward_rows`; by default 8 on CPU, the
        batch size on a GPU), a shorter chunk padded with copies of its first
        image; the text tower sees `TEXT_ROWS` captions cut to one of a few
        lengths (`encode_text_trimmed`). CPU and GPU kernels pick their
        blocking and threading by shape, so the same pair scored in batches of
        different sizes would differ in the last float bits (measured: 2 torch
        threads, batch 1 vs 2), and batch boundaries differ between runners and
        reruns. With fixed shapes a row's score depends on the row alone, and
        shards are byte-identical. Small passes also keep the padding of a
        short batch (BatchElements' first batches, a bundle's last) small.
        """
        import torch
        import torch.nn.functional as F

        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        if not images:
            return []
        self.load()
        rows = self._rows
        pixels = torch.stack([self._preprocess(im) for im in images])
        tokens = self._tokenizer(list(captions))
        n = len(images)
        with self._run_lock, torch.inference_mode():
            parts = []
            for start in range(0, n, rows):
                chunk = pixels[start:start + rows]
                if len(chunk) < rows:
                    chunk = torch.cat([chunk, chunk[:1].expand(rows - len(chunk), *chunk.shape[1:])])
                chunk = chunk.to(self._device, dtype=self._input_dtype, non_blocking=True)
                parts.append(self._model.encode_image(chunk).float())
            img = F.normalize(torch.cat(parts)[:n], dim=-1)
            txt = F.normalize(self._encode_text(tokens).float(), dim=-1)
            scores = (img * txt).sum(dim=-1).clamp_(-1.0, 1.0)
        return scores.cpu().tolist()

    def _encode_text(self, tokens):
        """Text embeddings of tokenised captions (N x context_length), each from a pass of a fixed shape."""
        import torch

        n, context = tokens.shape
        if not self._trim:  # open_clip's own encode_text over the whole context, `forward_rows` at a time
            parts = []
            for start in range(0, n, self._rows):
                chunk = tokens[start:start + self._rows]
                chunk = torch.cat([chunk, chunk[:1].expand(self._rows - len(chunk), -1)])
                parts.append(self._model.encode_text(chunk.to(self._device)))
            return torch.cat(parts)[:n]
        by_width: dict[int, list[int]] = {}
        for i, length in enumerate(text_lengths(tokens, self._model.text_pool_type, self._model.text_eos_id)):
            by_width.setdefault(min(context, -(-length // TEXT_BUCKET) * TEXT_BUCKET), []).append(i)
        out: list[Any] = [None] * n
        for width, members in sorted(by_width.items()):
            for start in range(0, len(members), TEXT_ROWS):
                part = members[start:start + TEXT_ROWS]
                picked = tokens[part + [part[0]] * (TEXT_ROWS - len(part)), :width]
                emb = encode_text_trimmed(self._model, picked.to(self._device))
                for j, i in enumerate(part):
                    out[i] = emb[j]
        return torch.stack(out)

    def score_bytes_batch(self, items: Sequence[tuple[bytes, str]]) -> list[float]:
        """Scores for (image bytes, caption) pairs, in order.

        Bytes that Pillow cannot decode score NaN (`decide` turns NaN into
        `clip_undecodable`) instead of failing the batch; quarry's decode stage
        rejects such images earlier, so this is a defence, not a path.
        """
        self.load()
        images: list[Image.Image] = []
        captions: list[str] = []
        ok: list[int] = []
        for i, (data, caption) in enumerate(items):
            try:
                images.append(image_for_clip(data, self._image_size))
            except _DECODE_ERRORS:
                continue
            captions.append(caption)
            ok.append(i)
        out = [math.nan] * len(items)
        for i, s in zip(ok, self.score_batch(images, captions)):
            out[i] = s
        return out

    def decide(self, score: float) -> Optional[Rejection]:
        """`decide` with this scorer's threshold and model label."""
        return decide(score, self.cfg.threshold, self.label)
