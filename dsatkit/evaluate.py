"""Detector quality on a user's labelled exchanges: precision, recall, F1, confusion, PR curve.

A labelled file is either
(a) a flat exchange table (parquet / jsonl / csv): `request` (or `context`, a list of {role, content}),
    `response`, `feedback`, `label` (dsat | sat | neutral), optional `category`; or
(b) any log format `dsatkit mine` reads, whose conversation rows also carry `label`, optional
    `category` and optional `response_turn` (default: the last exchange that has feedback).
DSAT is the positive class; sat and neutral are negatives. Every detector is scored alone at the
configured fuse threshold (when none is configured: at its own stored threshold), and the fused verdict
at the fused threshold (`detectors.fused_threshold`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from dsatkit.config import MineConfig, ReadConfig
from dsatkit.errors import InputError, first_line
from dsatkit.exchanges import exchange_ids
from dsatkit.schema import EXCHANGES, MESSAGE_DTYPE, conform
from dsatkit.tables import read_table, table_columns

LABELS = ("dsat", "sat", "neutral")
_FLAT_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv")
"""Suffixes of a flat exchange table (a .json file is a log: JSON arrays are how logs come)."""
_FLAT_COLUMNS = {"response", "feedback", "label"}


def _read_flat(path: Path) -> pl.DataFrame | None:
    """The file as a frame when it is a flat exchange table, else None (then it is a log file)."""
    if path.suffix not in _FLAT_SUFFIXES:
        return None
    csv = path.suffix == ".csv"
    try:
        # a csv is never a log: it is read whole, and its errors are the labelled table's
        head = read_table(path) if csv else None
        if head is None:
            if not _FLAT_COLUMNS <= set(table_columns(path)):
                return None
            head = read_table(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        if csv:
            raise InputError(f"{path}: cannot read: {first_line(e)}") from None
        return None  # let the log reader report what is wrong with it
    if not _FLAT_COLUMNS <= set(head.columns):
        if csv:
            raise InputError(
                f"{path}: a labelled csv needs columns {sorted(_FLAT_COLUMNS)}; has {head.columns}",
                "see docs/detectors.md for the labelled-file schema",
            )
        return None
    return head


def _flat_exchanges(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    if "request" not in df.columns and "context" not in df.columns:
        raise InputError(
            f"{path}: a flat labelled table needs a 'request' or a 'context' column",
            "see docs/detectors.md for the labelled-file schema",
        )
    cid = (
        pl.col("conversation_id").cast(pl.String)
        if "conversation_id" in df.columns
        else pl.format("{}:{}", pl.lit(str(path)), pl.col("_row"))
    )
    df = df.with_row_index("_row").with_columns(conversation_id=cid)
    if "context" in df.columns:
        ctx = pl.col("context").cast(pl.List(MESSAGE_DTYPE))
        request = (
            pl.col("request")
            if "request" in df.columns
            else (
                pl.col("context")
                .list.eval(
                    pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
                )
                .list.last()
            )
        )
    else:
        ctx = pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.col("request").cast(pl.String)))
        request = pl.col("request")
    turn = (
        pl.col("response_turn").cast(pl.Int32)
        if "response_turn" in df.columns
        else pl.col("context").list.len()
        if "context" in df.columns
        else pl.lit(1)
    )
    out = df.with_columns(
        context=ctx,
        request=request.cast(pl.String),
        response_turn=turn.cast(pl.Int32),
        source_file=pl.lit(str(path)),
        gold_label=pl.col("label"),
        gold_category=pl.col("category") if "category" in df.columns else pl.lit(None),
    )
    out = out.with_columns(exchange_ids(out["conversation_id"], out["response_turn"]))
    return pl.concat(
        [conform(out, EXCHANGES), out.select("gold_label", "gold_category").cast(pl.String)], how="horizontal"
    )


def _log_exchanges(path: Path, read: ReadConfig) -> pl.DataFrame:
    from dsatkit.exchanges import build_exchanges
    from dsatkit.logs import read_logs

    turns = pl.concat([b.turns for b in read_logs([path], read)])
    meta = (
        turns.group_by("conversation_id")
        .agg(pl.col("metadata").drop_nulls().first())
        .with_columns(
            pl.col("metadata").str.json_decode(
                pl.Struct({"label": pl.String, "category": pl.String, "response_turn": pl.Int64})
            )
        )
        .unnest("metadata")
    )
    meta = meta.rename({"response_turn": "gold_turn"})
    ex = build_exchanges(turns).join(meta, on="conversation_id", how="left")
    # the labelled exchange: the one named by response_turn, else the last one with feedback
    last = pl.col("response_turn") == (
        pl.col("response_turn").filter(pl.col("feedback").is_not_null()).max().over("conversation_id")
    )
    pick = (
        pl.when(pl.col("gold_turn").is_not_null())
        .then(pl.col("response_turn") == pl.col("gold_turn"))
        .otherwise(last)
    )
    picked = ex.filter(pick)
    unlabelled = meta.filter(pl.col("label").is_null()).height
    if unlabelled:
        raise InputError(
            f"{path}: {unlabelled} conversation(s) carry no 'label'",
            "every conversation row needs label: dsat|sat|neutral",
        )
    missing = meta.join(picked, on="conversation_id", how="anti").height
    if missing:
        raise InputError(
            f"{path}: {missing} labelled conversation(s) have no exchange to score "
            "(no user turn after an assistant turn, or a response_turn that is not an assistant turn)"
        )
    return pl.concat(
        [conform(picked, EXCHANGES), picked.select(gold_label="label", gold_category="category")],
        how="horizontal",
    )


def load_labelled(paths: Sequence[str | Path], read: ReadConfig | None = None) -> pl.DataFrame:
    """EXCHANGES columns plus gold_label / gold_category, one row per labelled exchange."""
    read = read or ReadConfig()
    frames = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(
                f"labelled file not found: {p}", "see docs/detectors.md for the labelled-file schema"
            )
        flat = _read_flat(p)
        frames.append(_flat_exchanges(flat, p) if flat is not None else _log_exchanges(p, read))
    out = pl.concat(frames, how="vertical_relaxed").with_columns(
        gold_label=pl.col("gold_label").str.strip_chars().str.to_lowercase(),
        gold_category=pl.col("gold_category").str.strip_chars().str.to_lowercase(),
    )
    bad = out.filter(~pl.col("gold_label").is_in(LABELS) | pl.col("gold_label").is_null())
    if bad.height:
        raise InputError(
            f"{bad['source_file'][0]}: label {bad['gold_label'][0]!r} is not one of dsat|sat|neutral "
            f"({bad.height} such rows)"
        )
    dup = out.filter(pl.col("exchange_id").is_duplicated())
    if dup.height:
        raise InputError(
            f"{dup['source_file'][0]}: exchange of conversation {dup['conversation_id'][0]!r} is labelled twice"
        )
    return out


def score_table(labelled: pl.DataFrame, detections: pl.DataFrame, verdicts: pl.DataFrame) -> pl.DataFrame:
    """One row per labelled exchange: gold, each detector's score/category, the fused verdict."""
    wide = detections.pivot(
        on="detector", index="exchange_id", values=["score", "category"], aggregate_function="first"
    )
    names = sorted(detections["detector"].unique().to_list())
    if len(names) == 1:  # pivot names columns without the value prefix... only with several values
        wide = wide.rename({c: f"{c}_{names[0]}" for c in ("score", "category") if c in wide.columns})
    fused = verdicts.select(
        "exchange_id", score_fused="score", category_fused="category", label_fused="label"
    )
    return (
        labelled.select("exchange_id", "feedback", "gold_label", "gold_category")
        .join(wide, on="exchange_id", how="left")
        .join(fused, on="exchange_id", how="left")
    )


def metrics(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    category: np.ndarray | None = None,
    gold_category: np.ndarray | None = None,
) -> dict:
    """Binary metrics (DSAT positive) at `threshold`, average precision, category accuracy."""
    from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

    pred = score >= threshold
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()
    out = {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "confusion": {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)},
        "average_precision": float(average_precision_score(y, score)) if 0 < y.sum() < len(y) else None,
    }
    if category is not None and gold_category is not None:
        hit = y & pred & (gold_category != None)
        out["category_accuracy"] = float((category[hit] == gold_category[hit]).mean()) if hit.any() else None
        out["category_n"] = int(hit.sum())
    return out


def evaluate(
    labelled: pl.DataFrame, config: MineConfig, cache=None, detectors=None
) -> tuple[dict, pl.DataFrame]:
    """Run the configured detectors (or the given `Detector` objects) and fusion on `labelled`.

    Returns (report, per-exchange table).
    """
    from dsatkit.detectors import build_detector, fused_threshold, threshold_of
    from dsatkit.pipeline import run_detectors

    exchanges = conform(labelled, EXCHANGES)
    if detectors is None:
        detectors = [build_detector(n, config, cache) for n in config.detectors]
    detections, verdicts = run_detectors(exchanges, config, cache, detectors)
    table = score_table(labelled, detections, verdicts)
    y = (table["gold_label"] == "dsat").to_numpy()
    gold_cat = table["gold_category"].to_numpy()
    t = fused_threshold(config.fuse.threshold, detectors)
    report: dict = {
        "n": table.height,
        "positives": int(y.sum()),
        "threshold": t,
        "labels": dict(
            zip(*table["gold_label"].value_counts().sort("gold_label").to_dict(as_series=False).values())
        ),
        "detectors": {},
        "curves": {},
    }
    for det in detectors:
        name = det.name
        col = f"score_{name}"
        if col not in table.columns:
            continue
        scored = table[col].is_not_null().to_numpy()
        # a detector that did not see an exchange (the judge outside its cascade) counts as not flagging it
        s = table[col].fill_null(0.0).to_numpy()
        alone = config.fuse.threshold if config.fuse.threshold is not None else threshold_of(det)
        m = metrics(y, s, alone, table[f"category_{name}"].to_numpy(), gold_cat)
        report["detectors"][name] = m | {"scored": int(scored.sum()), "threshold": alone}
        report["curves"][name] = s
    s = table["score_fused"].fill_null(0.0).to_numpy()
    report["fused"] = metrics(y, s, t, table["category_fused"].to_numpy(), gold_cat)
    report["curves"]["fused"] = s
    report["y"] = y
    return report, table


def plot_pr(report: dict, path: Path) -> Path:
    """Precision-recall curves of every detector and the fused score, with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    y, t = report["y"], report["threshold"]
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in report["curves"].items():
        if not 0 < y.sum() < len(y):
            break
        p, r, _ = precision_recall_curve(y, s)
        m = report["fused"] if name == "fused" else report["detectors"][name]
        ap = m["average_precision"]
        line = ax.plot(r, p, lw=2.5 if name == "fused" else 1.5, label=f"{name} (AP={ap:.2f})")[0]
        ax.plot([m["recall"]], [m["precision"]], "o", color=line.get_color())
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title=f"DSAT precision-recall (n={len(y)}, dots at threshold {t:g})",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _rows(report: dict) -> list[tuple[str, dict]]:
    return [*report["detectors"].items(), ("fused", report["fused"])]


def to_markdown(report: dict) -> str:
    lines = [
        (
            f"# Detector quality\n\n{report['n']} labelled exchanges ({report['positives']} DSAT), "
            f"threshold {report['threshold']:g}. Labels: {report['labels']}.\n"
        ),
        "| detector | precision | recall | F1 | AP | TP | FP | FN | TN | category acc. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in _rows(report):
        c = m["confusion"]
        ap = "-" if m["average_precision"] is None else f"{m['average_precision']:.3f}"
        ca = (
            "-"
            if m.get("category_accuracy") is None
            else f"{m['category_accuracy']:.2f} (n={m['category_n']})"
        )
        lines.append(
            f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {ap} | "
            f"{c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} | {ca} |"
        )
    lines.append("\n![precision-recall](pr_curve.png)\n")
    return "\n".join(lines)


def write_report(report: dict, table: pl.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, pr_curve.png and predictions.parquet in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if k not in ("curves", "y")}
    paths = {
        "json": out / "report.json",
        "md": out / "report.md",
        "png": out / "pr_curve.png",
        "predictions": out / "predictions.parquet",
    }
    paths["json"].write_text(json.dumps(public, indent=2) + "\n")
    paths["md"].write_text(to_markdown(report))
    plot_pr(report, paths["png"])
    table.write_parquet(paths["predictions"])
    return paths


def print_report(report: dict, console) -> None:
    from rich.table import Table

    tab = Table(
        title=f"DSAT detection: {report['n']} exchanges, {report['positives']} DSAT, threshold {report['threshold']:g}"
    )
    for col in ("detector", "precision", "recall", "F1", "AP", "TP", "FP", "FN", "TN"):
        tab.add_column(col, justify="left" if col == "detector" else "right")
    for name, m in _rows(report):
        c = m["confusion"]
        ap = "-" if m["average_precision"] is None else f"{m['average_precision']:.3f}"
        tab.add_row(
            name,
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            ap,
            *(str(c[k]) for k in ("tp", "fp", "fn", "tn")),
            style="bold" if name == "fused" else None,
        )
    console.print(tab)
