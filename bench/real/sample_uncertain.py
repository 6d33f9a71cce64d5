"""Draw the exchanges of a labelling round aimed at where the learned detector is unsure (rounds 3, 4, 6).

    python bench/real/sample_uncertain.py --reserved ../shared/eval/reserved-sharegpt-ids.txt \
        --n 2400 --double 160 --slices 8 -o /tmp/label-r3
    python -m dsatkit.detectors.train -o /tmp/learned-r3      # the model that has learned round 3
    python bench/real/sample_uncertain.py --reserved ../shared/eval/reserved-sharegpt-ids.txt \
        --model /tmp/learned-r3 --n 4000 --double 160 --low 0.1 --high 0.6 --per-conversation 3 \
        --prefix v --seed 20261206 -o /tmp/label-r4
    python bench/real/sample_uncertain.py --reserved ../shared/eval/reserved-sharegpt-ids.txt \
        --n 3200 --double 160 --low 0.1 --high 0.6 --per-conversation 3 --prefix y --seed 20261208 \
        -o /tmp/label-r6                                      # with the model of rounds 1-5 (commit f3233d1)

Candidates: answered exchanges of the *train* split (the held-out 20% stays as it was) that no earlier
round drew (neither the uniform rounds nor earlier unsure ones). Each is scored by the learned model
(`--model`, default the shipped one: round 3 was drawn with the model shipped at commit 791e3aa,
fitted on rounds 1-2; round 4 with that fit plus round 3); those with a calibrated DSAT score in
[--low, --high] are drawn uniformly, at most `--per-conversation` per original conversation, with a
fixed seed. They are fitted as `fit(extra=...)` rows: never scored, and kept out of the training folds
that score their conversation, so the cross-validated figures and thresholds come from the uniformly
drawn rounds only. Writes the same slice files and items.csv as `sample_for_labelling.py`, plus
scores.csv (the score each item had; keep it away from the annotators).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from sample_for_labelling import write_slices  # beside this script

from dsatkit.corpus import sharegpt
from dsatkit.detectors.learned import SHIPPED_DIR, LearnedModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reserved", required=True)
    ap.add_argument("--n", type=int, default=2400)
    ap.add_argument("--double", type=int, default=160)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--low", type=float, default=0.12)
    ap.add_argument("--high", type=float, default=0.55)
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--per-conversation", type=int, default=1, help="at most this many per original conversation")
    ap.add_argument("--prefix", default="u", help="item id prefix (one per round: u, v, ...)")
    ap.add_argument("--model", type=Path, default=SHIPPED_DIR, help="the learned detector that scores them")
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()
    ex = sharegpt.exchanges(reserved=a.reserved).filter(pl.col("split") == "train")
    for drawn in (sharegpt.LABELS, sharegpt.UNCERTAIN_LABELS, sharegpt.LATER_LABELS):
        if drawn.exists():
            ex = ex.join(sharegpt.read_labels(drawn), on=["conversation_id", "response_turn"], how="anti")
    score = LearnedModel.load(a.model).predict(ex)["score"]
    ex = ex.with_columns(score=score).filter(pl.col("score").is_between(a.low, a.high))
    print(f"{ex.height} candidate exchanges in [{a.low}, {a.high}] from {ex['base_id'].n_unique()} conversations")
    picked = (ex.sample(fraction=1.0, shuffle=True, seed=a.seed)
              .with_columns(k=pl.int_range(pl.len()).over("base_id")).filter(pl.col("k") < a.per_conversation).drop("k")
              .head(a.n))
    picked = picked.with_columns(
        item_id=pl.format(a.prefix + "{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(4)),
        slice=pl.int_range(pl.len()) % a.slices, language=pl.lit(None, pl.String))
    picked = picked.with_columns(second_slice=pl.when(pl.int_range(pl.len()) < a.double)
                                 .then((pl.col("slice") + 1) % a.slices))
    write_slices(picked, a.out, a.slices)
    picked.select("item_id", "score").write_csv(a.out / "scores.csv")


if __name__ == "__main__":
    main()
