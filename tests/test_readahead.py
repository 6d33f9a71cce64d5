"""read_ahead: the items in order, one produced ahead at most, errors where they happened, clean stops."""

from __future__ import annotations

import threading
import time

import pytest

from dsatkit.readahead import read_ahead


def test_items_come_in_order_and_at_most_one_ahead():
    produced: list[int] = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items()):
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
        seen.extend(read_ahead(items()))  # keeps what came before the error
    assert seen == [1, 2]


def test_stopping_early_closes_the_source_in_its_thread():
    closed = threading.Event()

    def items():
        try:
            yield from range(100)
        finally:
            closed.set()

    gen = read_ahead(items())
    assert next(gen) == 0
    gen.close()  # what a failing caller's `closing(...)` does
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

    for item in read_ahead(items()):
        if item < 2:  # the caller is still "working" on this item: the next one is under way already
            assert started[item + 1].wait(timeout=10)
    assert threads == {"dsatkit-read"}
