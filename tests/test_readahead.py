"""ReadAhead: the items in order, one produced ahead at most, errors where they happened, clean stops."""

from __future__ import annotations

import threading
import time

import pytest

from dsatkit.readahead import ReadAhead


def test_items_come_in_order_and_at_most_one_ahead():
    produced: list[int] = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    seen = []
    for item in ReadAhead(items()):
        time.sleep(0.02)  # the worker has time to run ahead, if it could
        assert len(produced) <= item + 2  # this one and the next
        seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_an_error_is_raised_at_the_item_where_it_happened():
    def items():
        yield 1
        yield 2
        raise ValueError("bad file")

    seen = []
    with pytest.raises(ValueError, match="bad file"):
        seen.extend(ReadAhead(items()))  # keeps what came before the error
    assert seen == [1, 2]


def test_stopping_early_closes_the_source_in_its_thread():
    closed = threading.Event()

    def items():
        try:
            yield from range(100)
        finally:
            closed.set()

    gen = ReadAhead(items())
    assert next(gen) == 0
    gen.close()  # what a failing caller does
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "dsatkit-read"]


def test_the_next_item_is_produced_while_the_caller_holds_this_one():
    started = [threading.Event() for _ in range(3)]
    threads = set()

    def items():
        for i in range(3):
            started[i].set()
            threads.add(threading.current_thread().name)
            yield i

    for item in ReadAhead(items()):
        if item < 2:  # the caller is still "working" on this item: the next one is under way already
            assert started[item + 1].wait(timeout=10)
    assert threads == {"dsatkit-read"}


def test_each_thread_has_its_own_duckdb_connection_for_the_frame_helpers():
    """The reader thread and the main thread both hash ids and decode quarantined lines through DuckDB;
    a connection runs one query at a time, so they must not share one."""
    from dsatkit.duck import local_connection
    from dsatkit.hashing import md5_hex

    here = local_connection()
    assert local_connection() is here
    other = []
    worker = threading.Thread(target=lambda: other.append(local_connection()))
    worker.start()
    worker.join()
    assert other[0] is not here

    # many small queries from two threads at once: each thread's hashes, none lost or mixed up
    import polars as pl

    values = pl.Series([f"conv-{i}" for i in range(2000)])
    expected = md5_hex(values)
    results = {}

    def hash_many(name: str) -> None:
        results[name] = all(md5_hex(values.slice(i, 100)).equals(expected.slice(i, 100)) for i in range(0, 2000, 100))

    threads = [threading.Thread(target=hash_many, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": True, "b": True}


def test_the_first_item_is_under_way_before_it_is_asked_for_and_close_works_before_any():
    started, closed = threading.Event(), threading.Event()

    def items():
        try:
            started.set()
            yield from range(3)
        finally:
            closed.set()

    ahead = ReadAhead(items())
    assert started.wait(timeout=10)  # no next() yet: the setup of the caller overlaps the first read
    ahead.close()
    assert closed.is_set()
    assert list(ahead) == []
