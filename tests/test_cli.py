"""Real `dsatkit mine` processes ended from outside: Ctrl-C, a second run into the same directory, a run
killed with SIGKILL; and what a run says on stderr when it is not on a terminal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dsatkit.lock import LOCK_NAME
from dsatkit.pipeline import mine
from dsatkit.store import connect
from tests.test_mine import LEXICAL, run_cli, write_jsonl

BATCH_ROWS = 100
"""Small batches: a run of a few thousand conversations takes a hundred of them, so it is still mining
when a test acts on it after its first progress line."""


def many_conversations(path: Path, n: int) -> Path:
    return write_jsonl(path, [(f"c{i}", [("user", f"question {i}"), ("assistant", f"answer {i}"),
                                         ("user", "that's wrong" if i % 3 == 0 else "thanks")]) for i in range(n)])


def start_mine(logs: Path, out: Path) -> subprocess.Popen:
    """A real `python -m dsatkit mine` that logs a progress line after every batch."""
    env = {**os.environ, "CI": "1", "DSATKIT_PROGRESS_EVERY": "0"}
    command = [sys.executable, "-m", "dsatkit", "mine", str(logs), "-o", str(out), "--detectors", "lexical",
               "--batch-rows", str(BATCH_ROWS)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_until_mining(run: subprocess.Popen) -> str:
    """Read the run's stderr up to its first progress line (it is mid-run then); return what was read."""
    said = ""
    while "mining: " not in said:
        line = run.stderr.readline()
        if not line:
            run.kill()
            pytest.fail(f"the run ended before mining (rc {run.wait()}): {said}")
        said += line
    return said


def store_state(out: Path) -> tuple:
    con = connect(out)
    try:
        return (con.sql("select * from verdicts order by exchange_id").pl(),
                con.sql("select run_id from runs order by run_id").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize(("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                     (signal.SIGTERM, 143, "terminated")], ids=["ctrl-c", "sigterm"])
def test_a_stopped_run_exits_with_its_signal_code_and_keeps_the_previous_store(tmp_path: Path, signum, code, word):
    """Ctrl-C, and `kill` (or a scheduler's timeout), stop a run cleanly: old store intact, no snapshot or
    lock left behind; the exit code says which signal (128 + its number)."""
    out = tmp_path / "mined"
    mine([write_jsonl(tmp_path / "small.jsonl")], out, LEXICAL)
    verdicts, runs = store_state(out)
    run = start_mine(many_conversations(tmp_path / "many.jsonl", 20_000), out)
    said = wait_until_mining(run)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=120)
    said += stderr
    assert run.returncode == code, said
    assert said.strip().splitlines()[-1] == word and "Traceback" not in said
    assert re.search(r"mining: stopped, [\d,]+ conversations in ", said)  # what it had done, then
    assert stdout == ""  # no run summary: the run did not happen
    after_verdicts, after_runs = store_state(out)
    assert after_verdicts.equals(verdicts) and after_runs == runs
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no snapshot, no lock


def test_a_second_run_into_the_same_directory_is_refused_at_once_and_the_first_goes_on(tmp_path: Path):
    out = tmp_path / "mined"
    first = start_mine(many_conversations(tmp_path / "many.jsonl", 6_000), out)
    wait_until_mining(first)
    second = run_cli("mine", str(write_jsonl(tmp_path / "small.jsonl")), "-o", str(out), "--detectors", "lexical")
    assert first.poll() is None, "the first run ended before the second one tried"
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert re.fullmatch(rf"error: {re.escape(str(out))} is in use by another dsatkit run "
                        rf"\(pid {first.pid} on \S+, started \d{{4}}-\d\d-\d\dT[\d:]+[+-]\d\d:\d\d\)", lines[0])
    assert len(lines) == 2 and lines[1].startswith("hint: wait for that run to end")
    assert second.stdout == ""
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "conversations" in stdout and "Traceback" not in stderr + second.stderr
    con = connect(out)
    assert con.sql("select count(distinct conversation_id) from turns").fetchall() == [(6_000,)]
    con.close()
    assert not (out / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over_by_the_next(tmp_path: Path):
    out = tmp_path / "mined"
    killed = start_mine(many_conversations(tmp_path / "many.jsonl", 20_000), out)
    wait_until_mining(killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert (out / LOCK_NAME).exists()  # left behind, naming a process that is gone
    r = run_cli("mine", str(write_jsonl(tmp_path / "small.jsonl")), "-o", str(out), "--detectors", "lexical")
    assert r.returncode == 0, r.stderr
    assert f"note: took over the lock of {out} from a run that is no longer running (pid {killed.pid} on" in r.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_off_a_terminal_a_run_logs_one_line_per_stage_with_counts_and_rates(tmp_path: Path):
    logs = many_conversations(tmp_path / "logs.jsonl", 300)
    r = run_cli("mine", str(logs), "-o", str(tmp_path / "mined"), "--detectors", "lexical", "--batch-rows", "100")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # the default interval is far longer than this run
    assert re.fullmatch(r"\d\d:\d\d:\d\d mining: done, 300 conversations in [\d.]+ s, [\d,]+ conversations/s",
                        lines[0])
    quiet = subprocess.run([sys.executable, "-m", "dsatkit", "mine", str(logs), "-o", str(tmp_path / "q"),
                            "--detectors", "lexical"], capture_output=True, text=True, check=False,
                           env={**os.environ, "CI": "1", "DSATKIT_QUIET": "1"})
    assert quiet.returncode == 0 and quiet.stderr == ""
