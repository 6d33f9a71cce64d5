"""The DSAT/SAT taxonomy (after WildFeedback / SPUR), kept as data."""

from __future__ import annotations

import polars as pl

# (category, polarity, description). Order is the tie-break order when two categories score equally:
# the more specific DSAT kinds come first.
_ROWS: list[tuple[str, str, str]] = [
    ("factual_error", "dsat", "the user corrects a factual or technical mistake in the response"),
    ("ignored_instruction", "dsat", "the response did not follow an explicit instruction or constraint"),
    ("revision", "dsat", "the user rephrases or refines the same request because the response missed"),
    ("negative_feedback", "dsat", "the user says the response is bad, wrong, useless or unwanted"),
    ("unrealistic_expectation", "dsat", "the user expects something the assistant cannot do, and is upset"),
    ("no_engagement", "dsat", "the user disengages after a poor response (gives up, goes silent, leaves)"),
    ("gratitude", "sat", "the user thanks the assistant"),
    ("praise", "sat", "the user praises the response"),
    ("learning", "sat", "the user says they understood or learned something"),
    ("compliance", "sat", "the user follows the suggestion or builds on the response"),
    ("acknowledgment", "sat", "the user acknowledges the response (ok, got it)"),
]

TAXONOMY = pl.DataFrame(
    _ROWS, schema={"category": pl.String, "polarity": pl.String, "description": pl.String}, orient="row"
)
DSAT_CATEGORIES: tuple[str, ...] = tuple(c for c, p, _ in _ROWS if p == "dsat")
SAT_CATEGORIES: tuple[str, ...] = tuple(c for c, p, _ in _ROWS if p == "sat")
CATEGORIES: tuple[str, ...] = DSAT_CATEGORIES + SAT_CATEGORIES
POLARITY: dict[str, str] = {c: p for c, p, _ in _ROWS}
