"""Assemble the report: the sections' frames -> charts -> one self-contained `index.html` + PNGs.

The page needs nothing at view time: CSS, the Vega / Vega-Lite / vega-embed JavaScript (the bundle
vl-convert ships) and every chart's data are inline, and a Content-Security-Policy forbids any fetch,
so it opens from `file://` offline. Log text is escaped by Jinja2's autoescape in the page and
passed to the charts as JSON whose `<`, `>` and `&` are \\u escapes (Jinja2's `tojson`), so a log
holding `</script>` can neither close a script element nor become markup.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from dsatkit.report import charts, data
from dsatkit.report.config import ReportConfig

INDEX = "index.html"
CHARTS_DIR = "charts"


@dataclass
class Report:
    """What `build_report` wrote: the page, the PNGs, and the sections it holds or skipped (with why)."""

    index: Path
    pngs: list[Path] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    sections: dict[str, bool] = field(default_factory=dict)
    """section -> whether it has content (False: the page says what to run to fill it)"""


def _vl_version() -> str:
    """The Vega-Lite version Altair writes its specs for ("v6.4.1" -> "6.4"), for vl-convert."""
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script (vl-convert's bundle), safe to inline in a
    <script> element."""
    import vl_convert

    return vl_convert.javascript_bundle(vl_version=_vl_version()).replace("</script", "<\\/script")


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("dsatkit.report", "templates"), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "–" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.4g}"
    env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["when"] = lambda v: v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(v, dt.datetime) else v
    return env


def _topic_rows(topics: pl.DataFrame, examples: pl.DataFrame) -> list[dict[str, Any]]:
    """The topic table's rows (at most max_topics), each with its examples: rendering input, not data work."""
    by_topic: dict[int, dict[str, list]] = {}
    for ex in examples.to_dicts():
        by_topic.setdefault(ex["topic_id"], {"dsat": [], "sat": []})[ex["polarity"]].append(ex)
    rows = []
    for t in topics.to_dicts():
        t["examples"] = by_topic.get(t["topic_id"], {"dsat": [], "sat": []})
        rows.append(t)
    return rows


def build_report(
    store_dir: str | Path,
    out_dir: str | Path,
    config: ReportConfig | None = None,
    train_dir: str | Path | None = None,
    eval_dir: str | Path | None = None,
) -> Report:
    """Write `out_dir/index.html` (and `out_dir/charts/<chart>.png` unless `config.png` is off) for the
    mined store in `store_dir`; `train_dir` a `dsatkit train` output_dir (else the store's own
    `train_rounds`, if any), `eval_dir` a `dsatkit eval-detectors -o` directory. Raises StoreError for
    a directory that is not a store, data.ReportInputError for a bad train_dir / eval_dir."""
    from dsatkit import __version__
    from dsatkit.progress import progress

    config = config or ReportConfig()
    store_dir, out = Path(store_dir), Path(out_dir)
    train_dir = Path(train_dir) if train_dir is not None else None
    eval_dir = Path(eval_dir) if eval_dir is not None else None
    con = data.open_store(store_dir)
    ctx: dict[str, Any] = {"store": str(store_dir), "config": config, "version": __version__}
    made: dict[str, Any] = {}  # chart name -> Altair chart, in page order
    try:
        with progress() as bar:
            steps = bar.add_task("report: sections", total=6, unit="sections")
            run = data.last_run(con)
            ctx["run"] = run
            ctx["history"] = data.run_history(con).to_dicts()
            ctx["quarantine"] = data.quarantine(con).to_dicts()
            ctx["threshold"] = data.fused_threshold_of(run) if run else None
            bar.advance(steps)

            ctx["overall"] = overall = data.overall(con)
            cats = data.by_category(con)
            if cats.height:
                made["categories"] = charts.categories(cats)
            for column, frame in data.rates_by(con, config).items():
                if frame.height:
                    made[f"rate_by_{column}"] = charts.rate_by(frame, column, overall["rate"])
            over_time = data.rate_over_time(con)
            if over_time is not None:
                made["rate_over_time"] = charts.over_time(over_time)
            ctx["has_time"] = over_time is not None
            bar.advance(steps)

            topics = data.topics(con, config)
            ctx["topics"] = None
            if topics is not None:
                examples = data.topic_examples(con, topics["topic_id"].to_list(), config)
                ctx["topics"] = _topic_rows(topics, examples)
                ctx["topic_count"] = con.sql("select count(*) from topics").fetchall()[0][0]
                if topics.height:
                    made["topic_map"] = charts.topic_map(topics)
            bar.advance(steps)

            hist = data.score_histogram(con, config.histogram_bins)
            ctx["firing"] = data.detector_firing(con).to_dicts()
            agreement = data.detector_agreement(con)
            if agreement.height:
                made["detector_agreement"] = charts.agreement(agreement)
            if hist.height:
                flagged = data.flagged_by_threshold(hist, config.histogram_bins)
                made["score_histogram"] = charts.score_histogram(hist, flagged, ctx["threshold"])
            bar.advance(steps)

            rounds = data.train_rounds(con, train_dir)
            ctx["rounds"] = rounds.to_dicts() if rounds is not None else None
            ctx["train_dir"] = str(train_dir) if train_dir else None
            if rounds is not None and rounds.height:
                long = data.train_metrics_long(rounds)
                if long.height:
                    made["train_rounds"] = charts.train_rounds(long)
            bar.advance(steps)

            ctx["eval"] = None
            if eval_dir is not None:
                ev = data.eval_results(eval_dir, config)
                ctx["eval"] = {"dir": str(eval_dir), "report": ev["report"]}
                if ev["curves"] is not None:
                    made["pr_curve"] = charts.pr_curves(ev["curves"], ev["points"])
                made["confusion"] = charts.confusion(ev["confusion"])
            bar.advance(steps)

            specs = {name: chart.to_dict() for name, chart in made.items()}
            ctx["charts"] = specs
            ctx["generated_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            ctx["vega_js"] = javascript_bundle()
            html = _environment().get_template("index.html.j2").render(**ctx)

            out.mkdir(parents=True, exist_ok=True)
            index = out / INDEX
            tmp = out / f".{INDEX}.{os.getpid()}.tmp"
            tmp.write_text(html, encoding="utf-8")
            os.replace(tmp, index)
            report = Report(
                index=index,
                charts=list(specs),
                sections={
                    "run": bool(run), "topics": ctx["topics"] is not None, "time": ctx["has_time"],
                    "training": ctx["rounds"] is not None, "eval": ctx["eval"] is not None,
                },
            )
            if config.png:
                report.pngs = _write_pngs(specs, out / CHARTS_DIR, config.png_scale, bar)
    finally:
        con.close()
    return report


def _write_pngs(specs: dict[str, dict], charts_dir: Path, scale: float, bar) -> list[Path]:
    """Every chart as charts_dir/<name>.png (vl-convert, no browser); PNGs of charts this report no
    longer has are removed."""
    import vl_convert

    charts_dir.mkdir(parents=True, exist_ok=True)
    for stale in charts_dir.glob("*.png"):
        if stale.stem not in specs:
            stale.unlink()
    task = bar.add_task("report: PNG charts", total=len(specs), unit="charts")
    paths = []
    version = _vl_version()
    for name, spec in specs.items():
        path = charts_dir / f"{name}.png"
        path.write_bytes(vl_convert.vegalite_to_png(spec, vl_version=version, scale=scale))
        paths.append(path)
        bar.advance(task)
    return paths
