"""Stable content hashes computed in bulk (DuckDB's md5 over Arrow, no Python loop)."""

from __future__ import annotations

import polars as pl

from dsatkit.duck import arrow_of, local_connection


def md5_hex(values: pl.Series) -> pl.Series:
    """md5 hex digest of each string (nulls hash as the empty string), stable across versions."""
    frame = arrow_of(pl.DataFrame({"v": values.cast(pl.String).fill_null("")}))  # noqa: F841 (read by DuckDB)
    out = local_connection().sql("select md5(v) as h from frame").pl()["h"]
    return out.alias(values.name)


def md5_of(*columns: pl.Series, sep: str = "\x1f") -> pl.Series:
    """md5 of several columns joined with a unit separator (e.g. conversation id + turn)."""
    joined = pl.DataFrame({f"c{i}": c.cast(pl.String).fill_null("") for i, c in enumerate(columns)}).select(
        pl.concat_str(pl.all(), separator=sep).alias("k")
    )["k"]
    return md5_hex(joined)
