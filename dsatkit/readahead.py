"""Produce the next item of an iterator in a background thread while the caller works on this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class ReadAhead(Generic[T]):
    """The items of `items`, each produced in a thread of its own while the caller still works on the
    one before (Polars, DuckDB and Arrow release the GIL, so the two overlap on two cores).

    The thread starts at once, so the first item is under way while the caller sets up. At most one
    item is produced ahead, so memory holds one batch more than without. An exception raised by
    `items` is raised by `next`, at the item where it happened. `close` stops the thread and closes
    `items` in it; call it when the caller fails or stops early.
    """

    def __init__(self, items: Iterable[T], name: str = "dsatkit-read"):
        self._handoff: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()
        self._permit = threading.Semaphore(1)  # the thread may produce one item more than was taken
        self._stop = threading.Event()
        self._ended = False
        self._worker = threading.Thread(target=self._produce, args=(iter(items),), name=name, daemon=True)
        self._worker.start()

    def _produce(self, it: Iterator[T]) -> None:
        try:
            while True:
                self._permit.acquire()
                if self._stop.is_set():
                    return
                try:
                    item = next(it, _END)
                except BaseException as err:  # noqa: BLE001 (handed to the caller, who raises it)
                    self._handoff.put((None, err))
                    return
                self._handoff.put((item, None))
                if item is _END:
                    return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        item, err = self._handoff.get()
        if err is not None or item is _END:
            self.close()
            if err is not None:
                raise err
            raise StopIteration
        self._permit.release()  # the thread starts on the next item while the caller works on this one
        return item  # type: ignore[return-value]

    def close(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._stop.set()
        self._permit.release()
        self._worker.join()
