"""Load preference pairs for training: a mined directory or a pairs parquet, filtered by SQL in DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from dsatkit.errors import ConfigError, TrainError, first_line
from dsatkit.hashing import md5_hex
from dsatkit.schema import PAIRS, conform
from dsatkit.store import DB_NAME, connect

_REQUIRED = ("exchange_id", "prompt", "rejected", "origin")


def _source(path: Path) -> tuple[str, list]:
    """A DuckDB relation expression for the pairs at `path` (parquet preferred, else the store table)."""
    if path.is_dir():
        if (path / "pairs.parquet").exists():
            return "read_parquet(?)", [str(path / "pairs.parquet")]
        if (path / DB_NAME).exists():
            return "", [str(path / DB_NAME)]
        raise TrainError(
            f"data.path {path}: no pairs.parquet or {DB_NAME} in this directory",
            hint="run `dsatkit mine LOGS -o DIR` and point data.path at DIR",
        )
    if path.exists():
        return "read_parquet(?)", [str(path)]
    raise TrainError(f"data.path {path} does not exist", hint="point data.path at a mined directory or a pairs parquet")


def load_pairs(path: str | Path, where: str | None = None) -> pl.DataFrame:
    """The PAIRS frame at `path`, keeping the rows matching the SQL `where` (DuckDB syntax; for a store
    directory, `where` can read every table of the directory: verdicts, exchange_topics, topics, ...)."""
    path = Path(path)
    rel, params = _source(path)
    # a store directory: every table of its .duckdb files is in scope for `where` (e.g. the topics:
    # `exchange_id in (select exchange_id from exchange_topics where topic_id = 3)`)
    con = connect(path) if (path / DB_NAME).is_file() else duckdb.connect()
    try:
        if not rel:  # a store without a parquet export: read its pairs table
            rel, params = "pairs", []
        cols = [r[0] for r in con.sql(f"describe select * from {rel}", params=params or None).fetchall()]
        missing = [c for c in _REQUIRED if c not in cols]
        if missing:
            raise TrainError(
                f"data.path {path}: not a pairs table (missing column {missing[0]!r})",
                hint="expected the PAIRS schema written by `dsatkit mine`",
            )
        sql = f"select * from {rel}" + (f" where {where}" if where else "")
        try:
            frame = con.sql(sql, params=params or None).pl()
        except duckdb.Error as e:
            raise ConfigError(f"data.where: {first_line(e)}", hint=f"columns: {', '.join(cols)}") from None
    except duckdb.Error as e:
        raise TrainError(f"data.path {path}: {first_line(e)}") from None
    finally:
        con.close()
    return conform(frame, PAIRS)


def split_test(pairs: pl.DataFrame, test_size: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out whole exchanges (DSAT and seed rows together), chosen by a stable hash of the id."""
    if test_size <= 0 or pairs.is_empty():
        return pairs, pairs.clear()
    ids = pairs.select(pl.col("exchange_id").unique())
    ids = ids.with_columns(h=md5_hex(ids["exchange_id"])).sort("h")
    n = round(test_size * ids.height) if test_size < 1 else int(test_size)
    n = min(n, ids.height - 1)  # keep at least one exchange to train on
    test_ids = ids.head(n).select("exchange_id")
    return pairs.join(test_ids, on="exchange_id", how="anti"), pairs.join(test_ids, on="exchange_id", how="semi")
