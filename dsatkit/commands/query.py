"""`dsatkit sql` and `dsatkit stats`: read-only looks at a store directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import duckdb
import polars as pl
import typer

from dsatkit.errors import DsatkitError, first_line
from dsatkit.progress import results


class QueryError(DsatkitError):
    hint = "tables: turns, exchanges, detections, verdicts, dsat, pairs, quarantine, runs, taxonomy"


class NotAQuery(QueryError):
    """A statement that would do more than read the store: `dsatkit sql` runs queries only."""

    hint = (
        "queries only (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
        "to export a result, use --format csv|json|jsonl|parquet -o FILE"
    )


_EXPLAINED = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+|\([^)]*\)\s*)?", re.IGNORECASE)
"""What comes before the statement an EXPLAIN explains (EXPLAIN ANALYZE runs it)."""


def check_query(query: str) -> None:
    """Raise NotAQuery unless every statement of `query` only reads: DuckDB's own parser gives each
    statement's type, and only SELECT (which DESCRIBE, SHOW, SUMMARIZE, FROM and VALUES are too) and
    the EXPLAIN of a SELECT pass. A refusal names the statement type and the statement."""
    statements = _statements(query)
    if not statements:
        raise QueryError("the query holds no statement")
    for statement in statements:
        kind = _type_of(statement)
        if kind == "SELECT" or (kind == "EXPLAIN" and _explains_a_query(statement.query)):
            continue
        text = " ".join(statement.query.split()).rstrip(";")
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise NotAQuery(f"`dsatkit sql` runs queries only; refused statement type {kind}: {shown}")
    if len(statements) > 1:  # DuckDB would answer the last one only
        raise QueryError(f"one query at a time: this holds {len(statements)} statements",
                         hint="run them one by one, or join them: SELECT ... UNION ALL SELECT ...")


def _statements(query: str) -> list:
    try:
        return duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise QueryError(f"query failed: {first_line(e)}") from None


def _type_of(statement) -> str:
    try:
        return statement.type.name
    except ValueError:  # a type this duckdb's Python enum has no name for (2.0.1: UPDATE EXTENSIONS)
        return "UNKNOWN"


def _explains_a_query(text: str) -> bool:
    explained = _EXPLAINED.match(text)
    inner = _statements(text[explained.end():]) if explained else []
    return len(inner) == 1 and _type_of(inner[0]) == "SELECT"


def run_query(store_dir: Path, query: str) -> pl.DataFrame:
    """The result of a read-only query over a store directory. Statements that are not queries are
    refused (NotAQuery) before the store is opened, and the connection reads the store and nothing
    else (no other file, no network, settings locked: `store.connect(sandboxed=True)`)."""
    from dsatkit.store import connect

    check_query(query)
    con = connect(store_dir, sandboxed=True)
    try:
        return con.sql(query).pl()
    except duckdb.Error as e:
        raise QueryError(f"query failed: {first_line(e)}") from None
    finally:
        con.close()


def _print_table(frame: pl.DataFrame, title: str | None = None, max_rows: int = 100) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in frame.columns:
        table.add_column(name, overflow="fold", max_width=80)
    for row in frame.head(max_rows).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    results.print(table)
    if frame.height > max_rows:
        results.print(f"[dim]... {frame.height - max_rows:,} more rows (use --format csv/json/jsonl/parquet -o FILE)[/dim]")


def sql_command(
    store_dir: Annotated[Path, typer.Argument(help="a directory written by `dsatkit mine` (or train)")],
    query: Annotated[str, typer.Argument(help="DuckDB SQL; the store's tables are in scope")],
    fmt: Annotated[
        Literal["table", "csv", "json", "jsonl", "parquet"],
        typer.Option("--format", "-f", help="output format (json: one array; jsonl: one object a line)"),
    ] = "table",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here instead of stdout")] = None,
) -> None:
    """Run a read-only SQL query over a mined store (statements that would write are refused)."""
    frame = run_query(store_dir, query)
    if fmt == "parquet":
        if output is None:
            raise QueryError("--format parquet needs -o FILE", hint="e.g. -o dsat.parquet")
        frame.write_parquet(output)
    elif fmt == "table":
        if output is not None:
            raise QueryError("--format table prints to the terminal", hint="use csv, json, jsonl or parquet with -o")
        _print_table(frame)
    else:
        nested = [n for n, t in frame.schema.items() if isinstance(t, (pl.List, pl.Struct))]
        if fmt == "csv" and nested:
            as_json = ", ".join(f'to_json("{n}")::varchar as "{n}"' for n in nested)
            frame = duckdb.sql(f"select * replace ({as_json}) from frame").pl()
        if fmt == "csv":
            text = frame.write_csv()
        elif fmt == "jsonl":
            text = frame.write_ndjson()  # one object a line
        else:
            text = frame.write_json() + "\n"  # one array of objects
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text)


def stats_command(
    store_dir: Annotated[Path, typer.Argument(help="a directory written by `dsatkit mine`")],
) -> None:
    """Counts by category, language, model and source file, plus the last runs."""
    overview = run_query(
        store_dir,
        "select (select count(*) from exchange_index) exchanges, "
        "(select count(*) from exchange_index where feedback_turn is not null) with_feedback, "
        "(select count(*) from dsat) dsat, "
        "(select count(*) from verdicts where polarity = 'sat') sat, "
        "(select count(*) from pairs where origin = 'dsat') dsat_pairs, "
        "(select count(*) from pairs where origin = 'seed') seed_pairs, "
        "(select count(*) from quarantine) quarantined",
    )
    _print_table(overview, "overview")
    _print_table(
        run_query(
            store_dir,
            "select coalesce(v.category, '(none)') category, v.polarity, count(*) n "
            "from verdicts v where v.polarity != 'neutral' group by all order by n desc",
        ),
        "by category",
    )
    # an exchange's language, model and source file are its response turn's: one join with turns,
    # grouped three ways
    columns = ("language", "model", "source_file")
    groups = run_query(
        store_dir,
        "select grouping(t.language, t.model, t.source_file) g, "
        + ", ".join(f"coalesce(t.{c}, '(unknown)') {c}" for c in columns)
        + ", count(*) exchanges, count(*) filter (where e.feedback_turn is not null) with_feedback, "
        "count(*) filter (where v.label) dsat, "
        # a DSAT rate is over the exchanges with a next user turn, as everywhere (dsatkit.rates)
        "round(100.0 * count(*) filter (where v.label) "
        "/ nullif(count(*) filter (where e.feedback_turn is not null), 0), 1) dsat_pct "
        "from exchange_index e join verdicts v using (exchange_id) "
        "join turns t on t.conversation_id = e.conversation_id and t.turn_index = e.response_turn "
        "group by grouping sets ((t.language), (t.model), (t.source_file)) order by exchanges desc",
    )
    for i, column in enumerate(columns):
        # grouping() sets a bit for each column left out of the set, the first column highest
        mask = ((1 << len(columns)) - 1) ^ (1 << (len(columns) - 1 - i))
        part = groups.filter(pl.col("g") == mask).select(column, "exchanges", "with_feedback", "dsat", "dsat_pct").head(25)
        _print_table(part, f"by {column}")
    _print_table(
        run_query(store_dir, "select reason, count(*) n from quarantine group by all order by n desc"),
        "quarantine",
    )
    _print_table(
        run_query(
            store_dir,
            "select run_id, finished_at, counts->>'conversations' conversations, "
            "counts->>'dsat' dsat from runs order by finished_at desc limit 5",
        ),
        "runs",
    )


def register(app: typer.Typer) -> None:
    app.command("sql")(sql_command)
    app.command("stats")(stats_command)
