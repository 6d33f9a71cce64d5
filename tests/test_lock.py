"""The output-directory lock: one run at a time, refused at once with the holder named; a lock left by
a killed process taken over."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dsatkit.errors import StoreError
from dsatkit.lock import LOCK_NAME, DirectoryInUse, LockHolder, OutputLock
from dsatkit.pipeline import mine
from tests.test_mine import LEXICAL, write_jsonl

_HOLD = textwrap.dedent("""
    import sys, time
    from dsatkit.lock import OutputLock
    lock = OutputLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


def write_lock(directory: Path, pid: int, started: str = "2024-01-02T03:04:05+00:00") -> Path:
    path = directory / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": started}))
    return path


def test_the_lock_file_names_its_run_while_held_and_is_gone_after(tmp_path: Path):
    lock = OutputLock(tmp_path).acquire()
    holder = LockHolder.parse((tmp_path / LOCK_NAME).read_text())
    assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", holder.started)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    lock.release()  # twice is harmless
    with OutputLock(tmp_path):  # and it can be taken again
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_lock_is_refused_at_once_naming_the_first(tmp_path: Path):
    with OutputLock(tmp_path), pytest.raises(DirectoryInUse) as refused:
        OutputLock(tmp_path).acquire()  # the same process counts: locks are per open file
    message = str(refused.value)
    assert message.startswith(f"{tmp_path} is in use by another dsatkit run (pid {os.getpid()} on ")
    assert "started " in message and "\n" not in message
    assert "another directory" in refused.value.hint


def test_the_lock_is_released_when_the_block_fails(tmp_path: Path):
    with pytest.raises(ValueError), OutputLock(tmp_path):
        raise ValueError("the run failed")
    OutputLock(tmp_path).acquire().release()


def test_a_stale_lock_naming_a_dead_pid_is_taken_over_with_a_note(tmp_path: Path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    with OutputLock(tmp_path):
        holder = LockHolder.parse((tmp_path / LOCK_NAME).read_text())
        assert holder is not None and holder.pid == os.getpid()
    note = capsys.readouterr().err
    assert "note: took over the lock of" in note and f"pid {pid} " in note and "2024-01-02T03:04:05" in note


def test_an_empty_lock_file_is_taken_without_a_note(tmp_path: Path, capsys):
    (tmp_path / LOCK_NAME).write_text("")
    OutputLock(tmp_path).acquire().release()
    assert "note" not in capsys.readouterr().err


def test_the_lock_of_a_process_killed_with_sigkill_is_taken_over(tmp_path: Path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUse, match=f"pid {holder.pid} on"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # a killed process leaves its file, but not its lock
    OutputLock(tmp_path).acquire().release()
    assert f"from a run that is no longer running (pid {holder.pid} on" in capsys.readouterr().err


def test_mine_into_a_locked_directory_is_refused_before_touching_it(tmp_path: Path):
    out = tmp_path / "mined"
    logs = write_jsonl(tmp_path / "logs.jsonl")
    before = mine([logs], out, LEXICAL).table("verdicts")
    files = sorted(p.name for p in out.iterdir())
    with OutputLock(out), pytest.raises(DirectoryInUse):
        mine([logs], out, LEXICAL)
    assert sorted(p.name for p in out.iterdir()) == files  # no snapshot begun, no lock file left
    assert mine([logs], out, LEXICAL).table("verdicts").equals(before)
    assert not (out / LOCK_NAME).exists()


def test_a_directory_the_lock_cannot_be_written_in_is_a_one_line_store_error(tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="^cannot write in .*a-file: Not a directory$"):
        OutputLock(tmp_path / "a-file").acquire()
