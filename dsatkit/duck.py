"""One in-memory DuckDB connection per thread, for the small SQL helpers that work on Polars frames.

A connection serves one query at a time, and a run reads its next batch in a thread of its own
(dsatkit.readahead) while the main thread mines the current one: both use these helpers, so each
thread gets its own connection instead of DuckDB's shared default one.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl
import pyarrow as pa

_local = threading.local()


def local_connection() -> duckdb.DuckDBPyConnection:
    """This thread's connection; single-threaded, because its queries are per batch and small, and
    parallel execution of them costs more CPU than it saves (md5 of 1M ids: 0.36 vs 0.17 CPU-s)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("set threads = 1")
    return con


def arrow_of(frame: pl.DataFrame) -> pa.Table:
    """`frame` as Arrow for DuckDB to read, strings as views (zero copy). DuckDB reads a Polars frame
    through its `to_arrow()`, which copies every string into the old offsets layout first
    (measured: ~0.6 CPU-s of the store's inserts per 1M conversations)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())
