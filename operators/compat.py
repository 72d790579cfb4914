"""Compatibility shims for library combinations that do not import as shipped; each does nothing where they do.

torchvision: where a CPU torch sits next to torchvision's CUDA wheel (our build
machines: torch 2.13+cpu, torchvision 0.28 from PyPI), `import torchvision`
fails, and with it timm and open_clip. `ensure_torchvision` repairs that case only.
"""

from __future__ import annotations

import logging
import sys
import threading

log = logging.getLogger(__name__)

_TV_LOCK = threading.Lock()
_TV_READY = False
_TV_LIB = None  # the torch.library fragment; registrations vanish if it is garbage collected
_TV_MISSING_OP = "operator torchvision::nms does not exist"


def ensure_torchvision() -> None:
    """Make `import torchvision` (hence timm, open_clip) work; call before importing open_clip.

    Why: where a CPU torch sits next to torchvision's CUDA wheel (our build
    machines: torch 2.13+cpu, torchvision 0.28 from PyPI), torchvision's
    compiled ops do not load and its import dies registering fake kernels with
    `operator torchvision::nms does not exist`. Only in that case we define the
    `torchvision::nms`/`qnms` schemas with a pure-torch CPU nms and import
    again; open_clip needs only torchvision's transforms. torchvision.io and
    the other compiled ops stay unusable (we decode with Pillow). Where the
    wheels match, the first import succeeds and nothing is registered.
    """
    global _TV_READY, _TV_LIB
    if _TV_READY:
        return
    with _TV_LOCK:
        if _TV_READY:
            return
        try:
            import torchvision  # noqa: F401
        except RuntimeError as e:
            if _TV_MISSING_OP not in str(e):
                raise
            # The failed import left half-initialised submodules behind.
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            _TV_LIB = _register_nms_ops()
            import torchvision  # noqa: F401,F811
            log.info("torchvision's compiled ops are unavailable; registered a pure-torch nms so it imports")
        _TV_READY = True


def nms_reference(dets, scores, iou_threshold: float):
    """Greedy non-maximum suppression, as torchvision's CPU kernel: indices kept, by score."""
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, stable=True, descending=True).indices
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _register_nms_ops():
    import torch

    # FRAGMENT, not DEF: it coexists with other registrations in the namespace.
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            getattr(torch.ops.torchvision, op)
            continue  # someone already defined it
        except (AttributeError, RuntimeError):
            pass
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms_reference, "CPU")
    lib.impl("qnms", lambda d, s, t: nms_reference(d.dequantize(), s.dequantize(), t), "QuantizedCPU")
    return lib
