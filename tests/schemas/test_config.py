"""Configs: YAML + --set, with one clear line for every mistake."""

from __future__ import annotations

import pytest

from quarry.schemas.caption import CaptionConfig
from quarry.schemas.config import ConfigError, load_config, parse_sets


def test_sets_parse_values_as_yaml():
    assert parse_sets(["clip.enabled=false", "balance.t=5", "source=laion", "clip.threshold=0.25"]) == {
        "clip": {"enabled": False, "threshold": 0.25}, "balance": {"t": 5}, "source": "laion"}


def test_yaml_then_sets_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("clip:\n  threshold: 0.28\n  model: ViT-L-14\nbalance:\n  t: 100\n")
    cfg = load_config(CaptionConfig, f, ["balance.t=7"])
    assert (cfg.clip.threshold, cfg.clip.model, cfg.balance.t) == (0.28, "ViT-L-14", 7)
    assert cfg.heuristics.min_side == 200  # defaults stay


@pytest.mark.parametrize("sets, message", [
    (["clip.treshold=0.3"], "unknown key 'clip.treshold'"),
    (["balance.t=many"], "balance.t: Input should be a valid integer"),
    (["clip.threshold=2"], "clip.threshold: Input should be less than or equal to 1"),
    (["clip"], "expected key=value"),
    (["clip.model.name=x"], "clip.model"),
])
def test_bad_values_are_one_clear_line(sets, message):
    with pytest.raises(ConfigError) as e:
        load_config(CaptionConfig, None, sets)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_config(CaptionConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("clip: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(CaptionConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(CaptionConfig, bad)
