"""Content-addressed caches (embeddings, judge answers) in their own DuckDB file.

They live beside the store (`mined/cache.duckdb`), not inside the snapshot that a run swaps in at its
end, because they must survive a run that is killed half way: every entry is committed as it arrives.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

JUDGE_ROW = pl.Schema({
    "key": pl.String,  # md5 of the model, the question's version and everything shown to the judge
    "model": pl.String,
    "rubric_version": pl.String,  # the version of the question asked (the DSAT rubric's, or another's)
    "answer": pl.String,  # JSON: the validated answer, or {"raw": ...} for a final failure
    "ok": pl.Boolean,
    "error": pl.String,
    "prompt_tokens": pl.Int32,
    "completion_tokens": pl.Int32,
})
"""One row of the judge cache (the one home of its columns: the table's DDL is derived from it)."""

_DUCK_TYPES = {pl.String: "varchar", pl.Boolean: "boolean", pl.Int32: "integer"}

_DDL = """
create table if not exists embedding_cache (
    model varchar, text_hash varchar, embedding float[], primary key (model, text_hash));
create table if not exists judge_cache (
    {judge_columns}, created_at timestamp default current_timestamp, primary key (key));
""".format(judge_columns=", ".join(
    f"{name} {'json' if name == 'answer' else _DUCK_TYPES[dtype]}" for name, dtype in JUDGE_ROW.items()))


TABLES = ("embedding_cache", "judge_cache")


class Cache:
    """One DuckDB file (or memory when `path` is None) holding every cache table."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path) if self.path else ":memory:")
        self.con.execute(_DDL)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.con.close()

    def _table(self, name: str) -> str:
        """What the lookups read for the cache table `name` (a worker's cache adds its snapshot)."""
        return name

    def _holds(self, table: str) -> bool:
        """Whether the cache table `table` (of this connection, not a snapshot) has a row."""
        return self.con.execute(f"select exists (from {table})").fetchall()[0][0]

    def has_entries(self) -> bool:
        with self._lock:
            return any(self._holds(t) for t in TABLES)

    def snapshot(self, path: Path) -> None:
        """A copy of the cache file at `path`, for other processes to read (DuckDB lets one process
        write a file, and none read it meanwhile)."""
        with self._lock:
            self.con.execute("checkpoint")
            shutil.copyfile(self.path, path)

    def merge(self, directory: Path) -> None:
        """Add the entries a worker left in `directory` (`WorkerCache.flush`)."""
        with self._lock:
            for table in TABLES:
                part = directory / f"{table}.parquet"
                if part.exists():
                    how = "or replace" if table == "judge_cache" else "or ignore"
                    self.con.execute(f"insert {how} into {table} select * from read_parquet('{part}')")

    # embeddings ---------------------------------------------------------------------------------
    def get_embeddings(self, model: str, hashes: pl.Series) -> pl.DataFrame:
        """Cached rows (text_hash, embedding) for the hashes that are present."""
        wanted = pl.DataFrame({"text_hash": hashes.unique()})  # noqa: F841 (read by DuckDB)
        with self._lock:
            return self.con.sql(
                f"select c.text_hash, c.embedding from {self._table('embedding_cache')} c "
                "join wanted w using (text_hash) where c.model = $model",
                params={"model": model},
            ).pl()

    def put_embeddings(self, model: str, hashes: pl.Series, embeddings: np.ndarray) -> None:
        frame = pl.DataFrame(  # noqa: F841 (read by DuckDB)
            {"model": pl.Series([model] * len(hashes), dtype=pl.String), "text_hash": hashes}
        ).with_columns(embedding=pl.Series(embeddings.astype(np.float32)).cast(pl.List(pl.Float32)))
        with self._lock:
            self.con.execute("insert or ignore into embedding_cache select * from frame")

    # judge answers ------------------------------------------------------------------------------
    def get_judge(self, keys: pl.Series) -> pl.DataFrame:
        """Cached judge rows for the keys that are present (successful answers and final failures)."""
        wanted = pl.DataFrame({"key": keys.unique()})  # noqa: F841 (read by DuckDB)
        with self._lock:
            return self.con.sql(
                f"select c.* exclude (created_at) from {self._table('judge_cache')} c join wanted w using (key)"
            ).pl()

    def put_judge_many(self, rows: list[dict]) -> None:
        """Commit a batch of judge answers (dicts with the JUDGE_ROW keys) in one transaction (a commit
        per row costs ~5 ms)."""
        frame = pl.DataFrame(rows, schema=JUDGE_ROW)  # noqa: F841 (read by DuckDB)
        with self._lock:
            self.con.execute(
                f"insert or replace into judge_cache ({', '.join(JUDGE_ROW.names())}) select * from frame"
            )


class WorkerCache(Cache):
    """A Ray worker's cache: reads a snapshot of the run's cache file (read-only) and keeps what it adds
    in memory, until `flush` writes it beside the input file's parts for the driver to `merge`."""

    def __init__(self, snapshot: str | Path | None):
        super().__init__(None)
        self.snapshot_path = Path(snapshot) if snapshot else None
        if self.snapshot_path is not None:
            self.con.execute(f"attach '{self.snapshot_path}' as snap (read_only)")

    def _table(self, name: str) -> str:
        if self.snapshot_path is None:
            return name
        return f"(select * from {name} union all by name select * from snap.{name})"

    def flush(self, directory: Path) -> None:
        """Write the entries added since the last flush to `directory` (one parquet file per table)."""
        with self._lock:
            for table in TABLES:
                if self._holds(table):
                    self.con.execute(f"copy {table} to '{directory / f'{table}.parquet'}' (format parquet)")
                    self.con.execute(f"delete from {table}")
