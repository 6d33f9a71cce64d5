"""`dsatkit mine`: chat logs -> DSAT records and preference pairs in a store directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsatkit.commands.options import (
    ConfigOpt,
    DetectorDirOpt,
    DetectorsOpt,
    EmbeddingModelOpt,
    FormatOpt,
    ThresholdOpt,
    check_named_detectors,
    detector_overrides,
)
from dsatkit.progress import results


def mine_command(
    paths: Annotated[list[str], typer.Argument(help="log files, quoted globs ('logs/*.parquet') or directories")],
    out: Annotated[Path, typer.Option("-o", "--out", help="store directory to (re)write")] = Path("mined"),
    config: ConfigOpt = None,
    fmt: FormatOpt = None,
    detectors: DetectorsOpt = None,
    threshold: ThresholdOpt = None,
    skip_bad_files: Annotated[
        bool | None, typer.Option("--skip-bad-files", help="quarantine unreadable files and go on")
    ] = None,
    batch_rows: Annotated[
        int | None, typer.Option(help="conversations per batch (flat tables: 5x as many rows); memory grows with it")
    ] = None,
    embedding_model: EmbeddingModelOpt = None,
    detector_dir: DetectorDirOpt = None,
    judge_model: Annotated[str | None, typer.Option(help="model name at the judge endpoint")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    judge_on: Annotated[str | None, typer.Option(help="all|candidates|uncertain")] = None,
    judge_concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    judge_max_calls: Annotated[int | None, typer.Option(help="stop judging after this many calls")] = None,
    redact: Annotated[
        bool | None, typer.Option("--redact", help="mask e-mails, phones, keys, IPs before the judge")
    ] = None,
    topics: Annotated[
        bool, typer.Option("--topics", help="then cluster the requests into topics (as `dsatkit topics OUT`)")
    ] = False,
    topics_config: Annotated[
        Path | None, typer.Option(help="YAML config of the topics (TopicsConfig); implies --topics")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (this process) | ray (Ray workers mine the files; `pip install 'dsatkit\\[ray]'`)")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="a running Ray cluster ('auto': this machine's); default: a local one for the run")
    ] = None,
) -> None:
    """Mine DSAT exchanges and preference pairs from chat logs into OUT/dsat.duckdb (+ parquet)."""
    from dsatkit.config import MineConfig
    from dsatkit.pipeline import mine

    overrides = detector_overrides(fmt, detectors, threshold, embedding_model, detector_dir)
    overrides.update({
        "read.skip_bad_files": skip_bad_files,
        "read.batch_rows": batch_rows,
        "judge.model": judge_model,
        "judge.base_url": judge_base_url,
        "judge.judge_on": judge_on,
        "judge.concurrency": judge_concurrency,
        "judge.max_calls": judge_max_calls,
        "judge.redact": redact,
        "executor": executor,
        "ray.address": ray_address,
    })
    if ray_address is not None and executor is None:
        overrides["executor"] = "ray"
    if detectors is None and judge_model is not None:
        # naming a judge model switches the judge on next to the default detectors
        overrides["detectors"] = ["learned", "judge"]
    cfg = MineConfig.load(config, **overrides)
    check_named_detectors(cfg, detector_dir, judge_model)
    topics_cfg = None
    if topics or topics_config is not None:
        from dsatkit.topics import TopicsConfig

        topics_cfg = TopicsConfig.load(topics_config)
    result = mine(paths, out, cfg, topics=topics_cfg)
    print_summary(result.summary, out)
    if result.topics is not None:
        from dsatkit.commands.topics import print_topics

        print_topics(result.topics, out)


def print_summary(summary, out: Path) -> None:
    from rich.table import Table

    s = summary
    table = Table(title=f"dsatkit mine -> {out}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in (
        ("files", s.files),
        ("rows read", s.rows_read),
        ("conversations", s.conversations),
        ("exchanges (with feedback)", f"{s.exchanges:,} ({s.with_feedback:,})"),
        ("quarantined rows", s.quarantined),
        ("DSAT / SAT / neutral", f"{s.dsat:,} / {s.sat:,} / {s.neutral:,}"),
        ("pairs (seed)", f"{s.pairs:,} ({s.seed_pairs:,})"),
        ("DSAT without a prompt (no pair)", s.no_prompt),
    ):
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    for reason, n in s.quarantine_reasons.items():
        table.add_row(f"  quarantine: {reason}", f"{n:,}")
    for reason, n in s.skipped_files.items():
        table.add_row(f"  files skipped: {reason}", f"{n:,}")
    for cat, n in s.dsat_by_category.items():
        table.add_row(f"  dsat: {cat}", f"{n:,}")
    if s.judge_cascade:
        c = s.judge_cascade
        sent = f"{c['sent_to_judge']:,} of {c['eligible']:,} sent ({c['saved']:,} calls saved)"
        table.add_row("judge cascade", sent)
    for name, stats in s.detectors.items():
        shown = ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in stats.items()
                          if v not in (None, 0, 0.0, False, {}, ""))
        table.add_row(f"  {name}", shown)
    total = sum(s.timings_s.values())
    table.add_row("time", f"{total:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in s.timings_s.items())})")
    results.print(table)


def register(app: typer.Typer) -> None:
    app.command("mine")(mine_command)
