"""Finding log files (paths, globs, directories) and streaming their rows in bounded batches.

Readers yield raw rows only; what the rows mean is `formats.py`'s business. Every reader numbers rows
from 0 in file order (the physical line for JSONL, the element for a JSON array, the row for parquet),
so a quarantined row can be found again in the file.

Damaged files keep every whole row: a gzip stream cut short (a partial download) or damaged inside
(a corrupt block, a bad checksum, garbage after the last member) reads as far as zlib can decompress,
a JSON array that ends mid-record yields every element before the cut, one followed by more data
yields all its elements; the damaged part is reported once (`Records.cut`, with its reason) instead of
failing the file. A UTF-8 byte-order mark is skipped.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dsatkit.duck import local_connection
from dsatkit.errors import InputError
from dsatkit.logs.quarantine import CORRUPT, TRAILING, TRUNCATED

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")
"""File names `read_logs` picks up when given a directory (a file named explicitly may have any name)."""

SUPPORTED = "parquet, jsonl, jsonl.gz, json, json.gz"
"""The containers `read_logs` reads, as error messages list them."""

_TABLES = {".csv": "CSV", ".csv.gz": "CSV", ".tsv": "TSV", ".tsv.gz": "TSV"}
"""Text tables: not a log format, whatever their columns (named directly, they are an InputError)."""

# why a file inside a directory was passed over (`Found.skipped`): a reason, or `OTHER_SUFFIX` with
# the file's suffix, so that a summary can say "3 .csv, 1 .txt"
HIDDEN = "hidden"
DANGLING = "dangling symlink"
NOT_A_FILE = "not a regular file"
OTHER_SUFFIX = "not a log file ({suffix})"

READ_BYTES = 32 << 20
"""Bytes (decompressed) per read of a JSON lines file or JSON array: the unit of memory and of vectorised work."""
_GZIP_CHUNK = 1 << 20  # compressed bytes fed to zlib at a time
_BOM = b"\xef\xbb\xbf"
_HEAD = 4096  # bytes of a cut record kept to show it


@dataclass
class Found:
    """The files named by some paths, and how many were passed over inside directories, by reason."""

    files: list[str]
    skipped: Counter[str] = field(default_factory=Counter)


def expand_paths(paths: Sequence[str | Path]) -> Found:
    """Files named by `paths` (files, shell globs with `**`, directories), in order, each once.

    A directory gives the files under it whose names end in `SUFFIXES`; hidden files and directories
    (a name starting with a dot), dangling symlinks, other names and things that are not files are
    passed over and counted in `Found.skipped`.
    """
    out: list[str] = []
    skipped: Counter[str] = Counter()
    for given in paths:
        p = str(given)
        if os.path.isdir(p):
            here: Counter[str] = Counter()
            found = _walk(p, here)
            skipped.update(here)
            if not found:
                passed = f"; passed over: {describe_skipped(here)}" if here else ""
                raise InputError(
                    f"{p}: directory holds no log files ({', '.join(SUFFIXES)}{passed})",
                    hint="point at the files themselves, or a directory that holds some",
                )
        elif os.path.isfile(p):
            found = [p]
        elif glob.has_magic(p):
            matched = sorted(glob.glob(p, recursive=True))
            found = [f for f in matched if os.path.isfile(f)]
            skipped.update(DANGLING for f in matched if os.path.islink(f) and not os.path.exists(f))
            if not found:
                raise InputError(f"{p}: the pattern matches no files", hint="check the pattern and the directory")
        elif os.path.islink(p):
            raise InputError(f"{p}: dangling symlink (it points to {os.readlink(p)}, which does not exist)",
                             hint="check the path")
        else:
            raise InputError(f"{p}: no such file or directory", hint="check the path")
        out.extend(found)
    return Found(list(dict.fromkeys(out)), skipped)  # the same file named twice is read once


def describe_skipped(skipped: Counter[str] | dict[str, int]) -> str:
    """`skipped` as one line, most frequent first: '3 not a log file (.csv), 1 hidden'."""
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _walk(root: str, skipped: Counter[str]) -> list[str]:
    """The log files under `root`, sorted; what is passed over is counted in `skipped`. Symlinked
    directories are followed, each real directory once (a link loop ends)."""
    found: list[str] = []
    seen: set[str] = set()
    for here, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        skipped.update(HIDDEN for d in dirs if d.startswith("."))  # not looked into
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = os.path.join(here, name)
            why = _passed_over(name, path)
            if why:
                skipped[why] += 1
            else:
                found.append(path)
    return sorted(found)


def _passed_over(name: str, path: str) -> str | None:
    """Why a file found in a directory is not read, or None."""
    if name.startswith("."):
        return HIDDEN
    if not os.path.exists(path):
        return DANGLING
    if not os.path.isfile(path):
        return NOT_A_FILE
    if not name.lower().endswith(SUFFIXES):
        return OTHER_SUFFIX.format(suffix=_suffix(name))
    return None


def _suffix(name: str) -> str:
    """'.csv', '.csv.gz', or 'no suffix'."""
    stem, ext = os.path.splitext(name.lower())
    if ext == ".gz" and os.path.splitext(stem)[1]:
        ext = os.path.splitext(stem)[1] + ext
    return ext or "no suffix"


def kind_of(path: str) -> str:
    """'parquet', 'jsonl' or 'json' (a top-level array), from the file's first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    table = next((what for ext, what in _TABLES.items() if path.lower().endswith(ext)), None)
    if table:
        raise InputError(
            f"{path}: {table} is not a supported log format (supported: {SUPPORTED})",
            hint="convert it, e.g. a flat turn table (conversation_id, role, content): "
            "python -c \"import polars as pl; pl.read_csv('IN.csv').write_parquet('OUT.parquet')\"",
        )
    if path.lower().endswith(".parquet") and head:
        raise InputError(f"{path}: not a parquet file (no PAR1 header)", hint="check the file; it may be truncated or mislabelled")
    try:
        with Source(path) as src:
            start = src.read(4096).lstrip()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: cannot read the file ({e})") from None
    # `[` opens a JSON array; anything else is read line by line (a `.json` file of one object per
    # line is common, and lines that are not JSON get quarantined one by one)
    return "json" if start[:1] == b"[" else "jsonl"


def _salvage(z: zlib._Decompress, chunk: bytes, step: int = 4096) -> bytes:
    """All that `z` decompresses from `chunk` before the damage in it: fed `step` bytes at a time, and
    the piece that fails again a byte at a time (zlib drops the output of a call that fails)."""
    out = []
    for i in range(0, len(chunk), step):
        before = z.copy()
        try:
            out.append(z.decompress(chunk[i:i + step]))
        except zlib.error:
            return b"".join(out) + (_salvage(before, chunk[i:i + step], 1) if step > 1 else b"")
    return b"".join(out)


class Source:
    """The bytes of a file, gunzipped when it starts with the gzip magic bytes, without a leading UTF-8
    byte-order mark. `offset` counts the bytes read so far (decompressed, the mark included).

    A gzip stream that ends before its end-of-stream marker (a partial download) reads as far as it
    goes and then sets `truncated` (`gzip.open` raises instead, and loses the buffer it was filling);
    one that zlib cannot decompress further (a corrupt block, a bad checksum, bytes after the last
    member that are not another member) does the same, and `damage` says which (a quarantine reason).
    """

    def __init__(self, path: str):
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close / the context manager)
        self.gzipped = self._f.read(2) == b"\x1f\x8b"
        self._f.seek(0)
        self._z = zlib.decompressobj(31) if self.gzipped else None
        self._ended = False
        self._started = False
        self.truncated = False
        self.damage = TRUNCATED
        self.offset = 0
        self._salvaged = b""

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; b"" only at the end."""
        if not self._started:  # the first read holds the whole mark, if there is one
            self._started = True
            data = self._read(max(n, len(_BOM)))
            if data.startswith(_BOM):
                data = data[len(_BOM):] or self._read(n)
                self.offset += len(_BOM)
        else:
            data = self._read(n)
        self.offset += len(data)
        return data

    def _read(self, n: int) -> bytes:
        return self._gunzip(n) if self._z is not None else self._f.read(n)

    def _gunzip(self, n: int) -> bytes:
        out: list[bytes] = []
        size = 0
        while size < n and not self._ended:
            z = self._z
            assert z is not None
            between = z.eof
            if between:  # a member ended: another may follow (concatenated gzip files are one stream)
                chunk = z.unused_data or self._f.read(_GZIP_CHUNK)
                if not chunk.strip(b"\0"):  # the end (some writers pad with zeros)
                    self._ended = True
                    break
                self._z = z = zlib.decompressobj(31)
            else:
                chunk = z.unconsumed_tail or self._f.read(_GZIP_CHUNK)
                if not chunk:  # the file ends inside a member
                    out.append(z.flush())
                    size += len(out[-1])
                    self.truncated = self._ended = True
                    break
            before = z.copy()
            try:
                out.append(z.decompress(chunk, n - size))
            except zlib.error:  # what came before is kept; the rest of the file cannot be read
                self.truncated = self._ended = True
                # after a whole member, bytes that do not open another are not gzip data at all
                self.damage = TRAILING if between and not chunk.startswith(b"\x1f\x8b") else CORRUPT
                # zlib drops what the failing call had decompressed (a whole chunk's worth, all of a
                # small file for a bad checksum at its end): decompress the chunk again, a little at a time
                self._salvaged = _salvage(before, chunk)
                break
            size += len(out[-1])
        if self._salvaged and size < n:  # what the damaged chunk still gave, served before the end
            out.append(self._salvaged[:n - size])
            self._salvaged = self._salvaged[n - size:]
        return b"".join(out)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Cut:
    """The unfinished record at the end of a file that stops mid-record (a gzip stream cut short, a
    JSON array never closed; or a quote or bracket that never closes): where it would be, how it starts."""

    row: int  # the row number it would have had
    start: int  # byte offset where it starts, in the decompressed stream of a gzip file
    end: int  # where the file ends (decompressed; for a damaged gzip stream, as far as it could be read)
    head: bytes  # its first bytes (empty when the file stops between records)
    gzipped: bool = False
    reason: str = TRUNCATED  # the quarantine reason: truncated, corrupt compressed data, data after the end

    def describe(self) -> str:
        """'bytes 1200-1520: {"id": ...' (decompressed bytes for a gzip file)."""
        where = f"bytes {self.start}-{self.end}" + (" (decompressed)" if self.gzipped else "")
        what = self.head.decode("utf-8", "backslashreplace") if self.head else "(the file stops between records)"
        return f"{where}: {what}"


class Records:
    """The raw records of a JSON lines file or a JSON array: frames of (`_row`, `_bytes`) with up to
    `batch_rows` non-blank records each. Once they are all read, `cut` is the record that a file
    ending mid-record was cut in (see `Cut`), else None."""

    def __init__(self, pieces: Generator[pa.Array, None, Cut | None], batch_rows: int):
        self.cut: Cut | None = None
        self._frames = self._batches(pieces, batch_rows)

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> pl.DataFrame:
        return next(self._frames)

    def _batches(self, pieces: Generator[pa.Array, None, Cut | None], batch_rows: int) -> Iterator[pl.DataFrame]:
        pending: list[pl.DataFrame] = []
        n_pending = 0
        row = 0
        while True:
            try:
                records = next(pieces)
            except StopIteration as end:
                self.cut = end.value
                break
            frame = pl.DataFrame({"_bytes": pl.from_arrow(records)}).with_row_index("_row", offset=row)
            row += len(records)
            # empty records are skipped here (still counted in the row numbers); lines of only spaces
            # or "\r" are skipped after decoding
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


def iter_jsonl(path: str, batch_rows: int, buffer_bytes: int = READ_BYTES) -> Records:
    """The lines of a JSON lines file (gzipped or not) as `Records`, numbered by physical line.

    Lines are split by Arrow in C, whole buffers at a time; empty lines are skipped (they still count
    in the line numbers). Bytes stay bytes here so that a line that is not UTF-8 reaches quarantine
    instead of failing the file. In a gzip file cut short, the bytes after the last newline are the
    cut record (a plain file's last line is a line, with or without a newline).
    """
    return Records(_lines(path, buffer_bytes), batch_rows)


def _lines(path: str, buffer_bytes: int) -> Generator[pa.Array, None, Cut | None]:
    """The lines of a file (newlines dropped), in order, as Arrow arrays: per buffer read, the line
    begun in the previous buffer, then the buffer's own lines, split without copying the buffer in
    Python (slicing and concatenating 32 MB bytes objects cost ~half of the reader's time)."""
    rest = b""  # the unterminated line at the end of the previous buffer
    n = 0
    with Source(path) as src:
        while True:
            buf = src.read(buffer_bytes)
            if not buf:
                if src.truncated:
                    return Cut(n, src.offset - len(rest), src.offset, rest[:_HEAD], gzipped=True, reason=src.damage)
                if rest:
                    yield pa.array([rest], pa.large_binary())
                return None
            first, last = buf.find(b"\n"), buf.rfind(b"\n")
            if first < 0:
                rest += buf  # a line longer than a buffer
                continue
            yield pa.array([rest + buf[:first]], pa.large_binary())
            n += 1
            if last > first:
                body = pa.py_buffer(memoryview(buf)[first + 1 : last])  # zero-copy
                offsets = pa.py_buffer(np.array([0, body.size], dtype=np.int64))
                whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, body])
                lines = pc.split_pattern(whole, b"\n").flatten()
                yield lines
                n += len(lines)
            rest = buf[last + 1 :]


def iter_json_array(path: str, batch_rows: int, buffer_bytes: int = READ_BYTES) -> Records:
    """The elements of a top-level JSON array (gzipped or not) as `Records`, numbered from 0, each the
    element's JSON text without the whitespace around it.

    The array is split into elements by `ArrayScanner` one buffer at a time, so memory holds a buffer
    and one element, never the file; the elements are parsed later, a batch at a time. An element
    that is not valid JSON (or not UTF-8) is a bad row, not a bad file. A file that ends before the
    array is closed keeps every element before the cut; the unfinished one is `Records.cut`, as is the
    data after the array's closing bracket, if any. Raises InputError where the array itself is broken
    (a bracket that closes it early).
    """
    return Records(_elements(path, buffer_bytes), batch_rows)


def _elements(path: str, buffer_bytes: int) -> Generator[pa.Array, None, Cut | None]:
    scan = ArrayScanner(path)
    pending = b""  # the element begun in the previous buffer
    start: int | None = None  # where the current element starts in `data`, once the array is open
    n = 0
    with Source(path) as src:
        while True:
            buf = src.read(buffer_bytes)
            if not buf:
                break
            if scan.closed:
                if (after := _data_after(n, buf, src.offset - len(buf), src)) is not None:
                    return after
                continue
            data = pending + buf if pending else buf
            shift = len(data) - len(buf)
            opened, seps, close = scan.scan(buf, src.offset - len(buf))
            if opened is not None:
                start = opened + 1 + shift
            ends = seps + shift if close is None else np.append(seps, close) + shift
            if start is not None and len(ends):
                starts = np.concatenate(([start], ends[:-1] + 1))
                records = _slices(data, starts, ends)
                yield records
                n += len(records)
                start = int(ends[-1]) + 1
            if close is not None:
                if (after := _data_after(n, buf[close + 1 :], src.offset - len(buf) + close + 1, src)) is not None:
                    return after
                pending = b""
            else:
                pending = data[start:] if start is not None else b""
                start = 0 if start is not None else None
        end = src.offset
        if scan.closed:  # whole, unless only the end of a gzip stream is missing (its check unchecked)
            return Cut(n, end, end, b"", src.gzipped, src.damage) if src.truncated else None
        head = pending.lstrip()
        at = end - len(head)
        head = head.rstrip()
        if head and scan.depth == 1 and not scan.in_string:
            # the last element is whole, only the array is not closed: it is a record like the others
            yield _slices(head, np.array([0]), np.array([len(head)]))
            return Cut(n + 1, end, end, b"", src.gzipped, src.damage)
        return Cut(n, at, end, head[:_HEAD], src.gzipped, src.damage)


def _data_after(n: int, rest: bytes, offset: int, src: Source) -> Cut | None:
    """The data after a JSON array's closing bracket (`rest`, at byte `offset`), if it is not blank: a
    `Cut` with reason TRAILING and the row number `n` (what follows is not read: several JSON documents
    joined together, or garbage)."""
    stripped = rest.lstrip()
    if not stripped:
        return None
    at = offset + len(rest) - len(stripped)
    return Cut(n, at, src.offset, stripped[:_HEAD], src.gzipped, TRAILING)


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\r\n")] = True
_MARKED = bytes(1 if c in b'{}[],"\\' else 0 for c in range(256))  # bytes.translate: 1 where it matters
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN, _CLOSE = np.frombuffer(b"{[", np.uint8), np.frombuffer(b"}]", np.uint8)
_MAX_TRIM = 64  # whitespace bytes trimmed around an element (a longer run is left to the parser)


class ArrayScanner:
    """Finds where the elements of a top-level JSON array begin and end, one buffer at a time.

    Vectorised with numpy (no Python loop over bytes or records): the bytes that matter (brackets,
    commas, quotes, backslashes; a few % of the text) are picked out in one pass; escaped quotes are
    found from the runs of backslashes before them, the other quotes delimit strings, and the brackets
    and commas outside strings are counted; a comma at depth 1 separates two elements. The state carried
    from one buffer to the next: the depth, whether a string is open, whether a backslash escapes the
    next byte. The elements themselves are not validated here (their parser does that, row by row).
    """

    def __init__(self, path: str):
        self.path = path
        self.depth = 0
        self.in_string = False
        self.escape = False  # the previous buffer ended in an odd run of backslashes
        self.closed = False

    def scan(self, buf: bytes, offset: int) -> tuple[int | None, np.ndarray, int | None]:
        """(position of the array's opening bracket if in `buf`, positions of the commas between
        elements, position of the closing bracket if in `buf`); `offset` is `buf`'s byte offset in the
        file, for error messages."""
        pos = np.flatnonzero(np.frombuffer(buf.translate(_MARKED), dtype=np.bool_))
        chars = np.frombuffer(buf, np.uint8)[pos]
        quote = chars == _QUOTE
        quote[quote] = ~self._escaped(pos[quote], pos[chars == _BACKSLASH], len(buf))
        # a mark is outside strings when an even number of quotes comes before it (odd if one is open)
        inside = (np.cumsum(quote) + self.in_string) % 2 == 1
        self.in_string = bool((np.count_nonzero(quote) + self.in_string) % 2)
        keep = ~inside & (chars != _QUOTE) & (chars != _BACKSLASH)
        marks, chars = pos[keep], chars[keep]
        step = np.isin(chars, _OPEN).astype(np.int64) - np.isin(chars, _CLOSE)
        depth = self.depth + np.cumsum(step)
        opened = None
        if self.depth == 0 and len(marks):
            if chars[0] != ord("["):
                raise InputError(f"{self.path}: unreadable (not a JSON array: {chr(chars[0])!r} at byte {offset + marks[0]})")
            opened = int(marks[0])
        closes = np.flatnonzero(depth == 0)
        close = None
        if len(closes):
            i = int(closes[0])
            if chars[i] != ord("]"):
                raise InputError(
                    f"{self.path}: unreadable (unbalanced {chr(chars[i])!r} at byte {offset + int(marks[i])}: it closes "
                    "the top-level JSON array)", hint="check the file: a bracket is missing or extra")
            close = int(marks[i])
            self.closed = True
            marks, chars, depth = marks[:i], chars[:i], depth[:i]
        if len(depth):
            self.depth = int(depth[-1]) if close is None else 0
        seps = marks[(chars == _COMMA) & (depth == 1)]
        return opened, seps, close

    def _escaped(self, quotes: np.ndarray, slashes: np.ndarray, size: int) -> np.ndarray:
        """Which `quotes` are escaped (preceded by an odd run of backslashes); updates `escape` for the
        next buffer, whose first byte a run at the end of this one may escape."""
        if self.escape:  # a run that began in the previous buffer: only its parity matters
            slashes = np.concatenate(([-1], slashes))
        if not len(slashes):
            self.escape = False
            return np.zeros(len(quotes), dtype=bool)
        breaks = np.flatnonzero(np.diff(slashes) != 1)
        first = slashes[np.concatenate(([0], breaks + 1))]
        last = slashes[np.concatenate((breaks, [len(slashes) - 1]))]
        odd = (last - first) % 2 == 0  # runs of odd length
        self.escape = bool(last[-1] == size - 1 and odd[-1])
        k = np.minimum(np.searchsorted(last, quotes - 1), len(last) - 1)
        return (last[k] == quotes - 1) & odd[k]


def _slices(data: bytes, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The byte ranges [starts, ends) of `data`, without the whitespace around them, as one Arrow array."""
    b = np.frombuffer(data, np.uint8)
    starts, ends = starts.astype(np.int64), ends.astype(np.int64)
    for _ in range(_MAX_TRIM):
        more = starts < ends
        more[more] = _WHITESPACE[b[starts[more]]]
        if not more.any():
            break
        starts += more
    for _ in range(_MAX_TRIM):
        more = ends > starts
        more[more] = _WHITESPACE[b[ends[more] - 1]]
        if not more.any():
            break
        ends -= more
    bounds = np.empty(2 * len(starts), dtype=np.int64)  # element, gap, element, gap, ... element
    bounds[0::2], bounds[1::2] = starts, ends
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(bounds) - 1, [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )
    return whole.take(pa.array(np.arange(0, len(bounds) - 1, 2)))


# ---------------------------------------------------------------- parquet

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


def as_text(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Binary columns (at any depth: Spark and some exporters write strings as binary) read as text.

    Returns (the rows whose bytes are all UTF-8, binary now String; (`_row`, `_raw`) for the others,
    `_raw` being the row as JSON with its bad bytes shown as \\xNN). A frame without binary columns is
    returned as it is. Checked per column at once; row by row (in DuckDB) only when a column fails.
    """
    binary = {c: _text_dtype(dt) for c, dt in df.schema.items() if _has_binary(dt)}
    if not binary:
        return df, _NO_BAD
    try:
        return df.cast(binary), _NO_BAD  # type: ignore[arg-type]
    except pl.exceptions.PolarsError:
        pass
    bad = np.zeros(df.height, dtype=bool)
    for col in binary:
        arr = df[col].to_arrow(compat_level=pl.CompatLevel.oldest())
        for leaf, rows in _binary_leaves(arr, np.arange(len(arr))):
            bad[rows[_not_utf8(leaf)]] = True
    mask = pl.Series(bad)
    rejected = df.filter(mask)
    raw = [json.dumps(r, default=_jsonable, ensure_ascii=False, separators=(",", ":"))
           for r in rejected.drop("_row").to_dicts()]
    return (df.filter(~mask).cast(binary),  # type: ignore[arg-type]
            pl.DataFrame({"_row": rejected["_row"], "_raw": pl.Series(raw, dtype=pl.String)}))


_NO_BAD = pl.DataFrame(schema={"_row": pl.Int64, "_raw": pl.String})


def _has_binary(dt: pl.DataType) -> bool:
    if dt == pl.Binary:
        return True
    if isinstance(dt, (pl.List, pl.Array)):
        return _has_binary(dt.inner)
    if isinstance(dt, pl.Struct):
        return any(_has_binary(f.dtype) for f in dt.fields)
    return False


def _text_dtype(dt: pl.DataType) -> pl.DataType:
    """`dt` with String wherever it has Binary."""
    if dt == pl.Binary:
        return pl.String()
    if isinstance(dt, pl.List):
        return pl.List(_text_dtype(dt.inner))
    if isinstance(dt, pl.Array):
        return pl.Array(_text_dtype(dt.inner), dt.shape)
    if isinstance(dt, pl.Struct):
        return pl.Struct({f.name: _text_dtype(f.dtype) for f in dt.fields})
    return dt


def _binary_leaves(arr: pa.Array, rows: np.ndarray) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """The binary values under `arr` (an Arrow array of some nesting), each with the row it belongs to."""
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        yield arr, rows
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        yield from _binary_leaves(arr.flatten(), rows[pc.list_parent_indices(arr).to_numpy()])
    elif pa.types.is_struct(t):
        for child in arr.flatten():
            yield from _binary_leaves(child, rows)


def text_or_null(values: pl.Series) -> pl.Series:
    """A column of ids as text: binary that is UTF-8 decoded, other bytes null; numbers as text; "" null."""
    if values.dtype == pl.Binary:
        values = pl.Series(values.name, _decoded(values.to_arrow(compat_level=pl.CompatLevel.oldest()))["text"])
    elif values.dtype != pl.String and not values.dtype.is_numeric():
        return pl.Series(values.name, [None] * len(values), dtype=pl.String)
    values = values.cast(pl.String)
    return values.set(values == "", None)


def _not_utf8(values: pa.Array) -> np.ndarray:
    """Which of `values` (binary) are not valid UTF-8 (nulls are valid)."""
    return np.asarray(_decoded(values)["bad"], dtype=bool)


def _decoded(values: pa.Array) -> dict[str, np.ndarray]:
    """{"text": `values` (binary) decoded, null where not UTF-8; "bad": where that is}, by DuckDB."""
    t = pa.table({"v": values})  # noqa: F841 (read by DuckDB by name)
    return local_connection().sql("select try(decode(v)) as text, v is not null and text is null as bad from t").fetchnumpy()


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
