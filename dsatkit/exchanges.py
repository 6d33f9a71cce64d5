"""TURNS -> EXCHANGES: one row per assistant response, with what came before and after it.

Rules (all computed with window expressions over each conversation, no Python loop):
- context: every message before the response, in order (system and tool turns included);
- request: the last user turn before the response;
- feedback: the first user turn after the response, provided no other assistant turn comes first
  (otherwise the user is reacting to that later turn, and this response gets no feedback);
- followup: the first assistant turn after the feedback (the user may add turns in between).
"""

from __future__ import annotations

import polars as pl

from dsatkit.hashing import md5_of
from dsatkit.schema import EXCHANGES, TURNS, conform


def _next_pos_of(role: str) -> pl.Expr:
    """Position of the next turn (strictly after this one) with `role`, within the conversation."""
    return (
        pl.when(pl.col("role") == role)
        .then(pl.col("pos"))
        .shift(-1)
        .backward_fill()
        .over("conversation_id", order_by="pos")
    )


def build_exchanges(turns: pl.DataFrame) -> pl.DataFrame:
    """Build the EXCHANGES frame of `turns` (a TURNS frame holding whole conversations)."""
    t = conform(turns, TURNS).sort("conversation_id", "turn_index")
    t = t.with_columns(
        pos=pl.int_range(pl.len(), dtype=pl.Int32).over("conversation_id"),
        role=pl.col("role").cast(pl.String),
    )
    t = t.with_columns(
        next_user=_next_pos_of("user"),
        next_assistant=_next_pos_of("assistant"),
        request=pl.when(pl.col("role") == "user")
        .then(pl.col("content"))
        .shift(1)
        .forward_fill()
        .over("conversation_id", order_by="pos"),
    )
    # where each response's feedback sits, and (from the feedback row) where its followup sits
    t = t.with_columns(
        feedback_pos=pl.when(
            (pl.col("role") == "assistant")
            & pl.col("next_user").is_not_null()
            & (pl.col("next_assistant").is_null() | (pl.col("next_user") < pl.col("next_assistant")))
        ).then(pl.col("next_user")),
        followup_pos=pl.when(pl.col("role") == "user").then(pl.col("next_assistant")),
    )
    messages = t.group_by("conversation_id").agg(
        pl.struct("role", "content").sort_by("pos").alias("messages")
    )
    by_pos = t.select("conversation_id", "pos", "content", "followup_pos")
    responses = t.filter(pl.col("role") == "assistant")
    ex = (
        responses.join(
            by_pos.rename({"pos": "feedback_pos", "content": "feedback", "followup_pos": "fpos"}),
            on=["conversation_id", "feedback_pos"],
            how="left",
        )
        .join(
            by_pos.select("conversation_id", pl.col("pos").alias("fpos"), pl.col("content").alias("followup")),
            on=["conversation_id", "fpos"],
            how="left",
        )
        .join(messages, on="conversation_id", how="left")
        .with_columns(
            context=pl.col("messages").list.head(pl.col("pos")),
            response=pl.col("content"),
            response_turn=pl.col("turn_index"),
        )
    )
    ex = ex.with_columns(exchange_id=md5_of(ex["conversation_id"], ex["response_turn"]))
    return conform(ex, EXCHANGES).sort("conversation_id", "response_turn")
