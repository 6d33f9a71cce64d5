"""`dsatkit sql` is read-only: only queries run (DuckDB's parser says what a statement is), and the
connection reaches nothing but the store; results come out as a table, CSV, a JSON array, JSON lines
or parquet."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dsatkit.commands.query import NotAQuery, QueryError, check_query, run_query
from dsatkit.pipeline import mine
from dsatkit.store import connect
from tests.test_mine import LEXICAL, run_cli, write_jsonl


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("query")
    out = tmp / "mined"
    mine([write_jsonl(tmp / "logs.jsonl")], out, LEXICAL)
    return out


def snapshot(store: Path) -> dict[str, float]:
    """Every file of the store directory and when it last changed."""
    return {p.name: p.stat().st_mtime_ns for p in store.iterdir()}


# (statement, the type DuckDB's parser gives it): each would write a file, reach the network, change
# the store's catalog or the connection's settings
WRITES = [
    ("copy (select * from dsat) to '{tmp}/out.csv'", "COPY"),
    ("copy dsat to '{tmp}/out.parquet' (format parquet)", "COPY"),
    ("export database '{tmp}/exported'", "EXPORT"),
    ("attach '{tmp}/other.duckdb' as other", "ATTACH"),
    ("detach dsat", "DETACH"),
    ("install httpfs", "LOAD"),
    ("load httpfs", "LOAD"),
    ("create table t as select * from dsat", "CREATE"),
    ("create view v as select 1", "CREATE"),
    ("create macro m(x) as x + 1", "CREATE"),
    ("create secret (type s3, key_id 'k', secret 's')", "CREATE"),
    ("insert into dsat.main.runs select * from runs", "INSERT"),
    ("update dsat.main.verdicts set label = false", "UPDATE"),
    ("delete from dsat.main.verdicts", "DELETE"),
    ("drop view dsat", "DROP"),
    ("drop table dsat.main.verdicts", "DROP"),
    ("alter view dsat rename to d", "ALTER"),
    ("set threads = 1", "SET"),
    ("set enable_external_access = true", "SET"),
    ("reset lock_configuration", "SET"),
    ("use dsat", "SET"),
    ("pragma enable_profiling", "PRAGMA"),
    ("pragma threads = 1", "SET"),
    ("call dbgen(sf = 0.01)", "CALL"),
    ("checkpoint", "CALL"),
    ("vacuum", "VACUUM"),
    ("begin transaction", "TRANSACTION"),
    ("select 1; drop view dsat", "DROP"),  # a query first does not let the rest through
    ("explain analyze copy dsat to '{tmp}/out.csv'", "EXPLAIN"),  # EXPLAIN ANALYZE runs what it explains
    ("update extensions", None),  # a type duckdb 2.0's Python enum has no name for: UNKNOWN
]

READS = [
    "select count(*) n from dsat",
    "with d as (select * from dsat) select category, count(*) n from d group by all",
    "from dsat select exchange_id limit 2",
    "values (1, 'a'), (2, 'b')",
    "describe dsat",
    "show tables",
    "summarize verdicts",
    "explain select * from dsat",
    "pivot verdicts on polarity in ('dsat', 'sat') using count(*) group by category",
    "select counts->>'dsat' from runs",  # the JSON functions are there
    "select * from duckdb_settings() where name = 'threads'",
]


@pytest.mark.parametrize(("statement", "kind"), WRITES, ids=[w[0][:40] for w in WRITES])
def test_every_statement_that_can_write_is_refused_naming_its_type(statement, kind, store, tmp_path):
    before = snapshot(store)
    query = statement.format(tmp=tmp_path)
    with pytest.raises(NotAQuery) as refused:
        run_query(store, query)
    assert f"refused statement type {kind or ''}" in str(refused.value) and "\n" not in str(refused.value)
    assert "-o FILE" in refused.value.hint
    assert list(tmp_path.iterdir()) == [] and snapshot(store) == before


@pytest.mark.parametrize("query", READS)
def test_queries_run(query, store):
    check_query(query)
    assert run_query(store, query).height >= 1


def test_two_queries_at_once_are_refused(store):
    """DuckDB would print the last one's result only."""
    with pytest.raises(QueryError, match="one query at a time: this holds 2 statements"):
        run_query(store, "select 1 a; select 2 b")
    assert run_query(store, "select 1 a;").height == 1  # a closing semicolon is fine


def test_a_sandboxed_connection_reaches_nothing_but_the_store(store, tmp_path):
    """The second line of defence, beneath the statement check: DuckDB's own settings."""
    con = connect(store, sandboxed=True)
    try:
        assert con.sql("select count(*) from dsat").fetchall() == [(3,)]
        for statement in (f"copy dsat to '{tmp_path}/x.csv'", f"attach '{tmp_path}/y.duckdb'",
                          "install httpfs", f"select * from read_csv('{store.parent / 'logs.jsonl'}')"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(statement)
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            con.execute("set enable_external_access = true")
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []
    con = connect(store)  # the pipeline's own connection is not sandboxed
    assert con.sql(f"select count(*) from read_json('{store.parent / 'logs.jsonl'}')").fetchall() == [(4,)]
    con.close()


def test_reading_other_files_from_sql_is_a_one_line_error(store):
    with pytest.raises(QueryError, match="^query failed: Permission Error"):
        run_query(store, f"select * from read_csv('{store.parent / 'logs.jsonl'}')")


def test_empty_and_malformed_queries_are_one_line_errors(store):
    with pytest.raises(QueryError, match="holds no statement"):
        run_query(store, "  -- nothing but a comment\n")
    with pytest.raises(QueryError, match="^query failed: Parser Error"):
        run_query(store, "selec 1")


def test_cli_refuses_a_write_in_one_line_and_writes_nothing(store, tmp_path):
    target = tmp_path / "out.csv"
    r = run_cli("sql", str(store), f"copy (select * from dsat) to '{target}'")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: `dsatkit sql` runs queries only; refused statement type COPY: copy")
    assert lines[1].startswith("hint:") and len(lines) == 2
    assert not target.exists()
    r = run_cli("sql", str(store), "drop view dsat")
    assert r.returncode == 2 and "Success" not in r.stdout + r.stderr
    assert run_query(store, "select count(*) n from dsat")["n"][0] == 3


def test_cli_json_is_one_array_and_jsonl_one_object_a_line(store, tmp_path):
    query = "select exchange_id, score, context from dsat order by 1"  # context: a list of messages
    r = run_cli("sql", str(store), query, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and len(rows) == 3
    assert set(rows[0]) == {"exchange_id", "score", "context"} and rows[0]["context"][0]["role"] == "user"
    r = run_cli("sql", str(store), query, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == rows
    out = tmp_path / "rows.json"
    r = run_cli("sql", str(store), query, "--format", "json", "-o", str(out))
    assert r.returncode == 0 and r.stdout == "" and json.loads(out.read_text()) == rows
    assert pl.read_json(out).height == 3
    r = run_cli("sql", str(store), "select * from dsat where false", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = run_cli("sql", str(store), "select * from dsat where false", "--format", "jsonl")
    assert r.returncode == 0 and r.stdout == ""
