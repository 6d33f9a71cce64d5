"""Tune the embedding detector's constants on bench/data/calibration.csv (never on test fixtures).

    python bench/calibrate.py

Prints F1 at 0.5 and average precision for the exemplar classifier variants and a small grid of the
revision constants; the chosen values live at the top of dsatkit/detectors/embedding.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, f1_score

from dsatkit.detectors import embedding as emb
from dsatkit.detectors.classifier import default_exemplars, fit

CAL = Path(__file__).parent / "data" / "calibration.csv"


def main() -> None:
    cal = pl.read_csv(CAL)
    y = (cal["label"] == "dsat").to_numpy()
    det = emb.EmbeddingDetector().prepare()
    e = det.embedder
    f, r, p = e.embed(cal["feedback"]), e.embed(cal["request"]), e.embed(cal["response"].str.slice(0, 300))
    sim = (f * r).sum(1)
    refusal = (p @ det._refusals.T).max(1)
    ex = default_exemplars()
    sig = lambda x: 1 / (1 + np.exp(-x))
    for method, c in [("logreg", 1.0), ("logreg", 10.0), ("logreg", 30.0), ("knn", 0)]:
        clf = fit(ex["text"], ex["category"], e.embed, model=e.key, method=method, c=c or 1.0)
        probs = clf.predict_proba(f)
        p_dsat = probs[:, clf.polarities == "dsat"].sum(1)
        g = (f @ clf.generic_exemplars().T).max(1)
        print(
            f"{method} C={c}: exemplar only  F1={f1_score(y, p_dsat >= 0.5):.3f} AP={average_precision_score(y, p_dsat):.3f}"
        )
        best = []
        for t, m, s, shift in itertools.product(
            [0.7, 0.74, 0.78, 0.82], [0.0, 0.05, 0.1, 0.15], [0.03, 0.05], [0.1, 0.2]
        ):
            bar = t - shift * (refusal >= emb.REFUSAL_SIM)
            rev = sig((sim - bar) / s) * sig((sim - g - m) / s)
            score = 1 - (1 - p_dsat) * (1 - rev)
            best.append((f1_score(y, score >= 0.5), average_precision_score(y, score), t, m, s, shift))
        best.sort(reverse=True)
        for row in best[:3]:
            f1, ap, t, m, s, shift = row
            print(f"   F1={f1:.3f} AP={ap:.3f} sim={t:.2f} margin={m:.2f} slope={s:.2f} shift={shift:.1f}")


if __name__ == "__main__":
    main()
