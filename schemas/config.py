"""Config models shared by every DAG, and loading them from YAML + `--set`.

A DAG's config is one pydantic model (strict: unknown keys are errors). Users
write YAML and override single values on the command line with
`--set a.b=value`; the value is parsed as YAML, so `--set clip.enabled=false`
gives a bool and `--set balance.t=20000` an int.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Marks a config field naming a file the workers read (`json_schema_extra=SIDE_FILE`): on a remote runner it must
# be a remote path too (dags/runner.py: check_runner_paths).
SIDE_FILE = {"side_file": True}

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
    row_group_size: int = Field(2_000, ge=1, description="rows per Parquet row group at most")
    row_group_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="approximate bytes per row group at most "
                                 "(rows of ~100 KB images: ~640 rows a group, not 200 MB groups)")
    compression: str = Field("zstd", description="Parquet codec: zstd, snappy, gzip, none (encoded image bytes are "
                             "stored uncompressed whatever this says: a second compression saves ~1%)")
    spill: bool = Field(True, description="on a DirectRunner run into a local folder, rows wait for their shard "
                        "on disk (DIR/.quarry/spill, removed at the end) rather than in the runner's memory, so "
                        "memory stays flat as output grows; distributed runners shuffle rows themselves")


class ReaderConfig(Section):
    """How image-text inputs are read. Column names are auto-detected when unset."""

    image_column: Optional[str] = Field(None, description="Parquet column with image bytes")
    caption_column: Optional[str] = Field(None, description="Parquet/JSONL field with the caption")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1, description="larger image files are rejected")


class BenchColumns(Section):
    """Which columns of one benchmark's files hold its text and images (unset: common names)."""

    question: Optional[str] = Field(None, description="question column (default: question, prompt, query, problem)")
    options: Optional[str] = Field(None, description="options column (default: options, choices)")
    answer: Optional[str] = Field(None, description="answer column (default: answer, solution)")
    images: Optional[list[str]] = Field(
        None, description="image columns (default: image, images, image_1..image_N, decoded_image): bytes, a path "
                          "relative to the file, or a {bytes, path} struct")
    id: Optional[str] = Field(None, description="item id column (default: id, question_id, pid, index, idx; else row/line)")


class DecontamSection(Section):
    """Contamination check against benchmark sets (off unless `bench` is set).

    `--set decontam.bench=PATH` switches it on in any DAG; `quarry run decontam`
    runs it over existing shards.
    """

    bench: Optional[list[str]] = Field(
        None, json_schema_extra=SIDE_FILE, description="benchmark files (Parquet/JSONL paths, folders or globs); the benchmark's name is the "
                          "file stem, or its folder's name for split shards like test-00000-of-00001.parquet")
    columns: dict[str, BenchColumns] = Field(
        default_factory=dict, description="benchmark name -> column mapping (unset: common column names)")
    ngram: int = Field(13, ge=1, le=64, description="n-gram length in tokens (13 as in GPT-3's check)")
    min_exact_tokens: int = Field(
        3, ge=1, description="texts shorter than `ngram` tokens are matched whole, if at least this many tokens")
    check_options: bool = Field(True, description="index options and answers too (only those of >= ngram tokens)")
    max_hamming: int = Field(8, ge=0, le=31, description="pHash (64-bit) distance at or under which an image matches")
    action: Literal["drop", "flag"] = Field(
        "drop", description="drop: contaminated rows become rejects; flag: kept, with contamination columns")
    text_fields: Optional[list[str]] = Field(
        None, description="training-row fields to check (default: every text field the DAG names)")
    image_fields: Optional[list[str]] = Field(None, description="training-row image fields to check (default: the DAG's)")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1, description="larger benchmark images are counted as unreadable")

    @field_validator("bench", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        if isinstance(v, str):
            return [p for p in (s.strip() for s in v.split(",")) if p] or None
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.bench)


class DagConfig(Section):
    """Fields every DAG's config has."""

    source: Optional[str] = Field(
        None, description="source tag for the whole input; a `source` field in a record's metadata wins"
    )
    reader: ReaderConfig = ReaderConfig()
    shards: ShardConfig = ShardConfig()
    decontam: DecontamSection = DecontamSection()


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


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the config section at `loc` (a path of field names) takes; [] where it is not a model."""
    for name in loc:
        info = model.model_fields.get(str(name)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if info is None:
            return []
        model = info.annotation
        while typing.get_origin(model) in (typing.Union, types.UnionType, typing.Annotated):
            model = next((a for a in typing.get_args(model) if a is not type(None)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _one_line(err: ValidationError, model: Optional[type[BaseModel]] = None) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), _known_keys(model, e["loc"][:-1]), n=1, cutoff=0.6) \
                if model is not None else []
            hint = f" (did you mean {'.'.join([*map(str, e['loc'][:-1]), close[0]])!r}?)" if close else ""
            parts.append(f"unknown key {loc!r}{hint}")
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
        raise ConfigError(f"{where}: {_one_line(e, model)}") from None


def resolve(model: type[C], config_path: Optional[str], sets: list[str], source: Optional[str]) -> C:
    """A DAG's config as the CLI builds it: defaults, `--source`, the YAML file, then `--set`s."""
    return load_config(model, Path(config_path) if config_path else None, sets, {"source": source} if source else None)


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
