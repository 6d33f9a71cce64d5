"""VERDICTS + EXCHANGES -> the DSAT records, and PAIRS in TRL's conversational preference format.

- origin 'dsat': every DSAT exchange; prompt = its context, rejected = [the DSAT response],
  chosen = null until the DRIFT trainer samples it, feedback = the user's dissatisfied turn.
- origin 'seed': a natural DSAT->SAT pair, where the assistant's next turn after the dissatisfied
  feedback (the followup) was itself followed by a SAT turn: chosen = [that followup].

An exchange with no prompt (no user turn before its response, or an empty request: a ShareGPT part
`ID_1` that opens with the assistant) keeps its DSAT record but gets no pair: there is nothing to
train the policy to answer. `DsatAndPairs.no_prompt` counts them.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from dsatkit.exchanges import attach_context
from dsatkit.schema import DSAT, PAIRS, conform


def _assistant(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), text.alias("content")))


HAS_PROMPT = (pl.col("request").str.contains(r"\S") & (pl.col("context").list.len() > 0)).fill_null(False)
"""Whether an exchange (with its context) has a prompt to pair: a non-blank request (the last user turn
before the response: null when there is none) and a context to put it in (the one home of that rule)."""


class DsatAndPairs(NamedTuple):
    """What `dsat_and_pairs` returns: unpacks as `dsat, pairs, no_prompt`."""

    dsat: pl.DataFrame
    """DSAT records, one per DSAT exchange (those with no prompt included)."""
    pairs: pl.DataFrame
    """PAIRS of the DSAT exchanges that have a prompt (`HAS_PROMPT`)."""

    no_prompt: int
    """How many DSAT records got no pair for want of a prompt (see `HAS_PROMPT`)."""


def dsat_and_pairs(
    exchanges: pl.DataFrame, verdicts: pl.DataFrame, turns: pl.DataFrame | None = None
) -> DsatAndPairs:
    """The DSAT records and the PAIRS of the exchanges (whole conversations) judged in `verdicts`.

    When `exchanges` was built without context, pass the `turns` to fill it for the DSAT rows only.
    DSAT exchanges without a prompt (`HAS_PROMPT`) get a DSAT record and no pair; the result's
    `no_prompt` counts them.
    """
    verdicts = verdicts.select("exchange_id", "label", "polarity", "category", "score", "detectors")
    if verdicts.height == exchanges.height and (verdicts["exchange_id"] == exchanges["exchange_id"]).all():
        # row for row, as the pipeline's single-detector verdicts come: no join needed
        judged = pl.concat([exchanges, verdicts.drop("exchange_id")], how="horizontal")
        dsat = judged.filter(pl.col("label"))
        sat = judged.filter(pl.col("polarity") == "sat")
    else:
        # only the DSAT and the SAT verdicts matter (a tenth and a quarter of the exchanges, typically):
        # joining those, not every verdict, keeps the hash tables small
        dsat = exchanges.join(verdicts.filter(pl.col("label")), on="exchange_id", how="inner", maintain_order="left")
        sat = exchanges.join(verdicts.filter(pl.col("polarity") == "sat"), on="exchange_id", how="semi")
    # a SAT exchange whose response is a DSAT exchange's followup: the user was satisfied by the
    # revision (a natural DSAT -> SAT pair)
    satisfied = sat.select("conversation_id", pl.col("response_turn").alias("followup_turn"), _sat=pl.lit(True))
    dsat = dsat.join(satisfied, on=["conversation_id", "followup_turn"], how="left", maintain_order="left")
    is_seed = dsat["followup"].is_not_null() & dsat["_sat"].fill_null(False)
    if turns is not None:
        dsat = attach_context(dsat, turns).with_columns(dsat.select("score", "category", "detectors"))
    prompted = dsat.select(HAS_PROMPT).to_series()
    base = {"prompt": pl.col("context"), "rejected": _assistant(pl.col("response"))}
    dsat_pairs = dsat.filter(prompted).with_columns(**base, chosen=pl.lit(None), origin=pl.lit("dsat"))
    seed_pairs = dsat.filter(is_seed & prompted).with_columns(
        **base, chosen=_assistant(pl.col("followup")), origin=pl.lit("seed")
    )
    # in the exchanges' (the logs') order, the DSAT pairs before the seed ones: a run's output order
    # is deterministic without a sort, which would copy every prompt once more
    pairs = pl.concat([conform(dsat_pairs, PAIRS), conform(seed_pairs, PAIRS)])
    return DsatAndPairs(conform(dsat, DSAT), pairs, int(prompted.len() - prompted.sum()))


def build_pairs(exchanges: pl.DataFrame, verdicts: pl.DataFrame, turns: pl.DataFrame | None = None) -> pl.DataFrame:
    """PAIRS only; see `dsat_and_pairs`."""
    return dsat_and_pairs(exchanges, verdicts, turns)[1]
