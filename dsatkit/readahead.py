"""Produce the next item of an iterator in a background thread while the caller works on this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterable[T], name: str = "dsatkit-read") -> Iterator[T]:
    """Yield the items of `items`, each produced in a thread of its own while the caller still works
    on the one before (Polars, DuckDB and Arrow release the GIL, so the two overlap on two cores).

    At most one item is produced ahead, so memory holds one batch more than without. An exception
    raised by `items` is raised here, at the item where it happened; closing this generator (the
    caller failed or stopped early) closes `items` too, in the thread that iterates it.
    """
    handoff: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()
    permit = threading.Semaphore(1)  # the worker may produce one item more than the caller took
    stop = threading.Event()

    def produce() -> None:
        it = iter(items)
        try:
            while True:
                permit.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(it, _END)
                except BaseException as err:  # noqa: BLE001 (handed to the caller, who raises it)
                    handoff.put((None, err))
                    return
                handoff.put((item, None))
                if item is _END:
                    return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item, err = handoff.get()
            if err is not None:
                raise err
            if item is _END:
                return
            permit.release()  # the worker starts on the next item while the caller works on this one
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        permit.release()
        worker.join()
