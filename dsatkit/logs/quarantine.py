"""Why input rows are rejected, and the QUARANTINE frame that records them.

Reasons are a fixed vocabulary (counted per reason in run summaries); the offending value goes in
`raw`, never in the reason. The unit of rejection is the conversation: a bad message rejects its whole
conversation (a conversation with a hole would yield wrong exchanges). In a flat turn table, the
offending row gets the reason and the conversation's other rows get `IN_BAD_CONVERSATION`, so every
input row ends up either in TURNS or in quarantine.
"""

from __future__ import annotations

import polars as pl

from dsatkit.duck import local_connection
from dsatkit.schema import QUARANTINE, conform

BAD_UTF8 = "invalid UTF-8"
BAD_JSON = "malformed JSON"
NOT_OBJECT = "not a JSON object"
NO_MESSAGES = "no messages"
MALFORMED_MESSAGE = "malformed message"
UNKNOWN_ROLE = "unknown role"
NON_TEXT = "non-text content"
TOO_LONG = "message too long"
DUPLICATE = "duplicate conversation_id"
NO_ID = "missing conversation_id"
IN_BAD_CONVERSATION = "in a quarantined conversation"
TRUNCATED = "truncated file"
CORRUPT = "corrupt compressed data"
TRAILING = "data after the end"
UNREADABLE = "unreadable file"
EMPTY_FILE = "empty file"

REASONS = (BAD_UTF8, BAD_JSON, NOT_OBJECT, NO_MESSAGES, MALFORMED_MESSAGE, UNKNOWN_ROLE, NON_TEXT, TOO_LONG,
           DUPLICATE, NO_ID, IN_BAD_CONVERSATION, TRUNCATED, CORRUPT, TRAILING)

RAW_CHARS = 2000
"""Raw input kept per quarantined row."""


def quarantine_frame(bad: pl.DataFrame, raw: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """QUARANTINE rows for `bad` (_row, reason), with the raw text of each row from `raw`.

    `raw` is (_row, _bytes) for JSON text (a line, or an element of an array), or (_row, <the row's
    columns>, _raw) for typed inputs, `_raw` being the row's text where it is known already (a row
    with bytes that are not UTF-8), else null; only the bad rows are decoded or JSON-encoded, here.
    """
    if bad.is_empty():
        return pl.DataFrame(schema=QUARANTINE)
    rows = raw.join(bad.select("_row"), on="_row", how="semi")
    if set(rows.columns) == {"_row", "_bytes"}:
        # a line that is not UTF-8 shows its bad bytes as \xNN (quotes kept readable)
        rows = local_connection().sql(
            """select _row, coalesce(try(decode(_bytes)), replace(cast(_bytes as VARCHAR), '\\x22', '"')) as _raw
            from rows"""
        ).pl()
    else:
        cols = [c for c in rows.columns if c not in ("_row", "_raw")]
        encoded = pl.struct(cols).struct.json_encode()
        rows = rows.select("_row", (pl.coalesce("_raw", encoded) if "_raw" in rows.columns else encoded).alias("_raw"))
    out = bad.join(rows.select("_row", "_raw"), on="_row", how="left").sort("_row")
    return conform(
        out.select(
            pl.lit(source_file).alias("source_file"),
            pl.col("_row").alias("row_number"),
            "reason",
            pl.col("_raw").str.slice(0, RAW_CHARS).alias("raw"),
        ),
        QUARANTINE,
    )


def whole_file(source_file: str, reason: str) -> pl.DataFrame:
    """The one quarantine row (row_number -1) that stands for a whole file: unreadable, or empty."""
    return one_row(source_file, -1, reason, None)


def one_row(source_file: str, row_number: int, reason: str, raw: str | None) -> pl.DataFrame:
    """A QUARANTINE frame of one row (`raw` cut at RAW_CHARS)."""
    return conform(
        pl.DataFrame({"source_file": [source_file], "row_number": [row_number], "reason": [reason],
                      "raw": [None if raw is None else raw[:RAW_CHARS]]}, schema_overrides={"raw": pl.String}),
        QUARANTINE,
    )
