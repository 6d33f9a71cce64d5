"""Chat logs on disk -> batches of canonical TURNS, with every rejected row in QUARANTINE.

    reader = read_logs(["logs/*.parquet", "more-logs/"], ReadConfig())
    for batch in reader:
        batch.turns       # dsatkit.schema.TURNS, whole conversations only
        batch.quarantine  # dsatkit.schema.QUARANTINE
    reader.skipped        # files passed over inside the directories, by reason

Formats and the quarantine rules are described in docs/formats.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dsatkit import language
from dsatkit.config import ReadConfig
from dsatkit.errors import InputError, first_line
from dsatkit.logs import files
from dsatkit.logs.formats import (
    FORMATS,
    ROLE_ALIASES,
    Plan,
    json_frames,
    json_keys_sample,
    plan_for,
    table_frames,
)
from dsatkit.logs.normalise import SeenIds, flat_to_cm, split_carry, to_turns
from dsatkit.logs.quarantine import BAD_UTF8, EMPTY_FILE, UNREADABLE, one_row, whole_file
from dsatkit.schema import TURNS

__all__ = ["FORMATS", "LogBatch", "LogReader", "read_logs"]

# what a broken file raises from the libraries that read it (our own bugs are not swallowed)
_READ_ERRORS = (
    OSError, EOFError, zlib.error, pa.ArrowException, duckdb.InvalidInputException, duckdb.IOException,
    duckdb.ConversionException, pl.exceptions.PolarsError,
    # a damaged parquet footer can hold names that are not UTF-8 (pyarrow decodes them unchecked), and
    # Polars can panic on a damaged page: both mean the file cannot be read, not that dsatkit failed
    UnicodeDecodeError, pl.exceptions.PanicException,
)


@dataclass
class LogBatch:
    turns: pl.DataFrame  # exactly dsatkit.schema.TURNS
    quarantine: pl.DataFrame  # exactly dsatkit.schema.QUARANTINE
    source_file: str
    format: str  # openai | sharegpt | wildchat | lmsys | turns; unknown (unreadable) | empty (no rows)
    rows_read: int  # input rows/lines consumed by this batch (good + bad)
    conversations: int = 0  # kept conversations (distinct ids in `turns`)


class LogReader(Iterator[LogBatch]):
    """What `read_logs` returns: an iterator of LogBatch, that knows from the start which files it reads.

    `files`: the files to read, in order. `skipped`: the files passed over inside the directories given,
    counted by reason, most frequent first (`files.HIDDEN`, `files.DANGLING`, `files.NOT_A_FILE`, or
    "not a log file (.csv)" per suffix); `describe_skipped()` says it in one line ("" when none).
    `seen`: the conversation ids read before these files (a reader of the files that come after others,
    as a distributed executor runs one per file); their later copies are quarantined as duplicates.
    """

    def __init__(self, found: files.Found, config: ReadConfig, seen: SeenIds | None = None):
        self.files = found.files
        self.skipped = dict(sorted(found.skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        self._batches = _read_all(found.files, config, seen)

    def __next__(self) -> LogBatch:
        return next(self._batches)

    def close(self) -> None:
        """Stop reading (closes the file being read)."""
        self._batches.close()

    def describe_skipped(self) -> str:
        return files.describe_skipped(self.skipped)


def read_logs(paths: Sequence[str | Path] | str | Path, config: ReadConfig) -> LogReader:
    """Stream the conversations of `paths` (files, globs, directories) as batches of TURNS.

    Raises InputError at once for a path that matches nothing; while reading, for an unreadable or
    unrecognisable file unless `config.skip_bad_files` (then that file becomes one quarantine row and
    reading goes on). Conversation ids are unique across the whole call: later copies are quarantined.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    return LogReader(files.expand_paths(paths), config)


def _read_all(todo: list[str], config: ReadConfig, seen: SeenIds | None = None) -> Iterator[LogBatch]:
    seen = SeenIds() if seen is None else seen
    roles = {**ROLE_ALIASES, **{k.strip().lower(): v for k, v in config.role_aliases.items()}}
    con = duckdb.connect()
    try:
        con.sql("SET TimeZone = 'UTC'")
        for path in todo:
            try:
                empty = True
                for batch in _read_file(path, config, con, seen, roles):
                    empty = empty and not batch.rows_read
                    yield batch
                if empty:  # no row to keep or reject: one quarantine row says the file was seen
                    yield LogBatch(pl.DataFrame(schema=TURNS), whole_file(path, EMPTY_FILE), path, "empty", 0)
            except (InputError, *_READ_ERRORS) as e:
                if not config.skip_bad_files:
                    if isinstance(e, InputError):
                        raise
                    raise InputError(f"{path}: unreadable ({_short(e)})") from e
                why = str(e).removeprefix(f"{path}: ") if isinstance(e, InputError) else _short(e)
                if why.startswith("unreadable (") and why.endswith(")"):  # not "unreadable file: unreadable (...)"
                    why = why[len("unreadable ("):-1]
                yield LogBatch(pl.DataFrame(schema=TURNS), whole_file(path, f"{UNREADABLE}: {why}"), path, "unknown", 0)
    finally:
        con.close()


def _short(e: BaseException) -> str:
    return first_line(e)[:200]


def _read_file(
    path: str, config: ReadConfig, con: duckdb.DuckDBPyConnection, seen: SeenIds, roles: Mapping[str, str]
) -> Iterator[LogBatch]:
    kind = files.kind_of(path)
    if kind == "parquet":
        plan = plan_for(path, files.parquet_columns(path), config.format)
        offset = 0

        def typed() -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]]:
            nonlocal offset
            for df in files.iter_parquet(path, _batch_rows(plan, config)):  # _batches need not join them
                df = df.with_row_index("_row", offset=offset).with_columns(pl.col("_row").cast(pl.Int64))
                offset += df.height
                text, bad = files.as_text(df)  # binary columns as text; rows that are not UTF-8 apart
                c, m = table_frames(text, plan)
                if m is None:  # a flat table: a bad row is a bad message of its conversation
                    c = c.with_columns(m_bad=pl.lit(None, pl.String))
                if bad.height:
                    c = pl.concat([c, _not_utf8_rows(df, bad, plan, flat=m is None)], how="diagonal_relaxed").sort("_row")
                yield c, m, pl.concat([text, bad], how="diagonal_relaxed")  # `_raw`: the bad rows' text

        yield from _batches(typed(), plan, path, config, seen, roles)
        return

    records = files.iter_jsonl(path, config.batch_rows) if kind == "jsonl" else files.iter_json_array(
        path, config.batch_rows)
    first = next(records, None)
    while first is not None and _blank(first):  # lines of only spaces: nothing to read or reject
        first = next(records, None)
    if first is None:
        if records.cut is not None:  # not even one whole record
            yield _cut(path, records.cut, "unknown")
        return  # else read_logs records the empty file
    con.register("_chunk", first)
    try:
        keys = json_keys_sample(con, "_chunk")
    finally:
        con.unregister("_chunk")
    if not keys:
        _no_objects(path)
    plan = plan_for(path, keys, config.format)

    def parsed() -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]]:
        for chunk in _chain(first, records):
            con.register("_chunk", chunk)
            try:
                c, m = json_frames(con, "_chunk", plan)
            finally:
                con.unregister("_chunk")
            yield c, m, chunk  # the raw text of a rejected row is taken from its chunk (quarantine_frame)

    yield from _batches(parsed(), plan, path, config, seen, roles)
    if records.cut is not None:
        yield _cut(path, records.cut, plan.fmt.name)


def _not_utf8_rows(df: pl.DataFrame, bad: pl.DataFrame, plan: Plan, flat: bool) -> pl.DataFrame:
    """Rows for C (or R, in a flat table) that stand for the rows of `df` whose bytes are not UTF-8.

    A conversation format rejects the row (one conversation). A flat table keeps the row in its
    conversation, where it is a bad message (the others are then rejected with it), if its id is
    readable; else it stands alone.
    """
    if not flat:
        return bad.select("_row", _conv="_row", _bad=pl.lit(BAD_UTF8), _n=pl.lit(0, pl.Int32))
    ids = files.text_or_null(df.join(bad, on="_row", how="semi").sort("_row")[plan.ids[0]])
    return bad.sort("_row").select("_row").with_columns(conversation_id=ids).with_columns(
        _bad=pl.when(pl.col("conversation_id").is_null()).then(pl.lit(BAD_UTF8)), m_bad=pl.lit(BAD_UTF8))


def _no_objects(path: str) -> None:
    """Raise what is wrong with a JSON file in which no record of the first batch is a JSON object."""
    with files.Source(path) as src:
        head = src.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(b"\0") > len(head) // 4:
        raise InputError(f"{path}: UTF-16 (or another wide encoding) text; logs are read as UTF-8",
                         hint=f"convert it: iconv -f UTF-16 -t UTF-8 {path} > OUT.jsonl")
    line = head.lstrip().split(b"\n", 1)[0].strip()
    if line.startswith(b"{") and not line.endswith(b"}"):  # a record that goes on past its line
        raise InputError(f"{path}: one JSON document (an object over several lines), not JSON lines or an array",
                         hint="if it wraps the conversations ({\"data\": [...]}), write them out as an array: "
                              "python -c \"import json; json.dump(json.load(open('IN'))['data'], open('OUT.json', 'w'))\"")
    raise InputError(f"{path}: unrecognised log format (no record of its first batch is a JSON object)",
                     hint="see docs/formats.md for the formats read")


def _cut(path: str, cut: files.Cut, fmt: str) -> LogBatch:
    """The batch of the one quarantine row that stands for the damaged end of a file (see `files.Cut`):
    the record a truncated file was cut in, the undecompressable rest of a gzip stream, the data
    after a JSON array."""
    return LogBatch(pl.DataFrame(schema=TURNS), one_row(path, cut.row, cut.reason, cut.describe()), path, fmt, 1)


def _blank(chunk: pl.DataFrame) -> bool:
    """Whether a chunk of JSON lines holds nothing but whitespace (bytes: a line may not be UTF-8)."""
    return not pc.any(pc.match_substring_regex(chunk["_bytes"].to_arrow(), r"[^ \t\r\n\f\v]")).as_py()


def _with_last(items: Iterator) -> Iterator[tuple]:
    """(item, is_last) pairs: the last batch of a file needs no carry."""
    prev = next(items, _END)
    while prev is not _END:
        item = next(items, _END)
        yield prev, item is _END
        prev = item


_END = object()


def _chain(first: pl.DataFrame, rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    yield first
    yield from rest


FLAT_ROWS_PER_CONVERSATION = 5
"""A flat turn table is batched by `batch_rows` times this many rows: about as many conversations as a
batch of another format holds (measured, 1M conversations of 5 turns: 22 s against 31 s with batches
of `batch_rows` rows, whose fixed costs per batch then weigh 5x more)."""


def _batch_rows(plan: Plan, config: ReadConfig) -> int:
    """Input rows per batch: `batch_rows` conversations, in a flat table as many rows as they have."""
    return config.batch_rows * (FLAT_ROWS_PER_CONVERSATION if plan.fmt.messages is None else 1)


def _merged(
    frames: Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]], rows: int
) -> Iterator[tuple[pl.DataFrame, None, pl.DataFrame]]:
    """Consecutive front-end frames of a flat table joined into batches of at least `rows` rows."""
    pending: list[tuple[pl.DataFrame, pl.DataFrame]] = []
    n = 0
    for r, _, raw in frames:
        pending.append((r, raw))
        n += r.height
        if n >= rows:
            yield _joined(pending)
            pending, n = [], 0
    if pending:
        yield _joined(pending)


def _joined(pending: list[tuple[pl.DataFrame, pl.DataFrame]]) -> tuple[pl.DataFrame, None, pl.DataFrame]:
    if len(pending) == 1:
        return pending[0][0], None, pending[0][1]
    return (pl.concat([r for r, _ in pending], how="vertical_relaxed"), None,
            pl.concat([raw for _, raw in pending], how="vertical_relaxed"))


def _batches(
    frames: Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]],
    plan: Plan,
    path: str,
    config: ReadConfig,
    seen: SeenIds,
    roles: Mapping[str, str],
) -> Iterator[LogBatch]:
    """Validate each front-end batch; flat tables carry the conversations that may continue into the next one."""

    def emit(c: pl.DataFrame, m: pl.DataFrame, raw: pl.DataFrame, rows: int) -> LogBatch:
        turns, quarantine, kept = to_turns(c, m, raw, path, config.max_message_chars, seen, roles)
        turns = turns.with_columns(language.codes(turns["language"]))
        if config.infer_language:
            turns = language.fill_turns(turns)
        return LogBatch(turns, quarantine, path, plan.fmt.name, rows, kept)

    if plan.fmt.messages is not None:
        for c, m, raw in frames:
            assert m is not None
            yield emit(c, m, raw, c.height)
        return
    carry_r: pl.DataFrame | None = None
    carry_raw: pl.DataFrame | None = None
    rows = _batch_rows(plan, config)  # JSON is read before its format is known: its chunks are joined
    gap, window = 1, max(1, rows // 2)
    for (r, _, raw), last in _with_last(_merged(frames, rows)):
        if carry_r is not None and carry_r.height:
            r = pl.concat([carry_r, r], how="vertical_relaxed")
            raw = pl.concat([carry_raw, raw], how="vertical_relaxed")  # type: ignore[list-item]
        if last:
            now, carry_r = r, r.clear()
        else:
            now, carry_r, gap = split_carry(r, gap, window, rows)
        carried = raw["_row"].is_in(carry_r["_row"].implode())
        carry_raw, raw_now = raw.filter(carried), raw.filter(~carried)
        if now.height:
            yield emit(*flat_to_cm(now), raw_now, now.height)
    if carry_r is not None and carry_r.height:
        yield emit(*flat_to_cm(carry_r), carry_raw, carry_r.height)  # type: ignore[arg-type]
