"""Row models of every frame that flows between stages, and the Polars schemas derived from them.

The pydantic models are the single source of truth: `frame_schema(Model)` turns one into the Polars
schema that stages build and check against, so a column is added in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from enum import Enum
from typing import Annotated, Any, Literal, get_args, get_origin

import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

Int32 = Annotated[int, pl.Int32]
"""An int stored as Int32 (the default for a plain `int` is Int64)."""


class Role(str, Enum):
    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"


ROLES: tuple[str, ...] = tuple(r.value for r in Role)
ROLE_DTYPE = pl.Enum(list(ROLES))


class Message(BaseModel):
    """One chat message in TRL's conversational format."""

    model_config = ConfigDict(frozen=True)
    role: str
    content: str


class Turn(BaseModel):
    """TURNS: one row per message of a conversation."""

    conversation_id: str
    turn_index: Int32
    role: Role
    content: str
    timestamp: dt.datetime | None = None
    model: str | None = None
    language: str | None = None
    source_file: str | None = None
    metadata: str | None = Field(None, description="JSON text of the source row's other fields")


class Exchange(BaseModel):
    """EXCHANGES: one row per assistant response, with what came before and after it."""

    exchange_id: str
    conversation_id: str
    response_turn: Int32
    context: list[Message] | None = Field(None, description="every message before the response")
    context_turns: Int32 = Field(0, description="how many messages the context holds (the store keeps this "
                                 "count, and its `exchanges` view cuts the conversation's messages by it)")
    request: str | None = Field(None, description="the last user turn before the response")
    response: str
    feedback: str | None = Field(None, description="the user's next turn")
    followup: str | None = Field(None, description="the assistant's turn after the feedback")
    request_turn: Int32 | None = None
    feedback_turn: Int32 | None = None
    followup_turn: Int32 | None = None
    model: str | None = None
    language: str | None = None
    source_file: str | None = None


class Detection(BaseModel):
    """DETECTIONS (long): one row per (exchange, detector)."""

    exchange_id: str
    detector: str
    score: float = Field(ge=0.0, le=1.0, description="P(DSAT)")
    label: bool
    category: str | None = None
    rationale: str | None = None
    detector_version: str


class Verdict(BaseModel):
    """VERDICTS: the fused decision for one exchange."""

    exchange_id: str
    score: float
    label: bool
    polarity: Literal["dsat", "sat", "neutral"]
    category: str | None = None
    detectors: str | None = Field(None, description="comma list of the detectors that voted DSAT")


class DsatRecord(BaseModel):
    """DSAT: one dissatisfying exchange with its verdict and texts, as users query and export it."""

    exchange_id: str
    score: float = Field(description="fused P(DSAT)")
    category: str | None = None
    detectors: str | None = Field(None, description="comma list of the detectors that voted DSAT")
    conversation_id: str
    response_turn: Int32
    request: str | None = None
    response: str
    feedback: str | None = None
    followup: str | None = None
    context: list[Message] = Field(description="every message before the response")
    model: str | None = None
    language: str | None = None
    source_file: str | None = None


class PreferencePair(BaseModel):
    """PAIRS in TRL's conversational preference format, plus provenance."""

    exchange_id: str
    prompt: list[Message]
    chosen: list[Message] | None = None
    rejected: list[Message]
    feedback: str | None = None
    category: str | None = None
    score: float | None = None
    origin: Literal["dsat", "seed"]


class QuarantineRow(BaseModel):
    """An input row that could not be used, and why."""

    source_file: str
    row_number: int = Field(description="0-based row (parquet/json) or line (jsonl) in the file")
    reason: str
    raw: str | None = Field(None, description="the offending input, truncated")


_SCALARS: dict[Any, pl.DataType] = {
    str: pl.String(),
    int: pl.Int64(),
    float: pl.Float64(),
    bool: pl.Boolean(),
    dt.datetime: pl.Datetime("us", "UTC"),
}


def _dtype(annotation: Any) -> pl.DataType:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        for m in meta:
            if isinstance(m, pl.DataType) or (isinstance(m, type) and issubclass(m, pl.DataType)):
                return m() if isinstance(m, type) else m
        return _dtype(base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _dtype(args[0])
    if origin is Literal:
        return pl.String()
    if origin is list:
        return pl.List(_dtype(get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        if annotation is Role:
            return ROLE_DTYPE
        return pl.Enum([m.value for m in annotation])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pl.Struct({name: _field_dtype(f) for name, f in annotation.model_fields.items()})
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no Polars dtype for {annotation!r}")


def _field_dtype(field: FieldInfo) -> pl.DataType:
    # pydantic moves Annotated[...] extras into field.metadata
    for m in field.metadata:
        if isinstance(m, type) and issubclass(m, pl.DataType):
            return m()
        if isinstance(m, pl.DataType):
            return m
    return _dtype(field.annotation)


def frame_schema(model: type[BaseModel]) -> pl.Schema:
    """The Polars schema of a frame whose rows are `model`."""
    return pl.Schema({name: _field_dtype(f) for name, f in model.model_fields.items()})


MESSAGE_DTYPE = _dtype(Message)
TURNS = frame_schema(Turn)
EXCHANGES = frame_schema(Exchange)
DETECTIONS = frame_schema(Detection)
VERDICTS = frame_schema(Verdict)
DSAT = frame_schema(DsatRecord)
PAIRS = frame_schema(PreferencePair)
QUARANTINE = frame_schema(QuarantineRow)


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select and cast `frame` to `schema`; missing optional columns become nulls."""
    cols = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(cols)


def empty(schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
