"""The mined store: `DIR/dsat.duckdb` (+ parquet exports), written atomically per run.

A run writes a fresh snapshot into a hidden temp file beside the store and renames it over
`dsat.duckdb` only when everything is in, so a run killed half way leaves the previous store
readable, and re-running the same inputs gives the same content. The `runs` history is carried over
from the previous snapshot. Caches live in `DIR/cache.duckdb` (see dsatkit.cache), committed as they
fill, because they must survive exactly the runs that never reach the rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import polars as pl

from dsatkit.errors import StoreError
from dsatkit.schema import DETECTIONS, EXCHANGES, PAIRS, QUARANTINE, TURNS, VERDICTS, empty
from dsatkit.taxonomy import TAXONOMY

DB_NAME = "dsat.duckdb"
CACHE_NAME = "cache.duckdb"
EXPORTS = ("dsat", "pairs", "quarantine")
"""Tables (or views) also written as DIR/<name>.parquet."""

TABLES: dict[str, pl.Schema] = {
    "turns": TURNS,
    "exchanges": EXCHANGES,
    "detections": DETECTIONS,
    "verdicts": VERDICTS,
    "pairs": PAIRS,
    "quarantine": QUARANTINE,
}

_RUNS_DDL = """
create table runs (
    run_id varchar, started_at timestamptz, finished_at timestamptz, dsatkit_version varchar,
    inputs json, config json, versions json, counts json, timings json, detectors json)
"""

_DSAT_VIEW = """
create view dsat as
select v.exchange_id, v.score, v.category, v.detectors, e.conversation_id, e.response_turn,
       e.request, e.response, e.feedback, e.followup, e.context, e.model, e.language, e.source_file
from verdicts v join exchanges e using (exchange_id)
where v.label
"""


class RunWriter:
    """Collects one run's frames into a temp DuckDB file; `commit` swaps it in, `abort` drops it."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.out_dir.glob(f".{DB_NAME}.*.tmp*"):
            stale.unlink(missing_ok=True)
        self.tmp = self.out_dir / f".{DB_NAME}.{os.getpid()}.tmp"
        self.con = duckdb.connect(str(self.tmp))
        for name, schema in TABLES.items():
            frame = empty(schema)  # noqa: F841 (read by DuckDB's replacement scan)
            self.con.execute(f"create table {name} as select * from frame")
        self.con.execute(_RUNS_DDL)
        taxonomy = TAXONOMY  # noqa: F841
        self.con.execute("create table taxonomy as select * from taxonomy")
        previous = self.out_dir / DB_NAME
        if previous.exists():
            try:
                self.con.execute(f"attach '{previous}' as previous (read_only)")
                self.con.execute("insert into runs by name select * from previous.runs")
                self.con.execute("detach previous")
            except duckdb.Error:
                pass  # an unreadable or foreign file: start a new history rather than fail the run

    def append(self, table: str, frame: pl.DataFrame) -> None:
        if frame.height:
            self.con.execute(f"insert into {table} by name select * from frame")

    def commit(self, run: dict) -> None:
        """Record the run, export parquet, and atomically replace the store."""
        row = {k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v for k, v in run.items()}
        cols = ", ".join(row)
        self.con.execute(f"insert into runs ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
        self.con.execute(_DSAT_VIEW)
        staged = []
        for name in EXPORTS:
            target = self.out_dir / f"{name}.parquet"
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            self.con.execute(f"copy (select * from {name}) to '{tmp}' (format parquet)")
            staged.append((tmp, target))
        self.con.execute("checkpoint")
        self.con.close()
        os.replace(self.tmp, self.out_dir / DB_NAME)
        for tmp, target in staged:
            os.replace(tmp, target)

    def abort(self) -> None:
        try:
            self.con.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            for leftover in self.out_dir.glob(f".*.{os.getpid()}.tmp"):
                leftover.unlink(missing_ok=True)


def connect(store_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only view of a store directory: every table of every *.duckdb file in it.

    `dsat.duckdb` is attached as the default catalog; tables of the other files (train.duckdb,
    cache.duckdb, ...) are reachable unqualified too, through views, unless their name is taken.
    """
    d = Path(store_dir)
    if not d.is_dir():
        raise StoreError(f"{d} is not a directory")
    files = sorted(d.glob("*.duckdb"), key=lambda p: (p.name != DB_NAME, p.name))
    if not files:
        raise StoreError(f"{d} holds no .duckdb file")
    con = duckdb.connect(":memory:")
    seen = set()
    for f in files:
        alias = f.stem
        try:
            con.execute(f"attach '{f}' as \"{alias}\" (read_only)")
        except duckdb.Error:
            continue  # held by a running writer (e.g. the cache during a mine); skip it
        names = con.sql(
            "select table_name from information_schema.tables where table_catalog = ?", params=[alias]
        ).fetchall()
        for (name,) in names:
            if name not in seen:
                con.execute(f'create view "{name}" as select * from "{alias}".main."{name}"')
                seen.add(name)
    if not seen:
        raise StoreError(f"no readable dsatkit table in {d}")
    return con


def read_table(store_dir: str | Path, name: str) -> pl.DataFrame:
    con = connect(store_dir)
    try:
        return con.sql(f'select * from "{name}"').pl()
    finally:
        con.close()
