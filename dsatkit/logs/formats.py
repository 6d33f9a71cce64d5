"""Log formats: how each is recognised, and how its rows become conversations (C) and messages (M).

Every format is a row of `FORMATS` (data, not code paths). Two front ends apply a format to a batch:
`json_frames` (DuckDB's JSON functions over raw text, which tolerate any mix of types row to row) and
`table_frames` (Polars expressions over a parquet batch, whose types are fixed by the file schema).
Both produce the same two frames, which `normalise.py` validates and turns into TURNS:

  C: one row per conversation: _conv (key in the batch), _row (input row), _bad (row-level problem),
     _n (number of messages), conversation_id, model, language, timestamp, metadata
  M: one row per message: _conv, _row, m_turn (position), m_role (as written), m_content (text, null
     when not text), m_bad (message-level problem), m_timestamp, m_language, m_model, m_metadata
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from dsatkit.errors import InputError
from dsatkit.logs.quarantine import BAD_JSON, BAD_UTF8, NOT_OBJECT
from dsatkit.schema import ROLES


@dataclass(frozen=True)
class Format:
    name: str
    messages: str | None  # the list of messages; None for a flat table (one row per message)
    role: tuple[str, ...]  # role key(s): in each message, or in each row of a flat table
    content: tuple[str, ...]
    ids: tuple[str, ...]  # conversation id key(s); the first one a file has is used
    turn: tuple[str, ...] = ()  # flat tables: the position column, if any
    model: tuple[str, ...] = ("model",)
    language: tuple[str, ...] = ("language",)
    timestamp: tuple[str, ...] = ("timestamp", "created_at", "created", "tstamp")
    signature: tuple[str, ...] = ()  # keys that must all be present for auto-detection


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("openai", "messages", ("role",), ("content",), ("conversation_id", "id"), signature=("messages",)),
        Format("sharegpt", "conversations", ("from",), ("value",), ("id", "conversation_id"),
               signature=("conversations",)),
        Format("wildchat", "conversation", ("role",), ("content",), ("conversation_hash",),
               signature=("conversation", "conversation_hash")),
        Format("lmsys", "conversation", ("role",), ("content",), ("conversation_id",),
               signature=("conversation",)),
        Format("turns", None, ("role", "speaker", "from", "author"), ("content", "text", "message", "value"),
               ("conversation_id", "conv_id", "session_id"), turn=("turn_index", "turn", "position")),
    )
}
"""Tried in this order by auto-detection (WildChat before LMSYS: both have `conversation`)."""

DROPPED = ("openai_moderation", "detoxify_moderation")
"""Bulky per-message moderation scores (WildChat, LMSYS): not kept in `metadata`."""

ROLE_ALIASES: dict[str, str] = {
    **{r: r for r in ROLES},
    "developer": "system",
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "ai": "assistant",
    "function": "tool",
    "ipython": "tool",
    "observation": "tool",
}
"""Source role (lower-cased, stripped) -> canonical role (ShareGPT exports name the assistant `gpt`,
`chatgpt`, `bing`, `bard` or `model`); `ReadConfig.role_aliases` adds more. Anything else is an
unknown role."""

TEXT_PART_TYPES = ("text", "input_text", "output_text")
"""Types of content parts whose `text` is kept; other parts (images, audio, files) are dropped."""


@dataclass(frozen=True)
class Plan:
    """A format resolved against one file's columns/keys: which key plays which part."""

    fmt: Format
    role: str
    content: str
    ids: tuple[str, ...]
    turn: str | None
    model: str | None
    language: str | None
    timestamp: str | None

    @property
    def used(self) -> tuple[str, ...]:
        keys = [self.fmt.messages, self.turn, self.model, self.language, self.timestamp, *self.ids]
        if self.fmt.messages is None:
            keys += [self.role, self.content]
        return tuple(k for k in keys if k) + DROPPED


def _first(candidates: Sequence[str], keys: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in keys), None)


def _matches(fmt: Format, keys: Sequence[str]) -> bool:
    if fmt.messages is not None:
        return all(k in keys for k in fmt.signature)
    return all(_first(group, keys) for group in (fmt.ids, fmt.role, fmt.content))


def plan_for(path: str, keys: Sequence[str], requested: str) -> Plan:
    """Pick the format (auto-detected unless `requested` names one) and resolve it against `keys`."""
    if requested == "auto":
        fmt = next((f for f in FORMATS.values() if _matches(f, keys)), None)
        if fmt is None:
            shown = ", ".join(list(keys)[:12]) or "none"
            raise InputError(
                f"{path}: unrecognised log format (tried {', '.join(FORMATS)}; found keys: {shown})",
                hint="pass --format, or see docs/formats.md for the columns each format needs",
            )
    else:
        fmt = FORMATS[requested]
        if not _matches(fmt, keys):
            need = fmt.signature or ("/".join(fmt.ids), "/".join(fmt.role), "/".join(fmt.content))
            raise InputError(
                f"{path}: not in format {fmt.name} (needs {', '.join(need)}; found: {', '.join(list(keys)[:12])})",
                hint="drop --format to auto-detect, or name the right one",
            )
    if fmt.messages is None:
        role, content = _first(fmt.role, keys), _first(fmt.content, keys)
    else:
        role, content = fmt.role[0], fmt.content[0]
    ids = tuple(k for k in fmt.ids if k in keys)
    if fmt.messages is None:
        ids = ids[:1]
    return Plan(fmt, role, content, ids, _first(fmt.turn, keys), _first(fmt.model, keys),  # type: ignore[arg-type]
                _first(fmt.language, keys), _first(fmt.timestamp, keys))


# ---------------------------------------------------------------- JSON text (DuckDB)
# Each row is parsed twice: `json_keys` (which validates it) and `json_transform` into a struct of the
# keys the plan uses, every value kept as (minified) JSON; each message once more. The helpers below
# then read those small values; a value's type is its first character where that saves a parse.
# Reading keys by path re-parses the whole row for every key (measured: ~2x slower on OpenAI-style
# lines, json_frames 1.1 s against 0.46 s per 50k lines).

def _key(obj: str, key: str) -> str:
    """The field `key` of the struct that `_transform` made of `obj`."""
    return f'{obj}."' + key.replace('"', '""') + '"'


def _transform(obj: str, keys: dict[str, str]) -> str:
    """`obj` parsed into a struct of `keys` (name -> DuckDB type; missing or mistyped -> NULL)."""
    spec = json.dumps(keys).replace("'", "''")
    return f"json_transform({obj}, '{spec}')"


def _scalar_sql(v: str | None) -> str:
    """The JSON value `v` as text if it is a string or a number ('' -> NULL), else NULL."""
    if v is None:
        return "NULL::VARCHAR"
    return f"case when json_type({v}) in ('VARCHAR','BIGINT','UBIGINT','DOUBLE') then nullif({v}->>'$', '') end"


def _ts_sql(v: str | None) -> str:
    """A timestamp from an ISO string or epoch seconds (or milliseconds, when > 1e11)."""
    if v is None:
        return "NULL::TIMESTAMPTZ"
    num = f"try_cast({v}->>'$' as DOUBLE)"
    epoch = f"to_timestamp(case when {num} > 1e11 then {num} / 1000 else {num} end)"
    return (f"case json_type({v}) when 'VARCHAR' then try_cast({v}->>'$' as TIMESTAMPTZ) "
            f"when 'BIGINT' then {epoch} when 'UBIGINT' then {epoch} when 'DOUBLE' then {epoch} end")


def _content_sql(v: str) -> str:
    """Text of a content value: a string as is; a list of parts -> its text parts joined by newlines."""
    types = ", ".join(f"'{t}'" for t in TEXT_PART_TYPES)
    texts = (
        f"list_filter(list_transform(cast({v} as JSON[]), lambda p: "
        f"case when json_type(p) = 'VARCHAR' then p->>'$' "
        f"when json_type(p) = 'OBJECT' and coalesce(p->>'$.type', 'text') in ({types}) "
        f"and json_type(p, '$.text') = 'VARCHAR' then p->>'$.text' end), lambda x: x is not null)"
    )
    # `v` is minified JSON text (json_transform wrote it): its first character says its type
    return (f"case left({v}, 1) when '\"' then {v}->>'$' "
            f"when '[' then case when len({texts}) > 0 then array_to_string({texts}, chr(10)) end end")


def _metadata_sql(obj: str, keys: str, used: Sequence[str]) -> str:
    """The members of object `obj` (whose key list is `keys`) that the plan does not use, as JSON."""
    keep = ", ".join("'" + k.replace("'", "''") + "'" for k in used)
    return (f"case when len(list_filter({keys}, lambda k: k not in ({keep}))) > 0 then "
            f"to_json(map_from_entries(list_filter(map_entries(cast({obj}::JSON as MAP(VARCHAR, JSON))), "
            f"lambda e: e.key not in ({keep})))) end")


def _rows_sql(source: str) -> str:
    """Decode, validate and parse the raw bytes of each row (`_bytes`): (_row, _bad, j, _keys).

    `j` is the row's text when it is a JSON object (else NULL), `_keys` its keys: listing them is
    what validates it, in one parse. `_broken` is the text of a row that does not parse.
    """
    return f"""
      with s as (select _row, try(decode(_bytes)) as _text from {source}),
      k as (
        select _row, _text, try(json_keys(_text)) as _keys
        from s where _text is null or length(_text) > 64 or trim(_text, ' \t\r') <> ''),
      v as (
        select _row, _text, _keys, case
          when _text is null then '{BAD_UTF8}'
          when _keys is null then '{BAD_JSON}'
          when len(_keys) = 0 and json_type(_text) <> 'OBJECT' then '{NOT_OBJECT}' end as _bad
        from k)
      select _row, _bad, case when _bad is null then _text end as j,
        case when _bad is null then _keys end as _keys,
        case when _bad = '{BAD_JSON}' then _text end as _broken from v"""


def json_keys_sample(con: duckdb.DuckDBPyConnection, source: str, limit: int = 1000) -> list[str]:
    """Keys of the first `limit` JSON objects of a batch of raw rows (`_row`, `_bytes`), most frequent first."""
    rows = con.sql(
        f"select k, count(*) n from (select unnest(_keys) k from ({_rows_sql(source)}) "
        f"where j is not null limit {limit}) group by k order by n desc, k"
    ).fetchall()
    return [r[0] for r in rows]


def json_frames(
    con: duckdb.DuckDBPyConnection, source: str, plan: Plan
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Apply `plan` to a batch of raw JSON rows (`_row`, `_bytes`) held by DuckDB relation `source`.

    Returns (C, M) for a conversation format, or (R, None) for a flat table, where R has one row per
    input row (see `flat_frames`). The raw text for quarantine stays in `source`.
    """
    fmt = plan.fmt
    top = [*plan.ids, plan.model, plan.language, plan.timestamp]
    if fmt.messages is None:
        top += [plan.turn, plan.role, plan.content]
    keys = {k: "JSON" for k in top if k is not None}
    if fmt.messages is not None:
        keys[fmt.messages] = "JSON[]"  # not an array: NULL

    def field(key: str | None) -> str | None:
        return None if key is None else _key("s", key)

    common = (f"{_scalar_sql(field(plan.model))} as model, {_scalar_sql(field(plan.language))} as language, "
              f"{_ts_sql(field(plan.timestamp))} as timestamp, {_metadata_sql('j', '_keys', plan.used)} as metadata")
    ids = ", ".join(_scalar_sql(field(k)) for k in plan.ids) or "NULL::VARCHAR"
    rows = f"select _row, _bad, j, _keys, _broken, {_transform('j', keys)} as s from ({_rows_sql(source)})"
    if fmt.messages is not None:
        m_keys = {plan.role: "JSON", plan.content: "JSON", "timestamp": "JSON", "language": "JSON"}
        struct = (
            f"{{_null: m.o is null, m_role: {_key('m.o', plan.role)}->>'$', "
            f"m_content: {_content_sql(_key('m.o', plan.content))}, "
            f"m_timestamp: {_ts_sql(_key('m.o', 'timestamp'))}, m_language: {_scalar_sql(_key('m.o', 'language'))}}}"
        )
        objects = f"case when left(m, 1) = '{{' then {_transform('m', m_keys)} end"  # minified: an object
        query = f"""
          select _row, _row as _conv, _bad, coalesce({ids}) as conversation_id, {common},
            list_transform(list_transform({field(fmt.messages)}, lambda m: {{o: {objects}}}), lambda m: {struct})
              as _msgs
          from ({rows})"""
        out = con.sql(query).pl()
        c, m = _explode(out.drop("_msgs"), out.select("_conv", "_row", "_msgs"))
        return c, m.unnest("_msgs")
    role = field(plan.role)
    # a flat row that does not parse (a line cut short) still names its conversation, as a rule: that
    # conversation has a hole, and is quarantined with it (`flat_to_cm`)
    named = ", ".join(_named_in_broken(k) for k in plan.ids) or "NULL::VARCHAR"
    query = f"""
      select _row, _bad, coalesce({ids}, {named}) as conversation_id,
        {f"try_cast({field(plan.turn)}->>'$' as BIGINT)" if plan.turn else "NULL::BIGINT"} as _turn,
        case when json_type({role}) = 'VARCHAR' then {role}->>'$' end as m_role,
        {_content_sql(_key('s', plan.content))} as m_content, {common}
      from ({rows})"""
    return con.sql(query).pl(), None


def _named_in_broken(key: str) -> str:
    """The string or integer value of top-level `key` as written in a row that does not parse (NULL if
    it is not there whole: an id with escapes, or cut)."""
    name = re.escape(json.dumps(key)).replace("'", "''")
    return (f"coalesce(nullif(regexp_extract(_broken, '{name}\\s*:\\s*\"([^\"\\\\]*)\"', 1), ''), "
            f"nullif(regexp_extract(_broken, '{name}\\s*:\\s*(-?[0-9]+)\\s*[,}}]', 1), ''))")


def _explode(c: pl.DataFrame, msgs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """C (with _n) and M from conversation rows with a `_msgs` list of message structs."""
    c = c.with_columns(_n=msgs["_msgs"].list.len().fill_null(0).cast(pl.Int32))
    m = (
        msgs.with_columns(m_turn=pl.int_ranges(0, pl.col("_msgs").list.len(), dtype=pl.Int32))
        .filter(pl.col("_msgs").list.len() > 0)
        .explode("_msgs", "m_turn")
    )
    return c, m


# ---------------------------------------------------------------- typed tables (Polars)

def _scalar_expr(cols: dict[str, pl.DataType], key: str | None, name: str) -> pl.Expr:
    if key is None or key not in cols:
        return pl.lit(None, pl.String).alias(name)
    dt = cols[key]
    if dt == pl.String or dt.is_numeric() or isinstance(dt, (pl.Categorical, pl.Enum)):
        e = pl.col(key).cast(pl.String)
        return pl.when(e != "").then(e).alias(name)
    return pl.lit(None, pl.String).alias(name)


def _ts_expr(col: pl.Expr, dt: pl.DataType | None, name: str) -> pl.Expr:
    if dt is None:
        return pl.lit(None, pl.Datetime("us", "UTC")).alias(name)
    if isinstance(dt, pl.Datetime):
        e = col.dt.replace_time_zone("UTC") if dt.time_zone is None else col.dt.convert_time_zone("UTC")
        return e.cast(pl.Datetime("us", "UTC")).alias(name)
    if isinstance(dt, pl.Date):
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(name)
    if dt.is_numeric():
        secs = col.cast(pl.Float64)
        secs = pl.when(secs > 1e11).then(secs / 1000).otherwise(secs)
        return (secs * 1e6).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(name)
    if dt == pl.String:
        return col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False).alias(name)
    return pl.lit(None, pl.Datetime("us", "UTC")).alias(name)


def _content_expr(col: pl.Expr, dt: pl.DataType | None) -> pl.Expr:
    """Polars twin of `_content_sql` for a column of known type."""
    if dt == pl.String:
        return col
    if isinstance(dt, pl.List):
        inner = dt.inner
        if inner == pl.String:
            texts = col
        elif isinstance(inner, pl.Struct) and "text" in {f.name for f in inner.fields}:
            el = pl.element().struct
            keep = el.field("text").is_not_null()
            if "type" in {f.name for f in inner.fields}:
                keep = keep & el.field("type").fill_null("text").is_in(TEXT_PART_TYPES)
            texts = col.list.eval(pl.when(keep).then(el.field("text").cast(pl.String)).drop_nulls())
        else:
            return pl.lit(None, pl.String)
        return pl.when(texts.list.len() > 0).then(texts.list.join("\n"))
    return pl.lit(None, pl.String)


def _metadata_expr(cols: dict[str, pl.DataType], used: Sequence[str]) -> pl.Expr:
    rest = [c for c in cols if c not in used and c != "_row"]
    if not rest:
        return pl.lit(None, pl.String).alias("metadata")
    return pl.struct(rest).struct.json_encode().alias("metadata")


def table_frames(df: pl.DataFrame, plan: Plan) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Apply `plan` to a typed batch (with `_row`): (C, M) for a conversation format, (R, None) flat."""
    cols = dict(df.schema)
    fmt = plan.fmt
    ids = [_scalar_expr(cols, k, k) for k in plan.ids]
    common = [
        _scalar_expr(cols, plan.model, "model"),
        _scalar_expr(cols, plan.language, "language"),
        _ts_expr(pl.col(plan.timestamp), cols[plan.timestamp], "timestamp") if plan.timestamp
        else _ts_expr(pl.lit(None), None, "timestamp"),
        _metadata_expr(cols, plan.used),
        (pl.coalesce(ids) if ids else pl.lit(None, pl.String)).alias("conversation_id"),
        pl.lit(None, pl.String).alias("_bad"),
    ]
    if fmt.messages is None:
        r = df.select(
            "_row", *common,
            (pl.col(plan.turn).cast(pl.Int64, strict=False) if plan.turn else pl.lit(None, pl.Int64)).alias("_turn"),
            _scalar_expr(cols, plan.role, "m_role"),
            _content_expr(pl.col(plan.content), cols.get(plan.content)).alias("m_content"),
        )
        return r, None
    mdt = cols[fmt.messages]
    c = df.select("_row", pl.col("_row").alias("_conv"), *common)
    if not isinstance(mdt, pl.List):
        # not a list at all: every row lacks messages
        return c.with_columns(_n=pl.lit(0, pl.Int32)), _empty_m()
    msgs = df.select("_row", pl.col("_row").alias("_conv"), pl.col(fmt.messages).alias("_msgs"))
    inner = mdt.inner
    fields = {f.name: f.dtype for f in inner.fields} if isinstance(inner, pl.Struct) else {}
    c, m = _explode(c, msgs)
    if fields:
        m = m.with_columns(_null=pl.col("_msgs").is_null()).unnest("_msgs")
    else:  # a list of something that is not a message object
        m = m.with_columns(_null=pl.lit(True)).drop("_msgs")
    m = m.select(
        "_conv", "_row", "m_turn", "_null",
        _scalar_expr(fields, plan.role, "m_role"),
        _content_expr(pl.col(plan.content), fields.get(plan.content)).alias("m_content"),
        _ts_expr(pl.col("timestamp"), fields.get("timestamp"), "m_timestamp"),
        (_scalar_expr(fields, "language", "m_language")),
    )
    return c, m


def _empty_m() -> pl.DataFrame:
    return pl.DataFrame(schema={"_conv": pl.Int64, "_row": pl.Int64, "m_turn": pl.Int32, "_null": pl.Boolean,
                                "m_role": pl.String, "m_content": pl.String})
