"""Arrow schemas derived from the pydantic row models, in one place.

A Parquet shard's schema must not depend on which rows happened to land in
it (a shard whose optional column is all null would otherwise get type
`null` and break `read_parquet` unions), so schemas come from the models.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel


@dataclass(frozen=True)
class ArrowType:
    """`Annotated[int, ArrowType(pa.int32())]` overrides the default mapping."""

    type: pa.DataType


_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


# `datasets` recognises an Image column only when the Arrow field equals its
# own (nullable struct of nullable bytes and path), so image cells use exactly that.
_HF_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


def _is_image_cell(tp: Any) -> bool:
    from quarry.schemas.common import ImageCell  # local: common imports this module

    return tp is ImageCell


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) != len(typing.get_args(tp))
    return tp, False


def arrow_type(tp: Any) -> pa.DataType:
    """The Arrow type of one (non-optional) annotation."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *extra = typing.get_args(tp)
        for meta in extra:
            if isinstance(meta, ArrowType):
                return meta.type
        return arrow_type(base)
    tp, _ = _unwrap_optional(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = typing.get_origin(tp)
    if origin is Literal:
        return pa.string()
    if origin in (list, tuple, typing.List, typing.Sequence):
        (item, *rest) = typing.get_args(tp)
        if rest and rest != [Ellipsis]:
            raise TypeError(f"only homogeneous tuples map to Arrow lists, got {tp}")
        return pa.list_(arrow_type(item))
    if origin is dict:
        key, value = typing.get_args(tp)
        return pa.map_(arrow_type(key), arrow_type(value))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return pa.string()
    if _is_image_cell(tp):
        return _HF_IMAGE
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return pa.struct(_fields(tp))
    raise TypeError(f"no Arrow mapping for annotation {tp!r}")


def _fields(model: type[BaseModel]) -> list[pa.Field]:
    out = []
    for name, info in model.model_fields.items():
        ann = _annotation(info)  # pydantic v2 moves Annotated metadata here
        base, optional = _unwrap_optional(info.annotation)
        nullable = optional or not info.is_required() or _is_image_cell(base)
        out.append(pa.field(name, arrow_type(ann), nullable=nullable))
    return out


# The type of the Hive partition columns (`source`, `tier`) inside the shards: what pyarrow infers for the
# `source=<s>/tier=<t>` folders, so `pq.read_table(dir)` and `pd.read_parquet(dir)` merge folder and file
# columns instead of failing on "string vs dictionary"; DuckDB and `datasets` read it as plain strings.
PARTITION_STRING = pa.dictionary(pa.int32(), pa.string())

_HF_VALUE = {
    pa.string(): "string",
    PARTITION_STRING: "string",
    pa.int64(): "int64",
    pa.int32(): "int32",
    pa.float64(): "float64",
    pa.float32(): "float32",
    pa.bool_(): "bool",
    pa.binary(): "binary",
}


def _hf_feature(tp: Any) -> dict[str, Any]:
    """The Hugging Face `datasets` feature (as JSON) of one annotation."""
    tp, _ = _unwrap_optional(tp)
    if typing.get_origin(tp) is typing.Annotated:
        base, *extra = typing.get_args(tp)
        for meta in extra:
            if isinstance(meta, ArrowType):
                return {"dtype": _HF_VALUE[meta.type], "_type": "Value"}
        return _hf_feature(base)
    if _is_image_cell(tp):
        return {"_type": "Image"}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {name: _hf_feature(_annotation(info)) for name, info in tp.model_fields.items()}
    if typing.get_origin(tp) in (list, tuple):
        return {"feature": _hf_feature(typing.get_args(tp)[0]), "_type": "List"}
    return {"dtype": _HF_VALUE[arrow_type(tp)], "_type": "Value"}


def _annotation(info: Any) -> Any:
    ann = info.annotation
    for meta in info.metadata:
        if isinstance(meta, ArrowType):
            return typing.Annotated[ann, meta]
    return ann


@lru_cache(maxsize=None)
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a row model, with Hugging Face features metadata.

    `datasets` reads the `huggingface` key, so `ImageCell` columns load as
    `Image()` features (PIL images) with no glue code.
    """
    features = _hf_feature(model)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema(_fields(model), metadata=meta)
