"""`dsatkit topics`: cluster a store's requests into topics with DSAT rates (DIR/topics.duckdb)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsatkit.commands.options import EmbeddingModelOpt
from dsatkit.progress import results


def topics_command(
    store_dir: Annotated[Path, typer.Argument(help="a directory written by `dsatkit mine`")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (TopicsConfig)")] = None,
    n_topics: Annotated[str | None, typer.Option(help="number of topics, or auto (silhouette)")] = None,
    max_topics: Annotated[int | None, typer.Option(help="the largest number of topics auto considers")] = None,
    min_topic_size: Annotated[int | None, typer.Option(help="smaller clusters join their neighbours")] = None,
    seed: Annotated[int | None, typer.Option(help="the same seed gives the same topics")] = None,
    embedding_model: EmbeddingModelOpt = None,
    judge_model: Annotated[
        str | None, typer.Option(help="name topics with this model at the judge endpoint (else: terms, offline)")
    ] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    judge_max_calls: Annotated[int | None, typer.Option(help="name at most this many topics and groups")] = None,
    redact: Annotated[
        bool | None, typer.Option("--redact", help="mask e-mails, phones, keys, IPs in what the LLM is shown")
    ] = None,
) -> None:
    """Cluster the requests of a mined store into topics, each with its DSAT rate (writes DIR/topics.duckdb)."""
    from dsatkit.topics import TopicsConfig, build_topics

    cfg = TopicsConfig.load(config, **topics_overrides(
        n_topics=n_topics, max_topics=max_topics, min_topic_size=min_topic_size, seed=seed,
        model=embedding_model, judge_model=judge_model, judge_base_url=judge_base_url,
        judge_max_calls=judge_max_calls, redact=redact,
    ))
    result = build_topics(store_dir, cfg)
    print_topics(result, store_dir)


def topics_overrides(*, judge_model=None, judge_base_url=None, judge_max_calls=None, redact=None,
                     **fields: object) -> dict[str, object]:
    """The dotted TopicsConfig overrides of the command-line options (None = keep the config's value);
    naming a judge model switches LLM naming on."""
    overrides: dict[str, object] = dict(fields)
    overrides.update({"llm.model": judge_model, "llm.base_url": judge_base_url, "llm.max_calls": judge_max_calls,
                      "llm.redact": redact})
    if judge_model is not None:
        overrides["naming"] = "llm"
    return overrides


def print_topics(result, store_dir: Path, max_rows: int = 40) -> None:
    """The topics by size with their DSAT rate and name, and one line about the run."""
    from rich.table import Table

    s = result.summary
    table = Table(title=f"dsatkit topics -> {store_dir}/topics.duckdb", title_justify="left")
    for name, justify in (("topic", "right"), ("name", "left"), ("size", "right"), ("DSAT rate (95% CI)", "right"),
                          ("SAT rate", "right"), ("group", "right")):
        table.add_column(name, justify=justify, overflow="fold", max_width=60 if name == "name" else None)
    for row in result.topics.head(max_rows).iter_rows(named=True):
        rate = "" if row["dsat_rate"] is None else (
            f"{row['dsat_rate']:.1%} ({row['dsat_rate_low']:.1%}-{row['dsat_rate_high']:.1%})")
        sat = "" if row["sat_rate"] is None else f"{row['sat_rate']:.1%}"
        table.add_row(str(row["topic_id"]), row["name"], f"{row['size']:,}", rate, sat, str(row["group_id"]))
    results.print(table)
    if result.topics.height > max_rows:
        results.print(f"[dim]... {result.topics.height - max_rows} more topics: dsatkit sql {store_dir} "
                      "\"from topics\"[/dim]")
    chosen = f"k={s.topics} by {s.k_chosen_by}" + (
        f" (best of {len(s.silhouettes)} candidates)" if s.silhouettes else "")
    naming = s.naming
    named = (f"; LLM names {naming['named']}/{naming['topics']} ({naming['calls']} calls, "
             f"{naming['cache_hits']} cached)" if naming.get("method") == "llm" else "")
    results.print(
        f"{s.exchanges:,} exchanges, {s.with_request:,} with a request, {s.distinct_requests:,} distinct; "
        f"embedded {s.embedded:,} ({s.embedding_cache_hits:,} from the cache); {chosen}, "
        f"{s.groups} groups{named}; {sum(s.timings_s.values()):.1f} s "
        f"({', '.join(f'{k} {v:.1f}' for k, v in s.timings_s.items())})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("topics")(topics_command)
