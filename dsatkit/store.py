"""The mined store: `DIR/dsat.duckdb` (+ parquet exports), written atomically per run.

A run writes a fresh snapshot into a hidden temp file beside the store and renames it over
`dsat.duckdb` only when everything is in, so a run killed half way leaves the previous store
readable, and re-running the same inputs gives the same content. The `runs` history is carried over
from the previous snapshot. Caches live in `DIR/cache.duckdb` (see dsatkit.cache), committed as they
fill, because they must survive exactly the runs that never reach the rename.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dsatkit.duck import arrow_of
from dsatkit.errors import StoreError
from dsatkit.schema import DETECTIONS, DSAT, EXCHANGES, PAIRS, QUARANTINE, TURNS, VERDICTS, empty
from dsatkit.taxonomy import TAXONOMY

DB_NAME = "dsat.duckdb"
_SNAPSHOT = "snapshot"
"""The catalog name the writer attaches its temp file under."""
CACHE_NAME = "cache.duckdb"
TOPICS_NAME = "topics.duckdb"
"""The topics of the store (`dsatkit topics`): derived from one snapshot, removed when a new one replaces it."""
EXPORTS = {"dsat": "dsat_records", "pairs": "pairs", "quarantine": "quarantine"}
"""DIR/<name>.parquet -> the table it exports."""
WRITER_MEMORY = "192MB"
"""DuckDB's memory cap while a run writes its snapshot (blocks spill to the file beyond it)."""
WRITER_LANES = 2
"""Tables inserted at once, each through a connection of its own, and each insert on its lane's thread
alone (DuckDB threads = 1): the lanes are the writer's parallelism. DuckDB's own worker thread on top
made three writer threads on two cores (measured: 1M conversations 11.83 -> 11.45 s, mean of 5)."""
ROW_GROUP_ROWS = 32_768
"""Rows per row group of the store (DuckDB's default: 122,880). Each commit of a table leaves its last
row group part-filled; smaller row groups keep those small (measured when tables were written in
autocommit, which wrote the part-filled tail again at every insert: the writer's CPU time at 1M
conversations 17 -> 13 s; with the per-table transactions of `_Table`, 65k or 123k rows gain nothing)."""

_FROM_PAIR = {
    "context": "p.prompt",
    "request": "list_filter(p.prompt, lambda m: m.role = 'user')[-1].content",  # the last user turn before
    "response": "p.rejected[1].content",
    "feedback": "p.feedback",
}
"""DSAT columns the `dsat` view takes from the exchange's 'dsat' pair (so that they are stored once)."""

_FROM_RESPONSE_TURN = ("response", "model", "language", "source_file")
"""Exchange columns the `exchanges` view reads from the response's own row of `turns`."""
EXCHANGE_INDEX = pl.Schema(
    {k: v for k, v in EXCHANGES.items() if k not in ("context", "request", "feedback", "followup", *_FROM_RESPONSE_TURN)}
)
"""What the store keeps of an exchange (ids and turn numbers); its texts, model, language and source
file come from `turns` through the `exchanges` view."""

TABLES: dict[str, pl.Schema] = {
    "turns": TURNS,
    "exchange_index": EXCHANGE_INDEX,
    "detections": DETECTIONS,
    "verdicts": VERDICTS,
    "pairs": PAIRS,
    # materialised at mine time (10% of exchanges, typically): deriving it from turns would re-scan
    # every message; the `dsat` view reads it, with the texts its DSAT pair already holds
    "dsat_records": pl.Schema({k: v for k, v in DSAT.items() if k not in _FROM_PAIR}),
    "quarantine": QUARANTINE,
}

_RUNS_DDL = """
create table runs (
    run_id varchar, started_at timestamptz, finished_at timestamptz, dsatkit_version varchar,
    inputs json, config json, versions json, counts json, timings json, detectors json)
"""

_VIEWS = """
create view exchanges as
with slots as (
    select exchange_id, conversation_id,
           unnest([response_turn, request_turn, feedback_turn, followup_turn]) as turn_index,
           unnest([0, 1, 2, 3]) as slot
    from exchange_index),
texts as (
    -- one pass over turns for the four texts of every exchange (four joins would scan it four times)
    select s.exchange_id,
           any_value(t.content) filter (where s.slot = 0) as response,
           any_value(t.model) filter (where s.slot = 0) as model,
           any_value(t.language) filter (where s.slot = 0) as language,
           any_value(t.source_file) filter (where s.slot = 0) as source_file,
           any_value(t.content) filter (where s.slot = 1) as request,
           any_value(t.content) filter (where s.slot = 2) as feedback,
           any_value(t.content) filter (where s.slot = 3) as followup
    from slots s join turns t using (conversation_id, turn_index)
    group by s.exchange_id),
conversations as (
    select conversation_id,
           list(struct_pack(role := role::varchar, content := content) order by turn_index) as messages
    from turns group by conversation_id)
select x.exchange_id, x.conversation_id, x.response_turn,
       list_slice(c.messages, 1, x.context_turns) as context, x.context_turns,
       t.request, t.response, t.feedback, t.followup,
       x.request_turn, x.feedback_turn, x.followup_turn, t.model, t.language, t.source_file
from exchange_index x
join texts t using (exchange_id)
join conversations c using (conversation_id);

create view dsat as
select {dsat_columns}
from dsat_records d
left join pairs p on p.exchange_id = d.exchange_id and p.origin = 'dsat';
""".format(dsat_columns=", ".join(f"{_FROM_PAIR[c]} as {c}" if c in _FROM_PAIR else f"d.{c}" for c in DSAT.names()))


_TEXT_COLUMNS = frozenset(
    {"content", "context", "request", "response", "feedback", "followup", "prompt", "chosen", "rejected", "raw",
     "exchange_id", "conversation_id", "rationale"}
)
"""Message text (plain or nested in message lists), most of a store's bytes, and the distinct ids:
columns that DuckDB's automatic string compression is slow on and gains little."""


def _create_table(con: duckdb.DuckDBPyConnection, name: str, schema: pl.Schema, text_compression: str) -> str:
    """DDL for a store table; message texts get an explicit compression.

    DuckDB's automatic choice for long strings (FSST analysis) costs ~4x the time of writing them
    uncompressed, and message text is most of what a store holds: "none" is the fast default,
    "zstd" the compact one (~0.4x the size, ~3x the write time of "none"). An Enum column (the
    role) is a DuckDB ENUM, stored as small codes rather than strings.
    """
    frame = empty(schema)  # noqa: F841 (read by DuckDB's replacement scan)
    columns = []
    for col, dtype, *_ in con.sql("describe select * from frame").fetchall():
        if isinstance(schema[col], pl.Enum):
            dtype = "enum ({})".format(", ".join(f"'{v}'" for v in schema[col].categories))
        using = ""
        if col in _TEXT_COLUMNS and text_compression == "none":
            using = " using compression uncompressed"
        elif col in _TEXT_COLUMNS and dtype == "VARCHAR":  # DuckDB has zstd for flat strings only
            using = f" using compression {text_compression}"
        columns.append(f'"{col}" {dtype}{using}')
    return f"create table {name} ({', '.join(columns)})"


def _compact(frame: pl.DataFrame) -> pa.Table:
    """An Arrow copy holding only the strings the frame uses (plain strings, not views)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """The parquet leaf column paths of an Arrow schema ("prompt.list.element.content").

    pyarrow takes per-column codecs and statistics by leaf path only (a nested column's own name
    is ignored), so the paths come from the parquet schema of an empty file.
    """
    empty_file = io.BytesIO()
    pq.write_table(schema.empty_table(), empty_file)
    leaves = pq.read_metadata(io.BytesIO(empty_file.getvalue())).schema
    return [leaves.column(i).path for i in range(len(leaves))]


def _is_text(path: str) -> bool:
    return path.split(".")[0] in _TEXT_COLUMNS


def _remove(path: Path) -> None:
    if path.is_dir():  # DuckDB's spill directory
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _writing(out_dir: Path) -> Iterator[None]:
    """A full disk or a read-only directory, raised by DuckDB or Arrow, as a one-line StoreError."""
    try:
        yield
    except (duckdb.IOException, duckdb.TransactionException, OSError) as err:  # a failed commit is the latter
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StoreError(
            f"cannot write the store in {out_dir}: {message}",
            hint="free disk space there (the store keeps every message uncompressed), or choose another -o/--out",
        ) from err


def _cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to the writer's database, with the snapshot as its default catalog."""
    cursor = con.cursor()
    cursor.execute(f"use {_SNAPSHOT}")
    return cursor


class _Table:
    """A store table and the connection it is written through (DuckDB runs one statement at a time
    per connection; tables written on different lanes need their own).

    Inserts are gathered in a transaction. DuckDB writes the full row groups of a transaction straight
    to the file; but a commit of fewer rows than a row group into a table that has rows already (a
    batch's 12k DSAT pairs) is copied into the table's in-memory tail, logged to the WAL, and scanned
    and compressed again at the next checkpoint. So a table whose batches fill row groups commits once
    its transaction holds one (measured, 1M conversations: the writer's CPU time 8.9 -> 8.1 s), and a
    table whose batches are smaller commits once, at the end, while it is still empty and DuckDB takes
    the rows whole (its leftover no longer goes through the WAL: the final commit 0.54-0.85 -> 0.45-0.56 s).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, name: str):
        self.con = _cursor(con)
        self.name = name
        self.columns = ", ".join(f'"{c}"' for c in TABLES[name].names())  # an exported frame has more
        self.seconds = float("inf")  # what its last batch took to write (unknown: schedule it first)
        self.writing: Future | None = None
        self.uncommitted = 0  # rows inserted in the open transaction
        self.commits: bool | None = None  # whether it commits as it goes (set by its first batch)

    def insert(self, frame: pl.DataFrame) -> None:
        t0 = time.perf_counter()
        # one Arrow chunk: DuckDB inserts several chunks in parallel, each into row groups of its own
        data = arrow_of(frame.rechunk() if frame.n_chunks() > 1 else frame)  # noqa: F841 (read by DuckDB)
        if not self.uncommitted:
            self.con.execute("begin transaction")
        self.con.execute(f"insert into {self.name} by name select {self.columns} from data")
        self.uncommitted += frame.height
        if self.commits is None:
            self.commits = frame.height >= ROW_GROUP_ROWS
        if self.commits and self.uncommitted >= ROW_GROUP_ROWS:
            self.con.execute("commit")
            self.uncommitted = 0
        self.seconds = time.perf_counter() - t0

    def close(self, commit: bool) -> None:
        try:
            if self.writing is not None:
                self.writing.result()  # the last insert first
            if commit and self.uncommitted:
                self.con.execute("commit")
        finally:
            self.con.close()


class RunWriter:
    """Collects one run's frames into a temp DuckDB file; `commit` swaps it in, `abort` drops it.

    Tables are written on WRITER_LANES threads (DuckDB and Arrow release the GIL), the slowest first,
    so that they overlap with each other and with the Polars work of the batch that follows; the
    writer holds at most one frame per table.
    """

    def __init__(self, out_dir: str | Path, text_compression: str = "none"):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # what a killed run left behind: its snapshot (and DuckDB's WAL of it), its parquet exports
        for pattern in (f".{DB_NAME}.*.tmp*", *(f".{name}.parquet.*.tmp" for name in EXPORTS)):
            for stale in self.out_dir.glob(pattern):
                _remove(stale)
        self.text_compression = text_compression
        self.tmp = self.out_dir / f".{DB_NAME}.{os.getpid()}.tmp"
        # the snapshot is attached (not opened) because only ATTACH takes a row group size
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"set temp_directory = '{self.tmp}.spill'")
        self.con.execute(f"attach '{self.tmp}' as {_SNAPSHOT} (row_group_size {ROW_GROUP_ROWS})")
        self.con.execute(f"use {_SNAPSHOT}")
        for name, schema in TABLES.items():
            self.con.execute(_create_table(self.con, name, schema, text_compression))
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

        # written blocks stream to the file; DuckDB would otherwise keep caching them up to 80% of
        # RAM, and peak memory would grow with the input instead of the batch
        self.con.execute(f"set memory_limit = '{WRITER_MEMORY}'")
        self.con.execute("set threads = 1")  # see WRITER_LANES
        # a run only appends: row groups never need vacuuming, and merging the small ones of small
        # tables at every checkpoint rewrites them again and again
        self.con.execute("set max_vacuum_tasks = 0")
        # blocks come from one region allocated once and reused: allocated afresh, every block written
        # page-faults its memory in again (measured: ~1.5 s less system time at 1M conversations)
        self.con.execute(f"set block_allocator_memory = '{WRITER_MEMORY}'")
        # each row group goes to the file as it fills, instead of five at once: fewer blocks are held,
        # so fewer fresh pages are faulted in (measured: the writer's system time 2.3 -> 1.2 s at 1M)
        self.con.execute("set write_buffer_row_group_count = 1")
        # the parquet exports are written as the batches arrive, not re-read from DuckDB at the end
        self._exports: dict[str, pq.ParquetWriter] = {}
        self._export_of = {table: name for name, table in EXPORTS.items()}
        self._export_paths = {
            name: self.out_dir / f".{name}.parquet.{os.getpid()}.tmp" for name in EXPORTS
        }
        self._lanes = ThreadPoolExecutor(WRITER_LANES, thread_name_prefix="dsatkit-store")
        self._tables: dict[str, _Table] = {}
        self._closed = False

    def _write(self, table: _Table, frame: pl.DataFrame) -> None:
        with _writing(self.out_dir):
            table.insert(frame)
            if table.name in self._export_of:
                self._export(self._export_of[table.name], _compact(frame))

    def _export(self, table: str, data: pa.Table) -> None:
        writer = self._exports.get(table)
        if writer is None:
            # dictionaries only where values repeat (ids, categories, models), never on message text;
            # text is compressed as in the store (snappy costs ~0.6 CPU-s per 1M conversations);
            # min/max statistics of message text and hash ids prune nothing, and cost ~10% of the write
            paths = _leaf_paths(data.schema)
            writer = self._exports[table] = pq.ParquetWriter(
                self._export_paths[table], data.schema,
                use_dictionary=[c for c in data.schema.names if c not in _TEXT_COLUMNS],
                compression={p: self.text_compression if _is_text(p) else "snappy" for p in paths},
                write_statistics=[p for p in paths if not _is_text(p)],
            )
        writer.write_table(data)

    def append_many(self, items: list[tuple[str, pl.DataFrame]]) -> None:
        """Hand (table, frame) pairs to the writer lanes (returns before the write is done). `table` is
        a name of TABLES: the writer stores what it is given, under the name it is given.

        A table's frame is handed over once its previous one is written: the writer holds at most one
        frame per table (one batch) while the next batch is computed, whatever the input size. Tables
        can come in several calls per batch, so that writing starts as soon as each is ready.
        """
        batch = []
        for name, frame in items:
            if name not in self._export_of:
                # only the stored columns travel (an exchange's texts stay in `turns`); an exported
                # frame keeps all of its own for the parquet file
                frame = frame.select(TABLES[name].names())
            if frame.height:
                if name not in self._tables:
                    self._tables[name] = _Table(self.con, name)
                batch.append((self._tables[name], frame))
        for table, _ in batch:
            writing, table.writing = table.writing, None
            if writing is not None:
                writing.result()  # raises what went wrong with it
        # slowest first: the lanes take the next table as they free up, which balances them
        for table, frame in sorted(batch, key=lambda tf: (tf[0].seconds, tf[1].estimated_size()), reverse=True):
            table.writing = self._lanes.submit(self._write, table, frame)

    def _close_lanes(self, commit: bool) -> None:
        if self._closed:
            return
        self._closed = True
        # every table's last insert ends (or fails) before the connections are closed
        closing = [self._lanes.submit(t.close, commit) for t in self._tables.values()]
        wait(closing)
        self._lanes.shutdown()
        with _writing(self.out_dir):  # the last commits write too
            for done in closing:
                done.result()

    def commit(self, run: dict) -> None:
        """Record the run, export parquet, and atomically replace the store."""
        self._close_lanes(commit=True)
        row = {k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v for k, v in run.items()}
        cols = ", ".join(row)
        with _writing(self.out_dir):
            self.con.execute(f"insert into runs ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
            self.con.execute(_VIEWS)
            for name, table in EXPORTS.items():
                if name in self._exports:
                    self._exports.pop(name).close()
                else:  # nothing of this kind in the run: an empty file with the table's schema
                    pq.write_table(_compact(empty(TABLES[table])), self._export_paths[name])
            self.con.execute("checkpoint")
            self.con.close()
            os.replace(self.tmp, self.out_dir / DB_NAME)
            for name, tmp in self._export_paths.items():
                os.replace(tmp, self.out_dir / f"{name}.parquet")

    def abort(self) -> None:
        try:
            self._close_lanes(commit=False)
        except BaseException:  # noqa: BLE001, S110 (the run failed already: its error is the one to raise)
            pass
        try:
            for writer in self._exports.values():
                writer.close()
            self.con.close()
        finally:
            # the snapshot, DuckDB's WAL and spill directory of it, the parquet exports
            for leftover in self.out_dir.glob(f".*.{os.getpid()}.tmp*"):
                _remove(leftover)


def connect(store_dir: str | Path, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
    """A read-only view of a store directory: every table of every *.duckdb file in it.

    `dsat.duckdb` is attached as the default catalog; tables of the other files (train.duckdb,
    cache.duckdb, ...) are reachable unqualified too, through views, unless their name is taken.
    `sandboxed=True` (for SQL a user types): once the files are attached, the connection reaches no
    other file and no network (`enable_external_access=false`: no COPY TO, ATTACH, INSTALL, LOAD,
    read_csv of other paths) and its settings are locked (`lock_configuration=true`).
    """
    d = Path(store_dir)
    if not d.is_dir():
        raise StoreError(f"{d} is not a directory")
    files = sorted(d.glob("*.duckdb"), key=lambda p: (p.name != DB_NAME, p.name))
    if not files:
        raise StoreError(f"{d} holds no .duckdb file")
    if all(f.name == CACHE_NAME for f in files):  # a run that failed before its first commit
        raise StoreError(f"{d} holds no store yet (only the detectors' {CACHE_NAME})")
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
    if sandboxed:
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    return con
