"""`mine` end to end: logs in, a DuckDB store + parquet out; idempotent, atomic, queryable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from dsatkit.config import MineConfig, StoreConfig
from dsatkit.errors import StoreError
from dsatkit.exchanges import build_exchanges
from dsatkit.pipeline import mine
from dsatkit.store import DB_NAME, connect

LEXICAL = MineConfig(detectors=["lexical"])

CONVERSATIONS = [
    ("capital", [("user", "what is the capital of australia?"), ("assistant", "Sydney."),
                 ("user", "that's wrong, it's not sydney"), ("assistant", "You're right, it's Canberra."),
                 ("user", "thanks!")]),
    ("poem", [("user", "write a haiku about rain"), ("assistant", "Rain falls soft and slow..."),
              ("user", "perfect, thank you")]),
    ("code", [("user", "reverse a list in python"), ("assistant", "Use reversed(x) or x[::-1]."),
              ("user", "continue")]),
    ("sql", [("system", "You are a SQL expert."), ("user", "count users per country"),
             ("assistant", "SELECT country FROM users;"), ("user", "this is not what I asked, I need the count"),
             ("assistant", "SELECT country, count(*) FROM users GROUP BY country;"),
             ("user", "still wrong, it should be sorted")]),
]


def write_jsonl(path: Path, conversations=CONVERSATIONS, extra: dict | None = None) -> Path:
    with path.open("w") as f:
        for cid, turns in conversations:
            row = {"id": cid, "messages": [{"role": r, "content": c} for r, c in turns], **(extra or {})}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "logs.jsonl")


def test_mine_writes_all_tables_and_finds_dsat(logs: Path, tmp_path: Path):
    out = tmp_path / "mined"
    result = mine([logs], out, LEXICAL)
    s = result.summary
    assert (s.conversations, s.turns, s.exchanges, s.with_feedback) == (4, 17, 6, 6)
    con = duckdb.connect(str(out / DB_NAME), read_only=True)  # the stock client sees the same tables
    tables = {r[0] for r in con.sql("select table_name from information_schema.tables").fetchall()}
    assert {"turns", "exchanges", "detections", "verdicts", "dsat", "pairs", "quarantine", "runs",
            "taxonomy"} <= tables
    dsat = con.sql("select conversation_id, response_turn from dsat order by 1, 2").fetchall()
    assert dsat == [("capital", 1), ("sql", 2), ("sql", 4)]
    con.close()
    assert result.dsat.height == 3 and s.dsat == 3
    sql4 = result.dsat.filter(pl.col("response_turn") == 4).row(0, named=True)
    assert [m["role"] for m in sql4["context"]] == ["system", "user", "assistant", "user"]
    assert sql4["feedback"] == "still wrong, it should be sorted" and sql4["followup"] is None
    assert sql4["request"] == "this is not what I asked, I need the count"
    # the exchanges view gives every exchange its texts, also those that are not DSAT
    code = result.sql("select * from exchanges where conversation_id = 'code'").row(0, named=True)
    assert (code["request"], code["feedback"], len(code["context"])) == ("reverse a list in python", "continue", 1)
    pairs = result.pairs
    assert pairs.filter(pl.col("origin") == "dsat").height == 3
    seed = pairs.filter(pl.col("origin") == "seed")
    assert seed["chosen"].to_list() == [[{"role": "assistant", "content": "You're right, it's Canberra."}]]
    assert pl.read_parquet(out / "pairs.parquet").height == pairs.height
    assert pl.read_parquet(out / "dsat.parquet").height == 3


def test_dsat_view_matches_the_export_and_the_exchanges(tmp_path: Path):
    """The `dsat` view takes context, request, response and feedback from the DSAT pair: they must be
    exactly the exchange's, also when tool turns or several user turns precede the response."""
    tricky = [
        ("tool", [("user", "weather in paris?"), ("assistant", "calling the weather tool"),
                  ("tool", '{"temp": 12}'), ("assistant", "It is 30 degrees."), ("user", "that's wrong")]),
        ("users", [("user", "hi"), ("user", "translate 'bonjour'"), ("assistant", "Goodbye."),
                   ("user", "no, that is incorrect")]),
    ]
    logs = write_jsonl(tmp_path / "logs.jsonl", CONVERSATIONS + tricky)
    result = mine([logs], tmp_path / "mined", LEXICAL)
    view = result.dsat.sort("exchange_id")
    export = pl.read_parquet(tmp_path / "mined" / "dsat.parquet").sort("exchange_id")
    assert view.height == 5 and view.equals(export.select(view.columns))
    texts = result.sql(
        "select d.exchange_id, x.context, x.request, x.response, x.feedback, x.followup "
        "from dsat d join exchanges x using (exchange_id) order by 1"
    )
    assert view.select(texts.columns).equals(texts)
    tool = view.filter(pl.col("conversation_id") == "tool").row(0, named=True)
    assert (tool["request"], tool["response"]) == ("weather in paris?", "It is 30 degrees.")


def test_exchanges_view_is_what_build_exchanges_gives(tmp_path: Path):
    """The store keeps ids and turn numbers of an exchange; the view brings back its texts, context,
    model, language and source file from `turns`: all as `build_exchanges` made them."""
    logs = write_jsonl(tmp_path / "logs.jsonl", extra={"model": "m-1"})
    result = mine([logs], tmp_path / "mined", LEXICAL)
    view = result.exchanges.sort("exchange_id")
    built = build_exchanges(result.table("turns")).sort("exchange_id")
    assert view.height == 6 and view.select(built.columns).equals(built)
    assert view["model"].unique().to_list() == ["m-1"] and view["source_file"].unique().to_list() == [str(logs)]


def test_rerun_is_idempotent_and_keeps_run_history(logs: Path, tmp_path: Path):
    out = tmp_path / "mined"
    first = mine([logs], out, LEXICAL)
    snapshot = {t: first.table(t).sort(pl.all()) for t in ("verdicts", "pairs", "turns")}
    second = mine([logs], out, LEXICAL)
    for t, frame in snapshot.items():
        assert second.table(t).sort(pl.all()).equals(frame), t
    assert second.sql("select count(*) n from runs")["n"][0] == 2


def test_zstd_text_compression_stores_the_same_content(logs: Path, tmp_path: Path):
    plain = mine([logs], tmp_path / "plain", LEXICAL)
    zstd = LEXICAL.model_copy(update={"store": StoreConfig(text_compression="zstd")})
    compact = mine([logs], tmp_path / "zstd", zstd)
    assert compact.table("turns").sort(pl.all()).equals(plain.table("turns").sort(pl.all()))
    assert compact.dsat.sort("exchange_id").equals(plain.dsat.sort("exchange_id"))
    # the parquet exports: the same rows, message text compressed as in the store, the rest snappy
    for name, text in (("dsat", "response"), ("pairs", "prompt.list.element.content")):
        exported = {d: pl.read_parquet(tmp_path / d / f"{name}.parquet") for d in ("plain", "zstd")}
        assert exported["zstd"].height > 0 and exported["zstd"].equals(exported["plain"]), name
        for d, codec in (("plain", "UNCOMPRESSED"), ("zstd", "ZSTD")):
            group = pq.ParquetFile(tmp_path / d / f"{name}.parquet").metadata.row_group(0)
            codecs = {group.column(i).path_in_schema: group.column(i).compression for i in range(group.num_columns)}
            assert codecs[text] == codec and codecs["exchange_id"] == codec and codecs["category"] == "SNAPPY"
            # min/max statistics where they can prune (scores, categories), not on message text or ids
            stats = {group.column(i).path_in_schema: group.column(i).is_stats_set for i in range(group.num_columns)}
            assert stats["score"] and stats["category"] and not stats[text] and not stats["exchange_id"]


def test_python_api_without_out_dir(logs: Path):
    import dsatkit

    result = dsatkit.mine([str(logs)], config=LEXICAL)
    assert isinstance(result.dsat, pl.DataFrame) and result.dsat.height == 3


_KILLER = """
import os, signal, sys
from dsatkit import store
from dsatkit.config import MineConfig, StoreConfig
from dsatkit.pipeline import mine

real_write = store.RunWriter._write
def write_then_die(self, table, frame):
    real_write(self, table, frame)
    if table.name == "verdicts":
        os.kill(os.getpid(), signal.SIGKILL)   # a real kill, half way through writing the run
store.RunWriter._write = write_then_die
mine([sys.argv[1]], sys.argv[2], MineConfig(detectors=["lexical"]))
"""


def test_run_killed_mid_write_leaves_previous_store_readable(logs: Path, tmp_path: Path):
    out = tmp_path / "mined"
    before = mine([logs], out, LEXICAL).table("verdicts").sort("exchange_id")
    more = write_jsonl(tmp_path / "more.jsonl", [("extra", [("user", "hi"), ("assistant", "hello"),
                                                            ("user", "wrong")])])
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(more), str(out)], capture_output=True, check=False)
    assert proc.returncode == -9
    assert list(out.glob(".*.tmp"))  # the half-written snapshot is there, beside the old store
    con = connect(out)
    assert con.sql("select * from verdicts order by exchange_id").pl().equals(before)
    con.close()
    # the next run cleans the leftovers and completes
    mine([more], out, LEXICAL)
    assert not list(out.glob(".*.tmp"))


def test_failed_write_raises_and_leaves_previous_store(logs: Path, tmp_path: Path, monkeypatch):
    from dsatkit import store

    out = tmp_path / "mined"
    before = mine([logs], out, LEXICAL).table("verdicts").sort("exchange_id")
    real = store._Table.insert

    def fail_on_verdicts(self, frame):
        if self.name == "verdicts":
            raise OSError("disk full")
        real(self, frame)

    monkeypatch.setattr(store._Table, "insert", fail_on_verdicts)
    with pytest.raises(StoreError, match="cannot write the store .*disk full"):
        mine([logs], out, LEXICAL)
    assert not list(out.glob(".*.tmp*"))
    monkeypatch.undo()
    assert mine([logs], out, LEXICAL).table("verdicts").sort("exchange_id").equals(before)


_FILE_SIZE_LIMIT = """
import resource, signal, sys
from dsatkit.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
main(sys.argv[1:])
"""


def test_cli_a_store_that_cannot_be_written_is_a_one_line_error(tmp_path: Path):
    """A real write failure (the kernel refuses writes past a file size limit, as on a full disk)."""
    convs = [(f"c{i}", [("user", f"question {i} " * 20), ("assistant", f"answer {i} " * 40), ("user", "wrong")])
             for i in range(2000)]
    logs = write_jsonl(tmp_path / "logs.jsonl", convs)
    out = tmp_path / "mined"
    r = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, "mine", str(logs), "-o", str(out),
                        "--detectors", "lexical"], capture_output=True, text=True, check=False,
                       env={**os.environ, "CI": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert "error: cannot write the store in" in said and "hint: free disk space" in said
    assert "Traceback" not in said
    assert not list(out.glob(".*tmp*")) and not (out / "dsat.duckdb").exists()


def test_small_batches_store_every_row_once(tmp_path: Path):
    """Many batches: each table's frames are written while the next batch is mined."""
    convs = [(f"c{i}", [("user", f"question {i}"), ("assistant", f"answer {i}"),
                        ("user", "that's wrong" if i % 3 == 0 else "thanks")]) for i in range(3000)]
    logs = write_jsonl(tmp_path / "many.jsonl", convs)
    config = LEXICAL.model_copy(update={"read": LEXICAL.read.model_copy(update={"batch_rows": 70})})
    result = mine([logs], tmp_path / "mined", config)
    counts = result.sql(
        "select (select count(*) from turns) t, (select count(distinct exchange_id) from exchanges) x, "
        "(select count(*) from verdicts) v, (select count(*) from dsat) d, (select count(*) from pairs) p"
    ).row(0)
    assert counts == (9000, 3000, 3000, 1000, 1000)
    assert pl.read_parquet(tmp_path / "mined" / "dsat.parquet").height == 1000


def test_connect_errors_are_one_line(tmp_path: Path):
    with pytest.raises(StoreError, match="is not a directory"):
        connect(tmp_path / "nope")
    with pytest.raises(StoreError, match="no .duckdb file"):
        connect(tmp_path)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1"}
    return subprocess.run([sys.executable, "-m", "dsatkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, check=False)


def test_cli_mine_sql_stats(logs: Path, tmp_path: Path):
    out = tmp_path / "mined"
    r = run_cli("mine", str(logs), "-o", str(out), "--detectors", "lexical")
    assert r.returncode == 0, r.stderr
    r = run_cli("sql", str(out), "select category, count(*) n from dsat group by 1 order by n desc, 1",
                "--format", "csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "category,n" and len(lines) >= 2
    r = run_cli("sql", str(out), "select prompt, rejected from pairs", "--format", "csv")
    assert r.returncode == 0 and '"role"' in r.stdout  # nested columns come out as JSON text
    pq = tmp_path / "d.parquet"
    r = run_cli("sql", str(out), "select * from dsat", "--format", "parquet", "-o", str(pq))
    assert r.returncode == 0 and pl.read_parquet(pq).height == 3
    r = run_cli("sql", str(out), "select exchange_id, score from dsat", "--format", "jsonl")
    assert r.returncode == 0 and len([json.loads(line) for line in r.stdout.splitlines()]) == 3
    r = run_cli("stats", str(out))
    assert r.returncode == 0, r.stderr
    assert "by category" in r.stdout and "by source_file" in r.stdout
    by_language = r.stdout.split("by language")[1].split("by model")[0]
    # the logs carry no language: each conversation gets one guessed from its first user turn
    assert "(unknown)" not in by_language and re.search(r"\ben\b.*\b6\b", by_language)


def test_cli_user_errors_are_one_line_with_hint(logs: Path, tmp_path: Path):
    r = run_cli("sql", str(tmp_path / "missing"), "select 1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[0].startswith("error:") and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("mine", str(tmp_path / "nothing-*.jsonl"), "-o", str(tmp_path / "m"), "--detectors", "lexical")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nothing-" in r.stderr
    r = run_cli("mine", str(tmp_path / "gone.jsonl"), str(logs), "-o", str(tmp_path / "m"), "--skip-bad-files")
    assert r.returncode == 2 and "gone.jsonl: no such file or directory" in r.stderr
    assert "hint: check the path\n" in r.stderr  # not --skip-bad-files (given) or --format
    (tmp_path / "a-file").write_text("")
    r = run_cli("mine", str(logs), "-o", str(tmp_path / "a-file"), "--detectors", "lexical")
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("mine", "x.jsonl", "--detectors", "lexical,nope")
    assert r.returncode == 2 and "unknown detector 'nope'" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        fuse:
          treshold: 0.3
    """))
    r = run_cli("mine", "x.jsonl", "--config", str(bad))
    assert r.returncode == 2 and "fuse.treshold: unknown key" in r.stderr


def test_cli_a_detector_dir_or_judge_the_run_would_not_use_is_an_error(logs: Path, tmp_path: Path):
    """A `--detector-dir` that is missing or unreadable, or for a detector the run leaves out, and a
    `--judge-model` next to detectors without the judge: one line each (they fell back in silence)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "detector.json").write_text('{"kind": "learned", "format": 2')
    (tmp_path / "exemplars").mkdir()
    (tmp_path / "exemplars" / "detector.json").write_text('{"format": 1}')  # an exemplar classifier names no kind
    cases = [
        (["--detector-dir", str(tmp_path / "nope")], f"detector directory {tmp_path / 'nope'} does not exist"),
        (["--detector-dir", str(tmp_path / "empty")], "is not a detector directory (no detector.json)"),
        (["--detector-dir", str(tmp_path / "cut")], "detector.json: cannot be read"),
        (["--detector-dir", str(tmp_path / "exemplars")], "is for the embedding detector, which this run does not use"),
        (["--detectors", "lexical", "--judge-model", "m", "--judge-base-url", "http://127.0.0.1:9/v1"],
         "--judge-model m is for the judge detector, which this run does not use (detectors: lexical)"),
    ]
    for args, said in cases:
        r = run_cli("mine", str(logs), "-o", str(tmp_path / "m"), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and said in error[0], (args, r.stderr)
        assert "hint:" in r.stderr
    assert not (tmp_path / "m" / "dsat.duckdb").exists()


def test_sql_bad_query_is_one_line(logs: Path, tmp_path: Path):
    out = tmp_path / "mined"
    mine([logs], out, LEXICAL)
    r = run_cli("sql", str(out), "select nope from dsat")
    assert r.returncode == 2 and r.stderr.startswith("error: query failed") and "Traceback" not in r.stderr


def test_sql_on_a_dir_without_a_store_says_so(tmp_path: Path):
    """A run that failed before its first commit leaves only the detectors' cache behind."""
    import duckdb

    duckdb.connect(str(tmp_path / "cache.duckdb")).execute("create table embeddings (k varchar)").close()
    r = run_cli("sql", str(tmp_path), "select * from quarantine")
    assert r.returncode == 2 and "holds no store yet" in r.stderr and "Traceback" not in r.stderr


def test_dsat_without_a_prompt_gets_a_record_but_no_pair(tmp_path: Path):
    """A ShareGPT part that opens with the assistant: the complaint is DSAT, but there is no prompt to train on."""
    part = [("headless", [("assistant", "...and that is the whole story."), ("user", "that's wrong, it's not sydney")])]
    r = mine([write_jsonl(tmp_path / "logs.jsonl", CONVERSATIONS + part)], tmp_path / "out", LEXICAL)
    assert r.summary.no_prompt == 1
    headless = r.dsat.filter(pl.col("conversation_id") == "headless")["exchange_id"]
    assert headless.len() == 1 and r.pairs.filter(pl.col("exchange_id").is_in(headless)).height == 0


def test_the_run_records_the_fused_threshold_it_labelled_at(logs: Path, tmp_path: Path):
    from dsatkit.detectors.learned import LearnedDetector

    default = mine([logs], tmp_path / "default", MineConfig())  # the learned detector alone: its stored threshold
    assert default.summary.fused_threshold == pytest.approx(LearnedDetector().threshold)
    runs = default.sql("select counts->>'fused_threshold' t from runs")
    assert float(runs["t"].item()) == pytest.approx(LearnedDetector().threshold)
    configured = mine([logs], tmp_path / "configured", MineConfig(detectors=["lexical"], fuse={"threshold": 0.7}))
    assert configured.summary.fused_threshold == 0.7
