"""TURNS -> EXCHANGES: one row per assistant response, with what came before and after it.

Rules:
- context: every message before the response, in order (system and tool turns included);
- request: the last user turn before the response;
- feedback: the first user turn after the response, provided no other assistant turn comes first
  (otherwise the user is reacting to that later turn, and this response gets no feedback);
- followup: the first assistant turn after the feedback (the user may add turns in between).

The frame is sorted once by (conversation, turn) and every lookup is a forward/backward fill over
row numbers bounded by the conversation's first and last row: no group-by windows, no Python loop.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from dsatkit.hashing import md5_of
from dsatkit.schema import EXCHANGES, MESSAGE_DTYPE, TURNS, conform

_ROW = pl.col("row")
_CID = pl.col("conversation_id")


_OPENS = (_CID != _CID.shift(1)).fill_null(True)
"""Whether a row of a grouped frame opens its conversation (the frame's first row does)."""
_NEW = pl.col("_new")
"""`_OPENS`, computed once (ids are strings: comparing them is the costly part)."""


def exchange_ids(conversation_id: pl.Series, response_turn: pl.Series) -> pl.Series:
    """The stable id of each exchange: md5 of its conversation id and response turn (the one home of
    that formula)."""
    return md5_of(conversation_id, response_turn).alias("exchange_id")


def _rows_of(role: str, direction: str) -> pl.Expr:
    """Row number of the nearest turn with `role` strictly after ("next") or before ("prev")."""
    marked = pl.when(pl.col("role") == role).then(_ROW)
    if direction == "next":
        found = marked.shift(-1).backward_fill()
        return pl.when(found <= pl.col("conv_end")).then(found)
    found = marked.shift(1).forward_fill()
    return pl.when(found >= pl.col("conv_start")).then(found)


def _grouped(t: pl.DataFrame) -> pl.DataFrame:
    """`t` with `_new` (`_OPENS`), each conversation's turns contiguous and in turn order: as
    `read_logs` yields them (checking is ~10x cheaper than the sort it saves), or sorted."""
    t = t.with_columns(_new=_OPENS)
    turn = pl.col("turn_index")
    # contiguous: no id opens two runs, so the ids at the run starts are all distinct
    found = t.select(ordered=(_NEW | (turn > turn.shift(1))).all(), starts=_NEW.sum(), ids=_CID.filter(_NEW).n_unique())
    if found["ordered"].item() and found["starts"].item() == found["ids"].item():
        return t
    return t.sort("conversation_id", "turn_index").with_columns(_new=_OPENS)


def build_exchanges(turns: pl.DataFrame, context: bool = True) -> pl.DataFrame:
    """The EXCHANGES frame of `turns` (a TURNS frame holding whole conversations).

    With `context=False` the context column stays null (it is the costliest column, and most
    stages never read it); `attach_context` fills it later for the rows that need it.
    """
    t = _grouped(conform(turns, TURNS)).with_columns(row=pl.int_range(pl.len(), dtype=pl.Int64))
    # the first and last row of each row's conversation (a row closes it where the next one opens one)
    t = t.with_columns(
        conv_start=pl.when(_NEW).then(_ROW).forward_fill(),
        conv_end=pl.when(_NEW.shift(-1, fill_value=True)).then(_ROW).backward_fill(),
    )
    t = t.with_columns(
        next_user=_rows_of("user", "next"),
        next_assistant=_rows_of("assistant", "next"),
        request_row=_rows_of("user", "prev"),
    )
    t = t.with_columns(
        feedback_row=pl.when(
            (pl.col("role") == "assistant")
            & pl.col("next_user").is_not_null()
            & (pl.col("next_assistant").is_null() | (pl.col("next_user") < pl.col("next_assistant")))
        ).then(pl.col("next_user"))
    )
    responses = t.filter(pl.col("role") == "assistant")

    def at(column: str, rows: str) -> pl.Series:
        """`column` of all turns at the responses' row numbers (null where those are null)."""
        return t[column].gather(responses[rows])

    responses = responses.with_columns(followup_row=at("next_assistant", "feedback_row"))
    ex = responses.with_columns(
        response=pl.col("content"),
        response_turn=pl.col("turn_index"),
        context_turns=(_ROW - pl.col("conv_start")).cast(pl.Int32),
        request=at("content", "request_row"),
        request_turn=at("turn_index", "request_row"),
        feedback=at("content", "feedback_row"),
        feedback_turn=at("turn_index", "feedback_row"),
        followup=at("content", "followup_row"),
        followup_turn=at("turn_index", "followup_row"),
    )
    ex = ex.with_columns(exchange_ids(ex["conversation_id"], ex["response_turn"]))
    ex = conform(ex, EXCHANGES)
    return attach_context(ex, t) if context else ex


def attach_context(exchanges: pl.DataFrame, turns: pl.DataFrame) -> pl.DataFrame:
    """Fill the `context` column of `exchanges` from the `turns` of their conversations.

    A response's context is the run of rows from its conversation's first turn up to its own, in
    the grouped turns: the messages are gathered by row number and cut into lists at those bounds
    (a group-by of the messages per conversation and a join on the ids cost ~2x as much).
    """
    cid = "conversation_id"
    t = _grouped(turns.join(exchanges.select(cid).unique(), on=cid, how="semi"))
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    bounds = t.select(cid, pl.col("turn_index").alias("response_turn"), _end=row, _start=pl.when(_NEW).then(row).forward_fill())
    x = exchanges.select(cid, "response_turn").join(bounds, on=[cid, "response_turn"], how="left", maintain_order="left")
    found = x["_end"].is_not_null()
    lengths = (x["_end"] - x["_start"]).fill_null(0)
    rows = x.select(pl.int_ranges("_start", "_end")).to_series().explode().drop_nulls()
    messages = t.select(pl.struct(pl.col("role").cast(pl.String), "content").cast(MESSAGE_DTYPE)).to_series()
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths.to_numpy()))), pa.int64())
    values = messages.gather(rows).to_arrow()
    context = pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(~found.to_numpy()))
    return conform(exchanges.with_columns(context=pl.Series("context", context)), EXCHANGES)
