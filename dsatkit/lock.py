"""One run at a time per output directory: `DIR/.dsatkit.lock`, held from a run's start to its end.

The lock itself is the kernel's (`flock` on the lock file), so it is released with the process that
held it however that process ended, and taking it is atomic. The file's content (pid, host, start
time) names the run that holds it, for the one-line refusal a second run prints. A lock file that no
process holds but that still names a run was left by a run that was killed (SIGKILL, a power cut):
the next run takes it over and says so. Runs end by removing the file. POSIX only (fcntl).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from dsatkit.errors import DsatkitError, StoreError
from dsatkit.progress import console

LOCK_NAME = ".dsatkit.lock"
"""The lock file's name inside the directory it locks."""


class DirectoryInUse(DsatkitError):
    """Another run holds the lock of the output directory."""

    hint = "wait for that run to end, or write to another directory (-o/--out)"


@dataclass(frozen=True)
class LockHolder:
    """The run a lock file names."""

    pid: int
    host: str
    started: str
    """ISO 8601 local time with its UTC offset, to the second."""

    @classmethod
    def this_process(cls) -> LockHolder:
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started)

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder a lock file's text names; None for an empty or foreign file."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]))
        except (ValueError, TypeError, KeyError):
            return None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


class OutputLock:
    """The lock of one output directory. `acquire()` takes it or raises DirectoryInUse at once (it
    never waits); `release()` gives it back, and so does garbage collection of the object, as with an
    open file: keep a reference for as long as the run lasts. Also a context manager:
    `with OutputLock(out_dir): ...`.

    Locks are per open file, so a second OutputLock of the same directory is refused even within
    one process.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._release: weakref.finalize | None = None

    def acquire(self) -> Self:
        """Take the lock: returns self; raises DirectoryInUse naming the run that holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:  # a read-only directory, a full disk
                raise StoreError(
                    f"cannot write in {self.directory}: {err.strerror or err}",
                    hint="check the directory's permissions and free space, or choose another -o/--out",
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_of(fd)
                os.close(fd)
                named = f" ({holder})" if holder else ""
                raise DirectoryInUse(f"{self.directory} is in use by another dsatkit run{named}") from None
            except OSError as err:  # a file system without locks (some network and FUSE mounts)
                os.close(fd)
                console.print(
                    f"[yellow]note:[/yellow] cannot lock {self.directory} ({err.strerror}): make sure no "
                    "other run writes there", highlight=False, soft_wrap=True,
                )
                return self
            # the run before us may have removed the file between our open and our lock: lock the new one
            if not _is_file_at(fd, self.path):
                os.close(fd)
                continue
            break
        stale = LockHolder.parse(_read(fd))
        if stale is not None:
            console.print(
                f"[yellow]note:[/yellow] took over the lock of {self.directory} from a run that is no longer "
                f"running ({stale})", highlight=False, soft_wrap=True,
            )
        data = json.dumps(asdict(LockHolder.this_process())).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._release = weakref.finalize(self, _unlock, fd, self.path)
        return self

    def release(self) -> None:
        """Remove the lock file and give the lock back (a no-op when not held)."""
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace")


def _holder_of(fd: int) -> LockHolder | None:
    """The holder of a lock we could not take; it writes its name just after taking the lock."""
    for _ in range(20):
        holder = LockHolder.parse(_read(fd))
        if holder is not None:
            return holder
        time.sleep(0.025)
    return None


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        st, at = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (at.st_dev, at.st_ino)


def _unlock(fd: int, path: Path) -> None:
    # the file goes first, while it is still ours: a run that opened it meanwhile finds it gone
    # once it gets the lock, and opens a new one (see OutputLock.acquire)
    try:
        if _is_file_at(fd, path):
            os.unlink(path)
    finally:
        os.close(fd)
