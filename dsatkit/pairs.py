"""VERDICTS + EXCHANGES -> PAIRS, in TRL's conversational preference format.

- origin 'dsat': every DSAT exchange; prompt = its context, rejected = [the DSAT response],
  chosen = null until the DRIFT trainer samples it, feedback = the user's dissatisfied turn.
- origin 'seed': a natural DSAT->SAT pair, where the assistant's next turn after the dissatisfied
  feedback (the followup) was itself followed by a SAT turn: chosen = [that followup].
"""

from __future__ import annotations

import polars as pl

from dsatkit.exchanges import attach_context
from dsatkit.schema import PAIRS, conform


def _assistant(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), text.alias("content")))


def build_pairs(exchanges: pl.DataFrame, verdicts: pl.DataFrame, turns: pl.DataFrame | None = None) -> pl.DataFrame:
    """PAIRS for the DSAT exchanges of `exchanges` (whole conversations) judged in `verdicts`.

    When `exchanges` was built without context, pass the `turns` to fill it for the DSAT rows only.
    """
    ex = (
        exchanges.join(verdicts.select("exchange_id", "label", "polarity", "category", "score"),
                       on="exchange_id", how="left")
        .sort("conversation_id", "response_turn")
        .with_columns(
            # the exchange whose response is this exchange's followup is the conversation's next one
            next_response=pl.col("response").shift(-1).over("conversation_id"),
            next_polarity=pl.col("polarity").shift(-1).over("conversation_id"),
        )
    )
    dsat = ex.filter(pl.col("label").fill_null(False))
    if turns is not None:
        dsat = attach_context(dsat, turns)
    base = dict(prompt=pl.col("context"), rejected=_assistant(pl.col("response")))
    dsat_pairs = dsat.with_columns(**base, chosen=pl.lit(None), origin=pl.lit("dsat"))
    seed_pairs = dsat.filter(
        pl.col("followup").is_not_null()
        & (pl.col("next_response") == pl.col("followup"))
        & (pl.col("next_polarity") == "sat")
    ).with_columns(**base, chosen=_assistant(pl.col("followup")), origin=pl.lit("seed"))
    return pl.concat(
        [conform(dsat_pairs, PAIRS), conform(seed_pairs, PAIRS)]
    ).sort("origin", "exchange_id")
