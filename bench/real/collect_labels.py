"""Gather a labelling round's annotator files into the committed labels format, and report agreement.

    python bench/real/collect_labels.py /tmp/label-r3/items.csv /tmp/label-r3 --annotator annotator-r3- \
        -o dsatkit/corpus/data/sharegpt_v3_labels_uncertain.csv
    python bench/real/collect_labels.py /tmp/label-r4/items.csv /tmp/label-r4 --annotator annotator-r4- \
        -o dsatkit/corpus/data/sharegpt_v3_labels_uncertain.csv --append

A round that reads exchanges labelled before once more (round 9: the held-out split read twice again, by
two new annotators per item) joins with `--reread`: its readings take the pass numbers after the
highest each exchange has, and the labels of record (pass 1) stay as they were:

    python bench/real/collect_labels.py /tmp/h-items.csv /tmp/label-h --annotator annotator-h- \
        -o dsatkit/corpus/data/sharegpt_v3_labels.csv --reread

In: the round's `items.csv` (from `sample_for_labelling.py` / `sample_uncertain.py`) and one
`labels-K.csv` per slice K (item_id, label, category, confidence, note), written by the annotator of
slice K. Out: conversation_id, response_turn, label, category, confidence, annotator, pass (1: the item's
own slice; 2: the second, independent reading of the doubly labelled subset). Notes are not kept (they
quote the conversations). A missing, repeated or unknown item, or an unknown label, is an error.
Prints the labels' counts and Cohen's kappa of the doubly labelled items.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from sklearn.metrics import cohen_kappa_score

from dsatkit.corpus import sharegpt
from dsatkit.taxonomy import POLARITY

LABELS = ("dsat", "sat", "neutral")


def collect(items_csv: Path, label_dir: Path, annotator: str) -> pl.DataFrame:
    items = pl.read_csv(items_csv, schema_overrides={"response_turn": pl.Int32})
    rows = []
    for s in sorted(items["slice"].unique()):
        got = pl.read_csv(label_dir / f"labels-{s}.csv", schema_overrides={"category": pl.String}, infer_schema=False)
        got = got.select(pl.col("item_id").str.strip_chars(), pl.col("label").str.strip_chars().str.to_lowercase(),
                         pl.col("category").fill_null("").str.strip_chars().str.to_lowercase(),
                         pl.col("confidence").str.strip_chars().str.to_lowercase())
        wanted = items.filter((pl.col("slice") == s) | (pl.col("second_slice") == s))
        if got["item_id"].is_duplicated().any() or set(got["item_id"]) != set(wanted["item_id"]):
            raise SystemExit(f"labels-{s}.csv: items do not match the slice (missing "
                             f"{len(set(wanted['item_id']) - set(got['item_id']))}, extra "
                             f"{len(set(got['item_id']) - set(wanted['item_id']))}, repeated "
                             f"{got['item_id'].is_duplicated().sum()})")
        bad = got.filter(~pl.col("label").is_in(LABELS) | ((pl.col("category") != "")
                                                          & ~pl.col("category").is_in(list(POLARITY))))
        if bad.height:
            raise SystemExit(f"labels-{s}.csv: unknown label or category in {bad.height} rows, e.g. {bad.row(0)}")
        got = got.join(wanted.select("item_id", "conversation_id", "response_turn", "slice"), on="item_id")
        rows.append(got.with_columns(annotator=pl.lit(f"{annotator}{s}"),
                                     **{"pass": pl.when(pl.col("slice") == s).then(1).otherwise(2)}))
    return pl.concat(rows).sort("item_id", "pass")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("items", type=Path)
    ap.add_argument("label_dir", type=Path)
    ap.add_argument("--annotator", required=True, help="annotator name prefix; the slice number follows")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--append", action="store_true", help="add to the labels already in --out (a later round)")
    ap.add_argument("--reread", action="store_true",
                    help="the round read exchanges that --out labels already: add its readings as further passes")
    a = ap.parse_args()
    rows = collect(a.items, a.label_dir, a.annotator)
    # a neutral or sat label has no dsat category; neutral has none at all
    rows = rows.with_columns(category=pl.when(pl.col("label") == "neutral").then(pl.lit("")).otherwise("category"))
    out = rows.select("conversation_id", "response_turn", "label", "category", "confidence", "annotator", "pass")
    key = ["conversation_id", "response_turn"]
    if (a.append or a.reread) and a.out.exists():  # a later round joins the file of the earlier ones
        before = sharegpt.read_labels(a.out)
        known = before.group_by(key).agg(last=pl.col("pass").max())
        if a.reread:
            unknown = out.join(known, on=key, how="anti").height
            if unknown:
                raise SystemExit(f"--reread: {unknown} exchanges have no label in {a.out}")
            out = out.join(known, on=key).with_columns(pl.col("pass") + pl.col("last")).drop("last")
        elif out.join(known, on=key, how="semi").height:
            raise SystemExit(f"{a.out} has labels of this round's exchanges already (a second reading: --reread)")
        out = pl.concat([before, out.with_columns(pl.col("category").fill_null(""))], how="vertical_relaxed")
    out.sort("conversation_id", "response_turn", "pass").write_csv(a.out)
    first = rows.filter(pl.col("pass") == 1)
    print(f"wrote {a.out}: {first.height} items {dict(first.group_by('label').len().iter_rows())}, "
          f"{rows.height - first.height} second readings")
    double = first.join(rows.filter(pl.col("pass") == 2), on="item_id", suffix="_2")
    if double.height:
        k3 = cohen_kappa_score(double["label"], double["label_2"])
        k2 = cohen_kappa_score(double["label"] == "dsat", double["label_2"] == "dsat")
        agree = (double["label"] == double["label_2"]).mean()
        print(f"doubly labelled: {double.height} items; agreement {agree:.3f}; Cohen's kappa {k3:.3f} "
              f"(dsat/sat/neutral), {k2:.3f} (dsat vs not)")


if __name__ == "__main__":
    main()
