"""Content-addressed caches (embeddings, judge answers) in their own DuckDB file.

They live beside the store (`mined/cache.duckdb`), not inside the snapshot that a run swaps in at its
end, because they must survive a run that is killed half way: every entry is committed as it arrives.
"""

from __future__ import annotations

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

    # embeddings ---------------------------------------------------------------------------------
    def get_embeddings(self, model: str, hashes: pl.Series) -> pl.DataFrame:
        """Cached rows (text_hash, embedding) for the hashes that are present."""
        wanted = pl.DataFrame({"text_hash": hashes.unique()})  # noqa: F841 (read by DuckDB)
        with self._lock:
            return self.con.sql(
                "select c.text_hash, c.embedding from embedding_cache c "
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
                "select c.* exclude (created_at) from judge_cache c join wanted w using (key)"
            ).pl()

    def put_judge_many(self, rows: list[dict]) -> None:
        """Commit a batch of judge answers (dicts with the JUDGE_ROW keys) in one transaction (a commit
        per row costs ~5 ms)."""
        frame = pl.DataFrame(rows, schema=JUDGE_ROW)  # noqa: F841 (read by DuckDB)
        with self._lock:
            self.con.execute(
                f"insert or replace into judge_cache ({', '.join(JUDGE_ROW.names())}) select * from frame"
            )
