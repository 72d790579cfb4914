"""The torchvision shim (operators/compat.py): repairs the CPU-torch/CUDA-torchvision mix, does nothing elsewhere."""

from __future__ import annotations

import subprocess
import sys

from quarry.operators.clip import TINY_MODEL, import_open_clip
from quarry.operators.compat import ensure_torchvision, nms_reference


def test_torchvision_imports_after_shim():
    ensure_torchvision()
    ensure_torchvision()  # idempotent
    import open_clip
    import torchvision
    import torchvision.transforms  # noqa: F401  (what open_clip needs)

    assert TINY_MODEL in import_open_clip().list_models()
    assert open_clip.get_model_config(TINY_MODEL)["embed_dim"] == 64


def test_nms_matches_torchvision_semantics():
    import torch

    ensure_torchvision()
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # Box 3 wins, suppresses 0 (IoU 1) and 1 (IoU 0.68); box 2 does not overlap.
    assert nms_reference(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms_reference(boxes, scores, 0.7).tolist() == [3, 1, 2]
    assert nms_reference(boxes[:0], scores[:0], 0.5).tolist() == []
    # The registered op: torchvision's kernel where the wheels match, the shim's
    # where they do not (torchvision.ops.nms itself refuses without compiled ops).
    assert torch.ops.torchvision.nms(boxes, scores, 0.5).tolist() == [3, 2]


SHIM_GUARD = """
import importlib.abc, sys, types
import quarry.operators.compat as c

# Matching wheels: torchvision imports, so the shim registers nothing (and never imports torch).
sys.modules["torchvision"] = types.ModuleType("torchvision")
c.ensure_torchvision()
assert c._TV_LIB is None and "torch" not in sys.modules

# Any other import failure is not ours to hide.
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torchvision":
            raise RuntimeError("CUDA driver too old")
del sys.modules["torchvision"]
c._TV_READY = False
sys.meta_path.insert(0, Broken())
try:
    c.ensure_torchvision()
except RuntimeError as e:
    assert "CUDA driver too old" in str(e)
else:
    raise AssertionError("swallowed")
"""


def test_shim_does_nothing_where_torchvision_imports():
    subprocess.run([sys.executable, "-c", SHIM_GUARD], check=True, timeout=60)
