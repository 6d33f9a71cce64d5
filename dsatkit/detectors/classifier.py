"""The exemplar classifier: feedback-turn embeddings -> taxonomy category (or neutral).

Trained from labelled feedback turns (the shipped `data/exemplars.csv`, or a user's own file through
`dsatkit detectors fit`). Two methods over L2-normalised embeddings: multinomial logistic regression
(default) and cosine kNN. A fitted classifier is a directory holding `detector.json` (model name,
classes, method, counts) and `classifier.npz` (weights and the exemplar embeddings); no pickle, so a
detector directory is safe to share. The exemplar embeddings are always kept: the revision signal uses
the non-DSAT ones to recognise generic turns ("continue", "thanks") whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from dsatkit.detectors import directory
from dsatkit.errors import ConfigError, InputError, first_line
from dsatkit.tables import READERS, read_table
from dsatkit.taxonomy import POLARITY

NEUTRAL = "neutral"
# Coarse labels a user may give instead of a category, and the category they stand for in DETECTIONS.
COARSE_LABELS: dict[str, str] = {"dsat": "negative_feedback", "sat": "acknowledgment", NEUTRAL: NEUTRAL}
FORMAT_VERSION = 1
ARRAYS = "classifier.npz"
METHODS = ("logreg", "knn")
SHORT_WORDS, SHORT_CHARS = 4, 25  # a "short" exemplar: a generic turn, not a request with a topic


def class_polarity(cls: str) -> str:
    """dsat / sat / neutral of a class name (a taxonomy category or a coarse label)."""
    if cls in POLARITY:
        return POLARITY[cls]
    if cls in COARSE_LABELS:
        return cls
    raise KeyError(cls)


def default_exemplars() -> pl.DataFrame:
    """The shipped exemplar set: columns text, category, language."""
    with resources.files("dsatkit.detectors").joinpath("data/exemplars.csv").open("rb") as f:
        return pl.read_csv(f, schema_overrides={"text": pl.String, "category": pl.String})


def default_refusals() -> pl.Series:
    """Openings of assistant refusals, used to recognise a refused request."""
    with resources.files("dsatkit.detectors").joinpath("data/refusals.csv").open("rb") as f:
        return pl.read_csv(f)["text"]


def read_labels(path: str | Path) -> pl.DataFrame:
    """Read a labelled feedback-turn file into (text, category) rows.

    Accepted: parquet / jsonl / json / csv with a text column (`text` or `feedback`) and a `category`
    (a taxonomy category or `neutral`) and/or a `label` (dsat / sat / neutral). Rows whose text is
    empty are an error, not silently dropped.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(
            f"labels file not found: {p}", "pass a parquet/jsonl/csv file of labelled feedback turns"
        )
    if p.suffix not in READERS:
        raise InputError(f"{p}: unsupported labels file type {p.suffix!r}",
                         "use .parquet, .jsonl, .json, .csv or .tsv")
    try:
        df = read_table(p)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(f"{p}: cannot read labels: {first_line(e)}") from None
    text_col = next((c for c in ("text", "feedback") if c in df.columns), None)
    if text_col is None or not ({"category", "label"} & set(df.columns)):
        raise InputError(
            f"{p}: needs a 'text' (or 'feedback') column and a 'category' or 'label' column; has {df.columns}",
            "see docs/detectors.md for the labels schema",
        )
    cat = (
        pl.col("category").cast(pl.String).str.strip_chars().str.to_lowercase()
        if "category" in df.columns
        else pl.lit(None, pl.String)
    )
    lab = (
        pl.col("label").cast(pl.String).str.strip_chars().str.to_lowercase()
        if "label" in df.columns
        else pl.lit(None, pl.String)
    )
    out = df.select(text=pl.col(text_col).cast(pl.String), category=pl.coalesce(cat, lab))
    bad_text = out.with_row_index("row").filter(
        pl.col("text").is_null() | (pl.col("text").str.strip_chars() == "")
    )
    if bad_text.height:
        raise InputError(
            f"{p}: row {bad_text['row'][0]} has an empty {text_col!r} ({bad_text.height} such rows)"
        )
    known = set(POLARITY) | set(COARSE_LABELS)
    bad = out.with_row_index("row").filter(
        ~pl.col("category").is_in(list(known)) | pl.col("category").is_null()
    )
    if bad.height:
        raise InputError(
            f"{p}: row {bad['row'][0]} has unknown category/label {bad['category'][0]!r} ({bad.height} such rows)",
            f"use one of: {', '.join(sorted(known))}",
        )
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ExemplarClassifier:
    """Category probabilities for normalised embeddings; see the module docstring."""

    model: str
    method: str
    classes: list[str]
    exemplars: np.ndarray  # (n, d) float32, normalised
    exemplar_labels: np.ndarray  # (n,) int index into classes
    coef: np.ndarray | None = None  # (c, d) for logreg
    intercept: np.ndarray | None = None  # (c,)
    k: int = 7
    info: dict = field(default_factory=dict)
    short: np.ndarray | None = None  # (n,) bool: exemplar is a short, topic-free turn ("continue", "thanks")

    @property
    def polarities(self) -> np.ndarray:
        return np.array([class_polarity(c) for c in self.classes])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, len(classes)) probabilities."""
        if len(self.classes) == 1:
            return np.ones((x.shape[0], 1), dtype=np.float32)
        if self.method == "logreg":
            z = x @ self.coef.T + self.intercept
            if z.shape[1] == 1:  # scikit-learn's binary form: one logit for classes[1]
                p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
                return np.stack([1 - p1, p1], axis=1)
            return _softmax(z)
        # kNN: similarity-weighted votes of the k nearest exemplars (cosine = dot on unit vectors)
        sims = x @ self.exemplars.T
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sims, idx, axis=1) / 0.1)  # sharp: the nearest dominate
        votes = np.zeros((x.shape[0], len(self.classes)))
        np.add.at(votes, (np.repeat(np.arange(x.shape[0]), k), self.exemplar_labels[idx].ravel()), w.ravel())
        return votes / votes.sum(axis=1, keepdims=True)

    def generic_exemplars(self) -> np.ndarray:
        """Embeddings of the short non-DSAT exemplars ("continue", "thanks", "ok").

        Only short ones: a substantive neutral exemplar ("write a haiku about autumn") would otherwise
        veto every revision of a request that happens to resemble it.
        """
        keep = self.polarities[self.exemplar_labels] != "dsat"
        if self.short is not None:
            keep &= self.short
        return self.exemplars[keep]

    # persistence ------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        arrays = {"exemplars": self.exemplars.astype(np.float32), "exemplar_labels": self.exemplar_labels}
        if self.coef is not None:
            arrays |= {"coef": self.coef, "intercept": self.intercept}
        if self.short is not None:
            arrays["short"] = self.short
        meta = {"format": FORMAT_VERSION, "model": self.model, "method": self.method, "classes": self.classes,
                "k": self.k, **self.info}
        return directory.save(out_dir, ARRAYS, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ExemplarClassifier:
        def build(meta: dict, arrays) -> ExemplarClassifier:
            info = {k: v for k, v in meta.items() if k not in ("format", "model", "method", "classes", "k")}
            return cls(
                model=meta["model"],
                method=meta["method"],
                classes=list(meta["classes"]),
                exemplars=arrays["exemplars"],
                exemplar_labels=arrays["exemplar_labels"],
                coef=arrays.get("coef"),
                intercept=arrays.get("intercept"),
                k=int(meta.get("k", 7)),
                info=info,
                short=arrays.get("short"),
            )

        return directory.load(path, ARRAYS, "detector", build)


def _logreg(c: float):
    from sklearn.linear_model import LogisticRegression

    # balanced: real label files are dominated by neutral turns; C is loose because normalised
    # MiniLM embeddings of short turns sit close together
    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000)


def fit(
    texts: pl.Series,
    categories: pl.Series,
    embed: Callable[[pl.Series], np.ndarray],
    model: str,
    method: str = "logreg",
    k: int = 7,
    c: float = 10.0,
) -> ExemplarClassifier:
    """Fit a classifier on labelled feedback turns; `embed` maps texts to normalised embeddings."""
    if method not in METHODS:
        raise ConfigError(f"unknown classifier method {method!r}", f"use one of: {', '.join(METHODS)}")
    if len(texts) == 0:
        raise InputError("no labelled turns to fit on")
    classes = sorted(categories.unique().to_list())
    y = categories.replace_strict({c_: i for i, c_ in enumerate(classes)}, return_dtype=pl.Int64).to_numpy()
    x = embed(texts).astype(np.float32)
    short = (
        (texts.str.split(" ").list.len() <= SHORT_WORDS) & (texts.str.len_chars() <= SHORT_CHARS)
    ).to_numpy()
    clf = ExemplarClassifier(
        model=model, method=method, classes=classes, exemplars=x, exemplar_labels=y, k=k, short=short
    )
    if method == "logreg" and len(classes) > 1:
        lr = _logreg(c).fit(x, y)
        clf.coef, clf.intercept = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
    counts = categories.value_counts().sort("category" if categories.name == "category" else categories.name)
    clf.info = {
        "n_examples": len(texts),
        "class_counts": dict(zip(*counts.to_dict(as_series=False).values())),
    }
    return clf


def cross_validate(clf: ExemplarClassifier, folds: int = 5, c: float = 10.0) -> dict | None:
    """Stratified k-fold estimate of DSAT-vs-rest precision/recall/F1 and category accuracy.

    Refits on the stored exemplar embeddings (nothing is re-encoded). None when a class has fewer
    than two examples, so no split could hold it on both sides.
    """
    from sklearn.metrics import precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    y = clf.exemplar_labels
    folds = min(folds, int(np.bincount(y).min()))
    if folds < 2 or len(clf.classes) < 2:
        return None
    pol = clf.polarities
    pred, dsat = np.empty_like(y), np.empty(len(y), dtype=bool)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(clf.exemplars, y):
        part = ExemplarClassifier(clf.model, clf.method, clf.classes, clf.exemplars[train], y[train], k=clf.k)
        if clf.method == "logreg":
            lr = _logreg(c).fit(clf.exemplars[train], y[train])
            part.coef, part.intercept = lr.coef_, lr.intercept_
        probs = part.predict_proba(clf.exemplars[test])
        pred[test] = probs.argmax(axis=1)
        dsat[test] = probs[:, pol == "dsat"].sum(axis=1) >= 0.5  # the detector's own decision rule
    p, r, f, _ = precision_recall_fscore_support(pol[y] == "dsat", dsat, average="binary", zero_division=0)
    return {
        "folds": folds,
        "dsat_precision": float(p),
        "dsat_recall": float(r),
        "dsat_f1": float(f),
        "category_accuracy": float((pred == y).mean()),
    }
