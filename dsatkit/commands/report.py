"""`dsatkit report`: a mined store -> one self-contained HTML report (+ PNG charts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsatkit.progress import results


def report_command(
    store_dir: Annotated[Path, typer.Argument(help="a directory written by `dsatkit mine`")],
    out: Annotated[Path, typer.Option("-o", "--out", help="directory to write index.html and charts/ into")] = Path(
        "report"
    ),
    train_dir: Annotated[
        Path | None, typer.Option("--train-dir", help="a `dsatkit train` output_dir (default: the store's own rounds)")
    ] = None,
    eval_dir: Annotated[
        Path | None, typer.Option("--eval", help="a directory written by `dsatkit eval-detectors -o`")
    ] = None,
    redact: Annotated[
        bool, typer.Option("--redact", help="mask e-mails, phones, API keys and IPs in every text shown")
    ] = False,
    examples: Annotated[int, typer.Option(help="DSAT examples shown per topic")] = 3,
    png: Annotated[bool, typer.Option("--png/--no-png", help="also write charts/<name>.png")] = True,
) -> None:
    """Write OUT/index.html: the run, DSAT rates, topics with examples, detector agreement, training
    rounds and detector quality, viewable offline from file://; plus OUT/charts/*.png."""
    from pydantic import ValidationError

    from dsatkit.errors import ConfigError
    from dsatkit.report import ReportConfig, build_report

    try:
        config = ReportConfig(redact=redact, examples_per_topic=examples, png=png)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"invalid option ({err['loc'][0]}): {err['msg']}", hint="see `dsatkit report --help`") from None
    report = build_report(store_dir, out, config, train_dir=train_dir, eval_dir=eval_dir)
    empty = [name for name, filled in report.sections.items() if not filled]
    results.print(f"wrote {report.index} ({len(report.charts)} charts, {len(report.pngs)} PNGs in {out / 'charts'})")
    if empty:
        results.print(f"[dim]sections without data: {', '.join(empty)}[/dim]")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
