"""Test-wide setup: no network, no writes under the real $HOME."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Libraries cache under $HOME (~/.apache_beam, ~/.cache/huggingface, torch hub);
# keep the suite's writes in a throwaway home and never wait on a hub.
_HOME = tempfile.mkdtemp(prefix="quarry-test-home-")
os.environ["HOME"] = _HOME
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_HOME, ".cache"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TORCH_HOME", os.path.join(_HOME, ".cache", "torch"))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """One `quarry demo` run per test session, shared by the DAG, CLI and notebook tests."""
    from quarry.dags.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--output", str(out)]) == 0
    return out
