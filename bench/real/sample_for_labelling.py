"""Draw the exchanges of ShareGPT V3 that annotators label (how `dsatkit/corpus/labels` was sampled).

    python bench/real/sample_for_labelling.py --reserved ../shared/eval/reserved-sharegpt-ids.txt \
        --n 4000 --double 400 --slices 8 -o /tmp/label

Sampling: at most two exchanges per original conversation; languages (py3langid on the user's turns)
share the sample in proportion to their exchanges, with a floor of min(40, all it has) for every
language with at least 20 exchanges; inside a language the draw is uniform, so the long tail of lengths comes as it is in the logs.
Writes one text file per slice for reading (`slice-K.txt`, texts cut with [...]) and `items.csv`
(item_id, conversation_id, response_turn, slice, second_slice for the doubly labelled subset). Fixed seed.

Round 5 (uniform again, train split only: the held-out split stays as rounds 1-2 drew it):

    python bench/real/sample_for_labelling.py --reserved ../shared/eval/reserved-sharegpt-ids.txt \
        --n 4000 --double 160 --slices 8 --split train --prefix w --seed 20261207 \
        --exclude dsatkit/corpus/data/sharegpt_v3_labels.csv \
        --exclude dsatkit/corpus/data/sharegpt_v3_labels_uncertain.csv -o /tmp/label-r5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from dsatkit import language
from dsatkit.corpus import sharegpt

FLOOR, FLOOR_MIN = 40, 20


def cut(text: str | None, head: int, tail: int) -> str:
    """`text` with its middle replaced by [...] when it is longer than head + tail characters."""
    if text is None:
        return "(none: the conversation part starts with the assistant)"
    text = text.strip()
    return text if len(text) <= head + tail + 20 else f"{text[:head]} [...] {text[-tail:]}"


def write_slices(picked: pl.DataFrame, out: Path, slices: int) -> None:
    """`items.csv` and one `slice-K.txt` per annotator (their items, and the second reading's, in order)."""
    out.mkdir(parents=True, exist_ok=True)
    picked.select("item_id", "conversation_id", "response_turn", "language", "split", "slice", "second_slice") \
        .write_csv(out / "items.csv")
    for s in range(slices):
        mine = picked.filter((pl.col("slice") == s) | (pl.col("second_slice") == s)).sort("item_id")
        blocks = [
            f"=== ITEM {r['item_id']} ===\n[REQUEST]\n{cut(r['request'], 900, 300)}\n\n[ASSISTANT ANSWER]\n"
            f"{cut(r['response'], 700, 500)}\n\n[USER'S NEXT TURN]\n{cut(r['feedback'], 1200, 300)}\n"
            for r in mine.iter_rows(named=True)
        ]
        (out / f"slice-{s}.txt").write_text("\n".join(blocks), encoding="utf-8")
        print(f"slice {s}: {mine.height} items")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reserved", required=True)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--double", type=int, default=400)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="items.csv or labels csv of an earlier round: those exchanges are not drawn again (repeatable)")
    ap.add_argument("--split", choices=("train", "heldout"), help="draw from this split only")
    ap.add_argument("--prefix", default="x", help="item id prefix (one per round)")
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()
    ex = sharegpt.exchanges(reserved=a.reserved)
    for drawn in a.exclude:
        ex = ex.join(pl.read_csv(drawn, columns=["conversation_id", "response_turn"],
                                 schema_overrides={"response_turn": pl.Int32}),
                     on=["conversation_id", "response_turn"], how="anti")
    if a.split:
        ex = ex.filter(pl.col("split") == a.split)
    user_text = ex.select(pl.concat_str(pl.col("feedback").str.slice(0, 400),
                                        pl.col("request").fill_null("").str.slice(0, 400), separator=" "))
    ex = ex.with_columns(language=language.detect(user_text.to_series(), chars=801).fill_null("en"))
    # at most two exchanges per original conversation
    ex = ex.sample(fraction=1.0, shuffle=True, seed=a.seed).with_columns(
        k=pl.int_range(pl.len()).over("base_id")).filter(pl.col("k") < 2).drop("k")
    counts = ex.group_by("language").len().sort("len", descending=True)
    total = counts["len"].sum()
    share = {r["language"]: round(a.n * r["len"] / total) for r in counts.iter_rows(named=True)}
    floor = {r["language"]: min(FLOOR, r["len"]) for r in counts.iter_rows(named=True)
             if r["len"] >= FLOOR_MIN and share[r["language"]] < min(FLOOR, r["len"])}
    scale = (a.n - sum(floor.values())) / sum(q for k, q in share.items() if k not in floor)
    quota = {k: floor.get(k, round(q * scale)) for k, q in share.items()}
    parts = [ex.filter(pl.col("language") == lang).head(q) for lang, q in quota.items() if q]
    picked = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=a.seed + 1)
    picked = picked.with_columns(item_id=pl.format(a.prefix + "{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(4)),
                                 slice=pl.int_range(pl.len()) % a.slices)
    # the doubly labelled subset: the first `double` items, each also read by the next slice's annotator
    picked = picked.with_columns(second_slice=pl.when(pl.int_range(pl.len()) < a.double)
                                 .then((pl.col("slice") + 1) % a.slices))
    write_slices(picked, a.out, a.slices)
    print(picked.group_by("language").len().sort("len", descending=True).head(20))
    print(picked.group_by("split").len())


if __name__ == "__main__":
    main()
