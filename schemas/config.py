"""Config models shared by every DAG, and loading them from YAML + `--set`.

A DAG's config is one pydantic model (strict: unknown keys are errors). Users
write YAML and override single values on the command line with
`--set a.b=value`; the value is parsed as YAML, so `--set clip.enabled=false`
gives a bool and `--set balance.t=20000` an int.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A config problem, worded as one line a user can act on."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ShardConfig(Section):
    """How output Parquet is laid out (DESIGN: row groups of a few thousand rows,
    shards of a few hundred MB)."""

    max_rows: int = Field(50_000, ge=1, description="rows per shard at most (tables written by WriteShards: rejects, "
                                                    "shared images; caption shards follow input files)")
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="approximate bytes per shard at most (images dominate)"
    )
    row_group_size: int = Field(2_000, ge=1, description="rows per Parquet row group")
    compression: str = Field("zstd", description="Parquet codec: zstd, snappy, gzip, none")


class ReaderConfig(Section):
    """How image-text inputs are read. Column names are auto-detected when unset."""

    image_column: Optional[str] = Field(None, description="Parquet column with image bytes")
    caption_column: Optional[str] = Field(None, description="Parquet/JSONL field with the caption")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1, description="larger image files are rejected")


class DagConfig(Section):
    """Fields every DAG's config has."""

    source: Optional[str] = Field(
        None, description="source tag for the whole input; a `source` field in a record's metadata wins"
    )
    reader: ReaderConfig = ReaderConfig()
    shards: ShardConfig = ShardConfig()


C = TypeVar("C", bound=BaseModel)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set clip.threshold=0.28")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)


def load_config(model: type[C], path: Optional[Path] = None, sets: Optional[list[str]] = None,
                base: Optional[dict[str, Any]] = None) -> C:
    """Build a config from defaults, then `base`, then a YAML file, then `--set`s."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror or e}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        tree = _merge(tree, loaded)
    tree = _merge(tree, parse_sets(sets or []))
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        raise ConfigError(f"{where}: {_one_line(e)}") from None


def annotated_yaml(cfg: BaseModel, indent: int = 0) -> str:
    """The config as YAML with each field's description as a comment (for --show-config)."""
    lines: list[str] = []
    pad = "  " * indent
    for name, info in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        note = f"  # {info.description}" if info.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{note}")
            lines.append(annotated_yaml(value, indent + 1))
        else:
            dumped = yaml.safe_dump(value if not hasattr(value, "value") else value.value,
                                    default_flow_style=True, width=10_000).strip()
            dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{name}: {dumped}{note}")
    return "\n".join(lines)
