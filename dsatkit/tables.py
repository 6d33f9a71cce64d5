"""Flat tables a user hands in (labels, labelled exchanges), read by their file suffix: one home for which
suffix means which reader, for the labels readers and `detectors fit --kind auto`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

READERS = {
    ".parquet": pl.read_parquet,
    ".jsonl": pl.read_ndjson,
    ".ndjson": pl.read_ndjson,
    ".json": pl.read_json,
    ".csv": pl.read_csv,
    ".tsv": partial(pl.read_csv, separator="\t"),
}
"""suffix -> the Polars reader of a whole table."""


def read_table(path: Path) -> pl.DataFrame:
    """The table at `path`, by its suffix (one of READERS; KeyError for another). Polars and OS errors
    propagate: the caller says what the file was for."""
    return READERS[path.suffix](path)


def table_columns(path: Path) -> list[str]:
    """The column names of the table at `path`, read from its schema or first row only (KeyError for a
    suffix READERS lacks)."""
    cheap = {
        ".parquet": lambda p: list(pl.read_parquet_schema(p)),
        ".jsonl": lambda p: pl.scan_ndjson(p).collect_schema().names(),
        ".ndjson": lambda p: pl.scan_ndjson(p).collect_schema().names(),
        ".csv": lambda p: pl.read_csv(p, n_rows=1).columns,
        ".tsv": lambda p: pl.read_csv(p, n_rows=1, separator="\t").columns,
    }
    return cheap[path.suffix](path) if path.suffix in cheap else read_table(path).columns
