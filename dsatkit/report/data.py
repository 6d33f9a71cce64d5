"""What the report shows, as small Polars frames: one function per section, each a query over the store.

Every function takes a read-only connection from `open_store` (or a directory, for the optional
inputs) and returns a frame of a few rows to a few thousand (aggregates, the examples shown), never
the store's texts wholesale. Log text leaves this module cut to the configured length (with a marker)
and, with `redact`, masked by the judge's redaction rules; escaping is the template's job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from dsatkit.errors import DsatkitError, StoreError, first_line
from dsatkit.rates import with_rate
from dsatkit.redact import redact_expr
from dsatkit.report.config import ReportConfig

REQUIRED = ("runs", "verdicts", "exchange_index", "turns")
"""Tables without which a directory is not a mined store."""
TOPIC_TABLES = ("topics", "exchange_topics")
"""Written by `dsatkit topics DIR`; the topic section needs both."""
TRAIN_TABLE = "train_rounds"
"""Written by `dsatkit train` into its output_dir/train.duckdb (dsatkit.trainers.drift)."""
GROUP_COLUMNS = ("language", "model", "source_file")
"""Exchange attributes the DSAT rate is broken down by (those of the response's turn)."""
OTHER = "(other)"
UNKNOWN = "(unknown)"


class ReportInputError(DsatkitError):
    """An optional input of the report (--train-dir, --eval) is not what it should be."""

    hint = "--train-dir takes a `dsatkit train` output_dir; --eval a `dsatkit eval-detectors -o` directory"


# ---- the store ---------------------------------------------------------------------------------------
def open_store(store_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a mined store (`dsatkit.store.connect`), after checking that the
    directory holds one: a StoreError in one line, naming what is missing, when it does not."""
    from dsatkit.store import connect

    con = connect(store_dir)
    missing = [t for t in REQUIRED if t not in tables(con)]
    if missing:
        con.close()
        raise StoreError(
            f"{store_dir} is not a mined store (no {', '.join(missing)} table)",
            hint="run `dsatkit mine LOGS -o DIR` first; a training output goes in --train-dir",
        )
    return con


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the tables and views a connection sees unqualified."""
    rows = con.sql("select table_name from information_schema.tables where table_schema = 'main'").fetchall()
    return {r[0] for r in rows if r[0]}


def shown_text(expr: pl.Expr, limit: int, redact: bool) -> pl.Expr:
    """A log text as the report shows it: redacted when asked, then cut at `limit` characters with a
    marker saying how many were left out (null stays null)."""
    if redact:
        expr = redact_expr(expr)
    n = expr.str.len_chars()
    return (
        pl.when(n > limit)
        .then(pl.format("{} [… {} more characters]", expr.str.slice(0, limit), n - limit))
        .otherwise(expr)
    )


def with_interval(frame: pl.DataFrame, k: str = "dsat", n: str = "exchanges") -> pl.DataFrame:
    """`frame` with rate = k/n and its 95% Wilson interval (rate_low, rate_high), per row."""
    return with_rate(frame, k, n)


# ---- the run -----------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def last_run(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The run that wrote the store as it is now (the latest of `runs`), with its JSON fields parsed:
    run_id, started_at, finished_at, dsatkit_version, inputs, config, versions, counts, timings, detectors."""
    rows = con.sql("select * from runs order by finished_at desc nulls last limit 1").pl().to_dicts()
    if not rows:
        return {}
    return {k: _json(v) for k, v in rows[0].items()}


def run_history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every recorded run, newest first: run_id, finished_at, inputs, conversations, dsat."""
    return con.sql(
        "select run_id, finished_at, array_to_string(from_json(inputs, '[\"VARCHAR\"]'), ', ') inputs, "
        "(counts->>'conversations')::bigint conversations, (counts->>'dsat')::bigint dsat "
        "from runs order by finished_at desc nulls last"
    ).pl()


def quarantine(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Quarantined input rows by reason: reason, rows, files (how many files had such rows)."""
    return con.sql(
        "select reason, count(*) rows, count(distinct source_file) files from quarantine "
        "group by reason order by rows desc, reason"
    ).pl()


def fused_threshold_of(run: dict[str, Any]) -> float | None:
    """The fused threshold the run labelled DSAT at, as the run recorded it (`counts.fused_threshold`);
    for a store written before runs recorded it: the configured one, else the stored threshold of its
    one cheap detector (dsatkit.detectors.fused_threshold, from the detectors it names); None when the
    run's detectors can no longer be built here (a detector directory that is gone)."""
    from pydantic import ValidationError

    recorded = (run.get("counts") or {}).get("fused_threshold")
    if recorded is not None:
        return float(recorded)

    from dsatkit.config import MineConfig
    from dsatkit.detectors import build_detector, fused_threshold

    try:
        cfg = MineConfig.model_validate(run.get("config") or {})
        if cfg.fuse.threshold is not None:
            return cfg.fuse.threshold
        return fused_threshold(None, [build_detector(n, cfg) for n in cfg.detectors if n != "judge"])
    except (ValidationError, DsatkitError, OSError, ValueError):
        return None


# ---- DSAT rates ----------------------------------------------------------------------------------------
_JUDGED = (
    "from verdicts v join exchange_index e using (exchange_id) "
    "join turns t on t.conversation_id = e.conversation_id and t.turn_index = e.response_turn"
)
"""Exchanges with a verdict (those with a next user turn) and their response's turn (model, language,
source file, timestamp)."""


def overall(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Store-wide counts: exchanges, judged (with a verdict), dsat, sat, neutral, pairs, seed_pairs,
    quarantined, and the DSAT rate over judged exchanges with its 95% interval (rate, rate_low, rate_high)."""
    row = con.sql(
        "select (select count(*) from exchange_index) exchanges, count(*) judged, "
        "count(*) filter (where polarity = 'dsat') dsat, count(*) filter (where polarity = 'sat') sat, "
        "count(*) filter (where polarity = 'neutral') neutral, "
        "(select count(*) from pairs where origin = 'dsat') pairs, "
        "(select count(*) from pairs where origin = 'seed') seed_pairs, "
        "(select count(*) from quarantine) quarantined from verdicts"
    ).pl()
    return with_interval(row, "dsat", "judged").to_dicts()[0]


def by_category(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Verdicts by category (DSAT and SAT kinds): category, polarity, n, share (of judged exchanges),
    description (from the store's taxonomy)."""
    return con.sql(
        "select coalesce(v.category, '(none)') category, v.polarity, count(*) n, "
        "count(*) / (select count(*) from verdicts) share, any_value(x.description) description "
        "from verdicts v left join taxonomy x using (category) where v.polarity != 'neutral' "
        "group by all order by v.polarity, n desc"
    ).pl()


def rates_by(con: duckdb.DuckDBPyConnection, config: ReportConfig) -> dict[str, pl.DataFrame]:
    """DSAT rate by each of GROUP_COLUMNS: column -> frame(value, exchanges, dsat, rate, rate_low,
    rate_high), the largest `max_groups` values first and the rest summed as '(other)'."""
    sets = ", ".join(f"(t.{c})" for c in GROUP_COLUMNS)
    grouped = con.sql(
        "select " + ", ".join(f"grouping(t.{c}) = 0 as by_{c}, t.{c}" for c in GROUP_COLUMNS)
        + f", count(*) exchanges, count(*) filter (where v.polarity = 'dsat') dsat {_JUDGED} "
        f"group by grouping sets ({sets})"
    ).pl()
    out = {}
    for c in GROUP_COLUMNS:
        part = (
            grouped.filter(pl.col(f"by_{c}"))
            .select(value=pl.col(c).fill_null(UNKNOWN), exchanges="exchanges", dsat="dsat")
            .sort(["exchanges", "value"], descending=[True, False])
            .with_row_index("rank")
        )
        top = part.filter(pl.col("rank") < config.max_groups).drop("rank")
        rest = part.filter(pl.col("rank") >= config.max_groups)
        if rest.height:
            top = pl.concat([top, rest.select(pl.lit(OTHER).alias("value"), pl.sum("exchanges", "dsat"))])
        out[c] = with_interval(top)
    return out


_UNITS = ((2, "hour"), (92, "day"), (2 * 366, "week"))
"""(most days spanned, bucket): the time axis is cut into hours, days, weeks, else months."""


def rate_over_time(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """DSAT rate per time bucket of the responses' timestamps: bucket (UTC), unit, exchanges, dsat,
    rate, rate_low, rate_high; None when no exchange has a timestamp."""
    lo, hi = con.sql(f"select min(t.timestamp), max(t.timestamp) {_JUDGED}").fetchall()[0]
    if lo is None:
        return None
    days = (hi - lo).total_seconds() / 86400
    unit = next((u for most, u in _UNITS if days <= most), "month")
    frame = con.sql(
        f"select date_trunc('{unit}', timezone('UTC', t.timestamp)) bucket, count(*) exchanges, "
        f"count(*) filter (where v.polarity = 'dsat') dsat {_JUDGED} where t.timestamp is not null "
        "group by 1 order by 1"
    ).pl()
    return with_interval(frame).with_columns(unit=pl.lit(unit))


# ---- topics -------------------------------------------------------------------------------------------
def topics(con: duckdb.DuckDBPyConnection, config: ReportConfig) -> pl.DataFrame | None:
    """The `topics` table (largest first, at most `max_topics`), names and terms redacted when asked;
    None when the store has no topics yet."""
    if not set(TOPIC_TABLES) <= tables(con):
        return None
    frame = con.sql(f"select * from topics order by size desc, topic_id limit {config.max_topics}").pl()
    frame = frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))  # rates written as SQL literals
    if config.redact:
        text = [c for c in ("name", "description", "group_name") if c in frame.columns]
        frame = frame.with_columns(redact_expr(pl.col(c)) for c in text)
        if "terms" in frame.columns:
            frame = frame.with_columns(pl.col("terms").list.eval(redact_expr(pl.element())))
    return frame


def topic_examples(
    con: duckdb.DuckDBPyConnection, topic_ids: list[int], config: ReportConfig
) -> pl.DataFrame:
    """Examples of the given topics: per topic the `examples_per_topic` DSAT exchanges nearest its
    centre and the nearest SAT one. Columns: topic_id, polarity, rank, exchange_id, score, category,
    request, response (its head), feedback, all texts as `shown_text` gives them."""
    ids = pl.DataFrame({"topic_id": topic_ids}, schema={"topic_id": pl.Int64})  # noqa: F841 (read by DuckDB)
    picked = con.sql(
        "with ranked as ("
        "  select et.topic_id, et.exchange_id, v.score, v.category, v.polarity, row_number() over ("
        "    partition by et.topic_id, v.polarity order by et.distance, et.exchange_id) as rank"
        "  from exchange_topics et join verdicts v using (exchange_id)"
        "  where v.polarity in ('dsat', 'sat') and et.topic_id in (select topic_id from ids)), "
        "x as (select r.*, e.conversation_id, e.request_turn, e.response_turn, e.feedback_turn"
        f"  from ranked r join exchange_index e using (exchange_id)"
        f"  where rank <= case when polarity = 'dsat' then {config.examples_per_topic} else 1 end), "
        # only the turns of the picked conversations are joined three times, not the whole table
        "t as (select conversation_id, turn_index, content from turns"
        "  where conversation_id in (select conversation_id from x)) "
        "select x.topic_id, x.polarity, x.rank, x.exchange_id, x.score, x.category, "
        "  rq.content request, rs.content response, fb.content feedback from x "
        "left join t rq on rq.conversation_id = x.conversation_id and rq.turn_index = x.request_turn "
        "left join t rs on rs.conversation_id = x.conversation_id and rs.turn_index = x.response_turn "
        "left join t fb on fb.conversation_id = x.conversation_id and fb.turn_index = x.feedback_turn "
        "order by x.topic_id, x.polarity, x.rank"
    ).pl()
    return picked.with_columns(
        shown_text(pl.col("request"), config.text_chars, config.redact),
        shown_text(pl.col("response"), config.response_head_chars, config.redact),
        shown_text(pl.col("feedback"), config.text_chars, config.redact),
    )


# ---- detectors ----------------------------------------------------------------------------------------
def detector_agreement(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Which detectors voted DSAT together (the verdicts' `detectors` list), split by the fused label:
    detectors ('(none)' when none fired), verdict ('DSAT' | 'not DSAT'), n, share of judged exchanges."""
    return con.sql(
        "select coalesce(replace(detectors, ',', ' + '), '(none)') detectors, "
        "case when polarity = 'dsat' then 'DSAT' else 'not DSAT' end verdict, count(*) n, "
        "count(*) / (select count(*) from verdicts) share from verdicts group by all order by n desc"
    ).pl()


def detector_firing(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per detector: exchanges it scored, fired on (label), fired on alone, and mean score."""
    return con.sql(
        "with d as (select exchange_id, detector, label, score, "
        "  count(*) filter (where label) over (partition by exchange_id) firing from detections) "
        "select detector, count(*) scored, count(*) filter (where label) fired, "
        "count(*) filter (where label and firing = 1) fired_alone, avg(score) mean_score "
        "from d group by detector order by detector"
    ).pl()


def score_histogram(con: duckdb.DuckDBPyConnection, bins: int) -> pl.DataFrame:
    """Fused scores in `bins` equal bins over [0, 1] by polarity: bin (0 .. bins-1), bin_start, bin_end,
    polarity, n."""
    return con.sql(
        f"select least(floor(score * {bins}), {bins} - 1)::int bin, polarity, count(*) n from verdicts "
        "group by all order by bin, polarity"
    ).pl().select(
        "bin", bin_start=pl.col("bin") / bins, bin_end=(pl.col("bin") + 1) / bins, polarity="polarity", n="n"
    )


def flagged_by_threshold(histogram: pl.DataFrame, bins: int) -> pl.DataFrame:
    """How many exchanges a threshold at each bin edge would label DSAT (score >= threshold):
    threshold, flagged (exact at the edges, from the histogram)."""
    per_bin = histogram.group_by("bin").agg(pl.sum("n"))
    edges = pl.DataFrame({"bin": range(bins)}, schema={"bin": per_bin.schema["bin"]})
    return (
        edges.join(per_bin, on="bin", how="left")
        .with_columns(pl.col("n").fill_null(0))
        .sort("bin", descending=True)
        .select(threshold=pl.col("bin") / bins, flagged=pl.col("n").cum_sum())
        .sort("threshold")
    )


# ---- training ------------------------------------------------------------------------------------------
def train_rounds(con: duckdb.DuckDBPyConnection | None, train_dir: Path | None) -> pl.DataFrame | None:
    """The `train_rounds` table of a training output: of `train_dir` when given (a ReportInputError
    when it holds none), else the store's own if it has one, else None. Ordered by round."""
    if train_dir is not None:
        from dsatkit.store import connect

        try:
            tcon = connect(train_dir)
        except StoreError as e:
            raise ReportInputError(f"--train-dir {train_dir}: {e}") from None
        try:
            if TRAIN_TABLE not in tables(tcon):
                raise ReportInputError(f"--train-dir {train_dir} holds no {TRAIN_TABLE} table (no finished round)")
            return tcon.sql(f"select * from {TRAIN_TABLE} order by round").pl()
        finally:
            tcon.close()
    if con is not None and TRAIN_TABLE in tables(con):
        return con.sql(f"select * from {TRAIN_TABLE} order by round").pl()
    return None


TRAIN_METRICS = ("loss", "reward_margin", "reward_accuracy", "pairs_kept", "distinct_2", "embedding_distance")
"""Per-round columns plotted (those a training output has values for)."""


def train_metrics_long(rounds: pl.DataFrame) -> pl.DataFrame:
    """round, stage, metric, value: one row per round and plotted metric that has a value."""
    present = [m for m in TRAIN_METRICS if m in rounds.columns]
    return (
        rounds.select("round", "stage", *(pl.col(m).cast(pl.Float64) for m in present))
        .unpivot(index=["round", "stage"], variable_name="metric", value_name="value")
        .drop_nulls("value")
    )


# ---- eval-detectors ------------------------------------------------------------------------------------
def eval_results(eval_dir: Path, config: ReportConfig) -> dict[str, Any]:
    """What `dsatkit eval-detectors -o DIR` wrote (dsatkit.evaluate.write_report): its report.json
    (`report`), precision-recall curves recomputed from predictions.parquet (`curves`: name, step (the
    position along the curve, by rising threshold), recall, precision; at most `max_curve_points` per curve), each scorer's point at its threshold (`points`:
    name, recall, precision, threshold) and confusion counts (`confusion`: name, actual, predicted, n)."""
    from sklearn.metrics import precision_recall_curve

    report_path, predictions_path = eval_dir / "report.json", eval_dir / "predictions.parquet"
    if not report_path.is_file() or not predictions_path.is_file():
        raise ReportInputError(f"--eval {eval_dir}: no report.json and predictions.parquet there")
    try:
        report = json.loads(report_path.read_text())
        predictions = pl.read_parquet(predictions_path)
        scorers = {**report["detectors"], "fused": report["fused"]}
    except (ValueError, KeyError, TypeError, pl.exceptions.PolarsError, OSError) as e:
        raise ReportInputError(f"--eval {eval_dir}: unreadable results: {first_line(e)}") from None
    y = (predictions["gold_label"] == "dsat").to_numpy()
    curves, points, confusion = [], [], []
    for name, m in scorers.items():
        column = f"score_{name}"
        if 0 < y.sum() < len(y) and column in predictions.columns:
            p, r, _ = precision_recall_curve(y, predictions[column].fill_null(0.0).to_numpy())
            keep = np.unique(np.linspace(0, len(p) - 1, min(len(p), config.max_curve_points)).round().astype(int))
            curves.append(pl.DataFrame({"name": name, "step": keep, "recall": r[keep], "precision": p[keep]}))
        threshold = m.get("threshold", report.get("threshold"))
        points.append({"name": name, "recall": m["recall"], "precision": m["precision"], "threshold": threshold})
        c = m["confusion"]
        for actual, predicted, key in (("DSAT", "DSAT", "tp"), ("not DSAT", "DSAT", "fp"),
                                       ("DSAT", "not DSAT", "fn"), ("not DSAT", "not DSAT", "tn")):
            confusion.append({"name": name, "actual": actual, "predicted": predicted, "n": int(c[key])})
    return {
        "report": report,
        "curves": pl.concat(curves) if curves else None,
        "points": pl.DataFrame(points),
        "confusion": pl.DataFrame(confusion),
    }
