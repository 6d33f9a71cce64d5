"""Finding log files (paths, globs, directories) and streaming their rows in bounded batches.

Readers yield raw rows only; what the rows mean is `formats.py`'s business. Every reader numbers rows
from 0 in file order (the physical line for JSONL, the element for a JSON array, the row for parquet),
so a quarantined row can be found again in the file.
"""

from __future__ import annotations

import glob
import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dsatkit.errors import InputError

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")
"""File names `read_logs` picks up when given a directory (a file named explicitly may have any name)."""

_READ_BYTES = 32 << 20  # decompressed bytes per read of a JSONL file


def expand_paths(paths: Sequence[str | Path]) -> list[str]:
    """Files named by `paths` (files, shell globs with `**`, directories), in order, each once."""
    out: list[str] = []
    for given in paths:
        p = str(given)
        if os.path.isdir(p):
            found = sorted(
                f
                for f in glob.glob(os.path.join(glob.escape(p), "**", "*"), recursive=True)
                if os.path.isfile(f) and f.lower().endswith(SUFFIXES)
            )
            if not found:
                raise InputError(
                    f"{p}: directory holds no log files ({', '.join(SUFFIXES)})",
                    hint="point at the files themselves, or a directory that holds some",
                )
        elif os.path.isfile(p):
            found = [p]
        elif glob.has_magic(p):
            found = sorted(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
            if not found:
                raise InputError(f"{p}: the pattern matches no files", hint="check the pattern and the directory")
        else:
            raise InputError(f"{p}: no such file or directory")
        out.extend(found)
    return list(dict.fromkeys(out))  # the same file named twice is read once


def kind_of(path: str) -> str:
    """'parquet', 'jsonl' or 'json' (a top-level array), from the file's first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    if path.lower().endswith(".parquet") and head:
        raise InputError(f"{path}: not a parquet file (no PAR1 header)", hint="check the file; it may be truncated or mislabelled")
    try:
        with _open(path) as f:
            start = f.read(4096).lstrip()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot read the file ({e})") from None
    # `[` opens a JSON array; anything else is read line by line (a `.json` file of one object per
    # line is common, and lines that are not JSON get quarantined one by one)
    return "json" if start[:1] == b"[" else "jsonl"


def _open(path: str):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def iter_parquet(path: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Row batches of a parquet file, read one slice at a time (never the whole file).

    Polars decodes a slice's row groups in parallel (~3x pyarrow's `iter_batches` on 2 cores). Slices
    rather than `collect_batches`, which reads ahead without bound when the consumer is slower (it
    held ~900 MB of a 1 GB file while the first batch was mined). pyarrow remains the fallback for
    files whose types Polars cannot read, and for row groups much larger than a batch.
    """
    meta = pq.read_metadata(path)
    if max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)), default=0) > 2 * batch_rows:
        # Polars decodes a row group whole for any slice of it: slicing a big row group batch by
        # batch decodes it again for every batch (measured: 400k rows in one group, 50k batches,
        # 5.9 s against 1.0 s). pyarrow streams it page by page instead.
        yield from _iter_parquet_arrow(path, batch_rows)
        return
    try:
        scan = pl.scan_parquet(path)
        rows = scan.select(pl.len()).collect().item()
        first = scan.slice(0, batch_rows).collect()
    except pl.exceptions.PolarsError:
        yield from _iter_parquet_arrow(path, batch_rows)
        return
    yield first
    for offset in range(batch_rows, rows, batch_rows):
        yield scan.slice(offset, batch_rows).collect()


def _iter_parquet_arrow(path: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    # pre_buffer (pyarrow's default) keeps every column chunk it has read alive until the file is
    # closed: peak memory then grows with the file instead of the batch
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22)
    for rb in pf.iter_batches(batch_size=batch_rows):
        yield pl.from_arrow(pa.Table.from_batches([rb]))  # type: ignore[misc]


def parquet_columns(path: str) -> list[str]:
    return list(pq.read_schema(path).names)


def iter_jsonl(path: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of (`_row` line number, `_bytes` the line) with up to `batch_rows` non-blank lines each.

    Lines are split by Arrow in C, whole buffers at a time; empty lines are skipped (they still count
    in the line numbers). Bytes stay bytes here so that a line that is not UTF-8 reaches quarantine
    instead of failing the file.
    """
    pending: list[pl.DataFrame] = []
    n_pending = 0
    line_no = 0
    with _open(path) as f:
        for lines in _split_lines(f):
            frame = pl.DataFrame({"_bytes": pl.from_arrow(lines)}).with_row_index("_row", offset=line_no)
            line_no += len(lines)
            # empty lines are skipped here; lines of only spaces or "\r" are skipped after decoding
            frame = frame.with_columns(pl.col("_row").cast(pl.Int64)).filter(pl.col("_bytes").bin.size() > 0)
            pending.append(frame)
            n_pending += frame.height
            while n_pending >= batch_rows:
                whole = pl.concat(pending) if len(pending) > 1 else pending[0]
                yield whole.head(batch_rows)
                tail = whole.slice(batch_rows)
                pending, n_pending = ([tail], tail.height) if tail.height else ([], 0)
    if n_pending:
        yield pl.concat(pending) if len(pending) > 1 else pending[0]


def _split_lines(f) -> Iterator[pa.Array]:
    """The lines of a binary stream (newlines dropped), in order, as Arrow arrays: per buffer read, the
    line begun in the previous buffer, then the buffer's own lines, split without copying the buffer
    in Python (slicing and concatenating 32 MB bytes objects cost ~half of the reader's time)."""
    rest = b""  # the unterminated line at the end of the previous buffer
    while True:
        buf = f.read(_READ_BYTES)
        if not buf:
            if rest:
                yield pa.array([rest], pa.large_binary())
            return
        first, last = buf.find(b"\n"), buf.rfind(b"\n")
        if first < 0:
            rest += buf  # a line longer than a buffer
            continue
        yield pa.array([rest + buf[:first]], pa.large_binary())
        if last > first:
            body = pa.py_buffer(memoryview(buf)[first + 1 : last])  # zero-copy
            offsets = pa.py_buffer(np.array([0, body.size], dtype=np.int64))
            whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, body])
            yield pc.split_pattern(whole, b"\n").flatten()
        rest = buf[last + 1 :]


def iter_json_array(path: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of (`_row` element index, `_text` the element as JSON text) of a top-level JSON array.

    DuckDB streams the array (it never holds the whole document); the file must be valid JSON. The
    stream has a connection of its own: an open result blocks other queries on a connection.
    """
    esc = path.replace("'", "''")
    con = duckdb.connect()
    try:
        rel = con.sql(
            f"select json::VARCHAR as _text from read_json_objects('{esc}', format='array', "
            "maximum_object_size=1073741824)"
        )
        offset = 0
        for rb in rel.fetch_record_batch(batch_rows):
            frame = pl.from_arrow(pa.Table.from_batches([rb])).with_row_index("_row", offset=offset)  # type: ignore[union-attr]
            offset += frame.height
            yield frame.with_columns(pl.col("_row").cast(pl.Int64))
    finally:
        con.close()
