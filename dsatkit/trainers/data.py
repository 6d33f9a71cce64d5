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
    """(train, test): whole conversations held out, never split between the two sides.

    PAIRS carry no conversation id, so a conversation is known by its opening: every exchange of one
    conversation has the same first user message in its prompt (a later exchange's prompt holds the
    earlier ones, so splitting them would train on a held-out prompt). Conversations are taken in the
    order of a stable hash of that opening until they hold `test_size` of the exchanges (a share < 1, or
    a count); DSAT and seed rows of an exchange go together; at least one conversation is left to train on.
    """
    if test_size <= 0 or pairs.is_empty():
        return pairs, pairs.clear()
    opening = pl.col("prompt").list.eval(
        pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
    ).list.first()
    ids = pairs.group_by("exchange_id").agg(opening=opening.first()).with_columns(
        group=pl.coalesce(pl.col("opening"), pl.col("exchange_id"))  # no user turn: the exchange alone
    )
    groups = ids.group_by("group").agg(n=pl.len())
    groups = groups.with_columns(h=md5_hex(groups["group"])).sort("h", "group")
    n = round(test_size * ids.height) if test_size < 1 else int(test_size)
    # the conversations, in hash order, until they hold n exchanges (the one that reaches n included)
    held = groups.with_columns(before=pl.col("n").cum_sum() - pl.col("n")).filter(pl.col("before") < n)
    held = held.head(min(held.height, groups.height - 1))  # keep at least one conversation to train on
    test_ids = ids.join(held.select("group"), on="group", how="semi").select("exchange_id")
    return pairs.join(test_ids, on="exchange_id", how="anti"), pairs.join(test_ids, on="exchange_id", how="semi")
