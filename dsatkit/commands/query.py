"""`dsatkit sql` and `dsatkit stats`: read-only looks at a store directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import duckdb
import polars as pl
import typer

from dsatkit.errors import DsatkitError, first_line
from dsatkit.progress import results


class QueryError(DsatkitError):
    hint = "tables: turns, exchanges, detections, verdicts, dsat, pairs, quarantine, runs, taxonomy"


def run_query(store_dir: Path, query: str) -> pl.DataFrame:
    from dsatkit.store import connect

    con = connect(store_dir)
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
        results.print(f"[dim]... {frame.height - max_rows:,} more rows (use --format csv/json/parquet -o FILE)[/dim]")


def sql_command(
    store_dir: Annotated[Path, typer.Argument(help="a directory written by `dsatkit mine` (or train)")],
    query: Annotated[str, typer.Argument(help="DuckDB SQL; the store's tables are in scope")],
    fmt: Annotated[
        Literal["table", "csv", "json", "parquet"], typer.Option("--format", "-f", help="output format")
    ] = "table",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here instead of stdout")] = None,
) -> None:
    """Run a read-only SQL query over a mined store."""
    frame = run_query(store_dir, query)
    if fmt == "parquet":
        if output is None:
            raise QueryError("--format parquet needs -o FILE", hint="e.g. -o dsat.parquet")
        frame.write_parquet(output)
    elif fmt == "table":
        if output is not None:
            raise QueryError("--format table prints to the terminal", hint="use csv, json or parquet with -o")
        _print_table(frame)
    else:
        nested = [n for n, t in frame.schema.items() if isinstance(t, (pl.List, pl.Struct))]
        if fmt == "csv" and nested:
            as_json = ", ".join(f'to_json("{n}")::varchar as "{n}"' for n in nested)
            frame = duckdb.sql(f"select * replace ({as_json}) from frame").pl()
        text = frame.write_csv() if fmt == "csv" else frame.write_ndjson()
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
        + ", count(*) exchanges, count(*) filter (where v.label) dsat, "
        "round(100.0 * count(*) filter (where v.label) / count(*), 1) dsat_pct "
        "from exchange_index e join verdicts v using (exchange_id) "
        "join turns t on t.conversation_id = e.conversation_id and t.turn_index = e.response_turn "
        "group by grouping sets ((t.language), (t.model), (t.source_file)) order by exchanges desc",
    )
    for i, column in enumerate(columns):
        # grouping() sets a bit for each column left out of the set, the first column highest
        mask = ((1 << len(columns)) - 1) ^ (1 << (len(columns) - 1 - i))
        part = groups.filter(pl.col("g") == mask).select(column, "exchanges", "dsat", "dsat_pct").head(25)
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
