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
UNREADABLE = "unreadable file"
EMPTY_FILE = "empty file"

REASONS = (BAD_UTF8, BAD_JSON, NOT_OBJECT, NO_MESSAGES, MALFORMED_MESSAGE, UNKNOWN_ROLE, NON_TEXT, TOO_LONG,
           DUPLICATE, NO_ID, IN_BAD_CONVERSATION)

RAW_CHARS = 2000
"""Raw input kept per quarantined row."""


def quarantine_frame(bad: pl.DataFrame, raw: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """QUARANTINE rows for `bad` (_row, reason), with the raw text of each row from `raw`.

    `raw` is (_row, _bytes) for JSON lines, (_row, _text) for JSON arrays, or (_row, <the row's
    columns>) for typed inputs; only the bad rows are decoded or JSON-encoded, here.
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
    elif set(rows.columns) == {"_row", "_text"}:
        rows = rows.rename({"_text": "_raw"})
    else:
        cols = [c for c in rows.columns if c != "_row"]
        rows = rows.select("_row", pl.struct(cols).struct.json_encode().alias("_raw"))
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
    return conform(
        pl.DataFrame({"source_file": [source_file], "row_number": [-1], "reason": [reason]}), QUARANTINE
    )
