"""The learned DSAT detector: features of an exchange -> calibrated P(DSAT), P(SAT) and a category.

Two logistic regressions over `features.featurise`, DSAT-vs-rest and SAT-vs-rest, trained on
exchanges labelled by reading real logs (`dsatkit.corpus`, or a user's own labels through
`dsatkit detectors fit`). Gradient-boosted trees (LightGBM) over the same features read what a linear
model cannot, combinations such as a pasted error after code or "shorter" after a long story; their
logit is blended with the linear DSAT logit. Out-of-fold predictions (folds grouped by conversation)
choose the regularisation and the blend's weight (0: no trees), fit a Platt calibration of P(DSAT),
and pick the stored thresholds: the DSAT one that maximises F1, and a SAT one at least as precise as
DSAT. Multinomial category models (one per polarity) name the DSAT or SAT kind of a verdict.

A model is a directory: `detector.json` (kind, feature spec, thresholds, calibration, classes, the
blend, the cross-validated figures) and `model.npz` (sparse weights: hashed features that training
never saw keep weight zero and are not stored; the trees in LightGBM's own text format, and the columns
they read). No pickle: a detector directory is safe to share.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsatkit.detectors import Detector, directory
from dsatkit.detectors.features import CONTEXT_BITS, CUES_PATH, FeatureSpec, featurise
from dsatkit.errors import ConfigError, InputError
from dsatkit.schema import DETECTIONS, conform
from dsatkit.taxonomy import POLARITY

if TYPE_CHECKING:
    import lightgbm

    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig

KIND = "learned"
FORMAT_VERSION = 2
"""2: with the boosted trees (`Boosted`); a format-1 directory (linear models alone) still loads."""
ARRAYS = "model.npz"
POLARITIES = ("dsat", "sat", "neutral")
C_GRID = (1.0, 2.0, 4.0)
HIDDEN_FOLLOWUPS = 0.3
"""The share of training rows fitted without their followup (see `hide_followups`)."""
MIN_CATEGORY_EXAMPLES = 5
"""A category with fewer labelled examples gets no class of its own in the category model."""
SHIPPED_DIR = Path(str(resources.files("dsatkit.detectors") / "data" / "learned"))
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Weights of the trees' logit against the linear one that cross-validation chooses from."""
BOOST_ROUNDS = 600
BOOST_PARAMS = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20,
    "feature_fraction": 0.3, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "deterministic": True, "force_col_wise": True, "num_threads": 2, "verbose": -1,
}
"""LightGBM's settings. A fixed thread count keeps a fit byte-for-byte reproducible on any machine."""
BOOST_MIN_ROWS = 8
"""The trees read only the feature columns that at least this many training rows use (of ~650k hashed
columns, ~180k on the shipped corpus): rarer ones cannot make a split worth keeping."""


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class Linear:
    """A linear model over the feature matrix: classes, sparse weights, intercepts. Two classes are
    kept in scikit-learn's binary form (one row of weights: the logit of classes[1])."""

    classes: list[str]  # "False"/"True" for a binary target
    coef: sp.csr_matrix  # (classes, width), or (1, width) for two classes
    intercept: np.ndarray

    def proba(self, x: sp.csr_matrix) -> np.ndarray:
        if len(self.classes) == 1:
            return np.ones((x.shape[0], 1))
        z = np.asarray((x @ self.coef.T).todense()) + self.intercept
        if len(self.classes) == 2 and z.shape[1] == 1:
            p1 = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        return _softmax(z)


@dataclass
class Boosted:
    """Gradient-boosted trees over the feature columns `columns` (ascending); `logit` is their raw score."""

    columns: np.ndarray
    booster: lightgbm.Booster

    def logit(self, x: sp.csr_matrix) -> np.ndarray:
        return self.booster.predict(x[:, self.columns], raw_score=True)

    @classmethod
    def fit(cls, x: sp.csr_matrix, y: np.ndarray, weight: np.ndarray, columns: np.ndarray, seed: int) -> Boosted:
        lightgbm = _lightgbm()
        data = lightgbm.Dataset(x[:, columns], y.astype(float), weight=weight, free_raw_data=True)
        booster = lightgbm.train({**BOOST_PARAMS, "seed": seed}, data, num_boost_round=BOOST_ROUNDS)
        return cls(columns, booster)

    def arrays(self) -> dict[str, np.ndarray]:
        text = self.booster.model_to_string().encode()
        return {"boost_columns": self.columns.astype(np.int32), "boost_model": np.frombuffer(text, np.uint8)}

    @classmethod
    def from_arrays(cls, arrays) -> Boosted:
        lightgbm = _lightgbm()
        try:
            booster = lightgbm.Booster(model_str=arrays["boost_model"].tobytes().decode())
        except lightgbm.basic.LightGBMError as e:
            raise ValueError(f"trees: {str(e).splitlines()[0]}") from None  # the loader's one-line error
        return cls(arrays["boost_columns"].astype(np.int64), booster)


def _lightgbm():
    """The lightgbm module; a system without the OpenMP runtime its library links is a one-line error."""
    try:
        import lightgbm
    except OSError as e:  # lib_lightgbm.so needs libgomp.so.1, which slim container images lack
        raise ConfigError(f"cannot load LightGBM for the learned detector's trees ({e})",
                          "install the OpenMP runtime: apt-get install libgomp1 (Debian/Ubuntu)") from None
    return lightgbm


@dataclass
class LearnedModel:
    """See the module docstring. `predict` is the only thing the detector needs."""

    spec: FeatureSpec
    dsat: Linear  # rest / dsat
    sat: Linear | None  # rest / sat (None: no SAT labels to learn from)
    categories: dict[str, Linear]  # polarity -> its category model
    calibration: tuple[float, float]  # Platt: P = sigmoid(a * logit(p_dsat) + b)
    threshold: float
    sat_threshold: float
    info: dict = field(default_factory=dict)
    boost: Boosted | None = None
    blend: float = 0.0  # the weight of `boost`'s logit against the linear DSAT one

    def dsat_logit(self, x: sp.csr_matrix) -> np.ndarray:
        """The uncalibrated DSAT logit: the linear model's, blended with the trees' when there are any."""
        return blend_logits(_logit(self.dsat.proba(x)[:, 1]),
                            self.boost.logit(x) if self.boost is not None else None, self.blend)

    def scores(self, x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated P(DSAT) and the model's P(SAT) of each row of a feature matrix."""
        a, b = self.calibration
        p_dsat = 1 / (1 + np.exp(-(a * self.dsat_logit(x) + b)))
        p_sat = self.sat.proba(x)[:, 1] if self.sat is not None else np.zeros(x.shape[0])
        return p_dsat, p_sat

    def predict(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """score (calibrated P(DSAT)), p_sat, label, polarity and category per exchange, in order."""
        x = featurise(exchanges, self.spec)
        p_dsat, p_sat = self.scores(x)
        label = p_dsat >= self.threshold
        polarity = np.where(label, "dsat", np.where(p_sat >= self.sat_threshold, "sat", "neutral"))
        category = np.full(len(label), None, dtype=object)
        for pol, model in self.categories.items():
            rows = np.flatnonzero(polarity == pol)
            if len(rows):
                category[rows] = np.asarray(model.classes)[model.proba(x[rows]).argmax(axis=1)]
        return pl.DataFrame({"score": p_dsat, "p_sat": p_sat, "label": label, "polarity": polarity,
                             "category": pl.Series(category.tolist(), dtype=pl.String)})

    def describe(self) -> str:
        """One line: what the model was trained on and its cross-validated figures."""
        cv, n = self.info["cross_validation"], self.info["trained_on"]
        d, s = cv["dsat"], cv.get("sat") or {}
        sat = f"; SAT at {self.sat_threshold:.2f}: P {s['precision']:.3f} R {s['recall']:.3f}" if s else "; no SAT model"
        trees = f", trees' weight {self.blend}" if self.boost is not None else ", no trees"
        return (f"fitted on {n['rows']} exchanges {n['labels']}; {cv['folds']}-fold CV grouped by conversation "
                f"(C={cv['C']}{trees}): DSAT AP {cv['dsat_average_precision']:.3f}, at threshold "
                f"{self.threshold:.2f} P {d['precision']:.3f} R {d['recall']:.3f} F1 {d['f1']:.3f}{sat}")

    # persistence ------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {}
        meta_models = {}
        named = {"dsat": self.dsat, **({"sat": self.sat} if self.sat else {}),
                 **{f"category_{k}": v for k, v in self.categories.items()}}
        for name, model in named.items():
            coo = model.coef.tocoo()
            arrays |= {f"{name}_row": coo.row.astype(np.int16), f"{name}_col": coo.col.astype(np.int32),
                       f"{name}_val": coo.data.astype(np.float32), f"{name}_intercept": model.intercept.astype(np.float64)}
            meta_models[name] = model.classes
        if self.boost is not None:
            arrays |= self.boost.arrays()
        meta = {
            "kind": KIND,
            "format": FORMAT_VERSION,
            "features": dataclasses.asdict(self.spec),
            "models": meta_models,
            "calibration": list(self.calibration),
            "threshold": self.threshold,
            "sat_threshold": self.sat_threshold,
            "blend": self.blend,
            **self.info,
        }
        return directory.save(out_dir, ARRAYS, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        def build(meta: dict, arrays) -> LearnedModel:
            if meta.get("kind") != KIND or meta.get("format") not in (1, FORMAT_VERSION):
                raise ValueError(f"kind {meta.get('kind')!r} format {meta.get('format')!r}")
            spec = FeatureSpec(**meta["features"])
            models = {}
            for name, classes in meta["models"].items():
                rows = 1 if len(classes) == 2 else len(classes)
                coef = sp.csr_matrix((arrays[f"{name}_val"], (arrays[f"{name}_row"], arrays[f"{name}_col"])),
                                     shape=(rows, spec.width))
                models[name] = Linear(list(classes), coef, arrays[f"{name}_intercept"])
            known = {"kind", "format", "features", "models", "calibration", "threshold", "sat_threshold", "blend"}
            boost = Boosted.from_arrays(arrays) if "boost_model" in arrays else None
            return cls(
                spec=spec,
                dsat=models.pop("dsat"),
                sat=models.pop("sat", None),
                categories={k.removeprefix("category_"): v for k, v in models.items()},
                calibration=tuple(meta["calibration"]),
                threshold=float(meta["threshold"]),
                sat_threshold=float(meta["sat_threshold"]),
                info={k: v for k, v in meta.items() if k not in known},
                boost=boost,
                blend=float(meta.get("blend", 0.0)),
            )

        return directory.load(path, ARRAYS, "learned detector", build)


def blend_logits(linear: np.ndarray, boosted: np.ndarray | None, weight: float) -> np.ndarray:
    """(1 - weight) * linear + weight * boosted: the DSAT logit of a blend (the linear one alone without trees)."""
    return linear if boosted is None or weight == 0 else (1 - weight) * linear + weight * boosted


def cues_version() -> str:
    """md5 of the structure cue table, stored with a model (a changed table means a stale model)."""
    return hashlib.md5(CUES_PATH.read_bytes()).hexdigest()[:12]


# fitting ----------------------------------------------------------------------------------------
def _fit_linear(x: sp.csr_matrix, y: np.ndarray, c: float, weight: np.ndarray | None,
                scale: np.ndarray) -> Linear:
    """Logistic regression on column-scaled features; the scale is folded back into the weights.

    Only the columns some row uses take part (a hashed column no row uses keeps weight zero under L2
    anyway): the solver's cost per step grows with the columns, and most hashed ones are empty."""
    from sklearn.linear_model import LogisticRegression

    used = np.unique(x.indices)
    lr = LogisticRegression(C=c, max_iter=1000)
    lr.fit(x[:, used] @ sp.diags(scale[used]), y, sample_weight=weight)
    coef = np.zeros((lr.coef_.shape[0], x.shape[1]))
    coef[:, used] = lr.coef_ * scale[used][None, :]
    return Linear([str(c_) for c_ in lr.classes_], sp.csr_matrix(coef), lr.intercept_.copy())


def _column_scale(x: sp.csr_matrix, spec: FeatureSpec) -> np.ndarray:
    """1 for the (l2-normalised) text columns; 1/std for the dense structure columns."""
    scale = np.ones(x.shape[1])
    n_dense = len(spec.dense_names)
    dense = x[:, -n_dense:].toarray()
    std = dense.std(axis=0)
    scale[-n_dense:] = np.where(std > 1e-6, 1 / np.maximum(std, 1e-6), 1.0) * 0.3
    return scale


def best_threshold(y: np.ndarray, score: np.ndarray) -> tuple[float, dict]:
    """The threshold (0.05..0.95 by 0.01) with the best F1 of `score >= t` against `y`, and its figures."""
    best = (-1.0, 0.5, {})
    for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
        m = binary_metrics(y, score >= t)
        if m["f1"] > best[0]:
            best = (m["f1"], float(t), m)
    return best[1], best[2]


def binary_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """precision, recall, F1 of a boolean prediction against boolean truth."""
    tp = float(np.sum(pred & y))
    p = tp / max(float(np.sum(pred)), 1.0)
    r = tp / max(float(np.sum(y)), 1.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _sat_threshold(y_sat: np.ndarray, p_sat: np.ndarray, not_dsat: np.ndarray, floor: float) -> tuple[float, dict]:
    """The SAT threshold with the best SAT F1 among those at least `floor` precise (else the most precise)."""
    best, fallback = None, (-1.0, 1.0, {})
    for t in np.round(np.arange(0.10, 0.96, 0.01), 2):
        pred = not_dsat & (p_sat >= t)
        if pred.sum() < 3:
            continue
        m = binary_metrics(y_sat, pred)
        if m["precision"] >= floor and (best is None or m["f1"] > best[2]["f1"]):
            best = (m["f1"], float(t), m)
        if m["precision"] > fallback[0]:
            fallback = (m["precision"], float(t), m)
    chosen = best or fallback
    return chosen[1], chosen[2]


def _platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4).fit(logit[:, None], y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def check_labelled(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a labelled exchanges frame: feedback, label (dsat/sat/neutral), optional request, response,
    category, group, weight (a null weight counts 1). Returns it with the optional columns filled."""
    missing = {"feedback", "label"} - set(frame.columns)
    if missing:
        raise InputError(f"labelled exchanges need columns feedback and label; missing {sorted(missing)}",
                         "see docs/detectors.md for the labels schema")
    frame = frame.with_columns(pl.col("label").cast(pl.String).str.strip_chars().str.to_lowercase())
    bad = frame.filter(~pl.col("label").is_in(list(POLARITIES)))
    if bad.height:
        raise InputError(f"unknown label {bad['label'][0]!r} ({bad.height} rows)", "use dsat, sat or neutral")
    fills = {
        "request": pl.lit(None, pl.String), "response": pl.lit(None, pl.String), "category": pl.lit(None, pl.String),
        "group": pl.int_range(pl.len()).cast(pl.String), "weight": pl.lit(1.0),
    }
    return frame.with_columns(**{k: v for k, v in fills.items() if k not in frame.columns}).with_columns(
        pl.col("category").cast(pl.String), pl.col("weight").cast(pl.Float64).fill_null(1.0), pl.col("group").cast(pl.String))


def read_labelled(path: str | Path) -> pl.DataFrame:
    """A labelled-exchanges file in the `eval-detectors` format (`dsatkit.evaluate.load_labelled`: a flat
    table with request/context, response, feedback, label, optional category, or labelled logs) as the
    frame `fit` takes, grouped by conversation."""
    from dsatkit.evaluate import load_labelled

    frame = load_labelled([path])
    return frame.filter(pl.col("feedback").is_not_null()).select(
        "exchange_id", "response_turn", "request", "response", "feedback", "followup",
        label="gold_label", category="gold_category", group="conversation_id")


def hide_followups(labelled: pl.DataFrame, share: float, seed: int) -> pl.DataFrame:
    """`labelled` with the followup of a seeded random `share` of its rows set to null: logs often end
    at the feedback, and a model that only ever saw followups would lean on them."""
    if "followup" not in labelled.columns or share <= 0:
        return labelled
    hidden = np.random.default_rng(seed).random(labelled.height) < share
    return labelled.with_columns(followup=pl.when(pl.Series(hidden)).then(None).otherwise(pl.col("followup")))


def fit_splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold. The scored rows are the first `len(y)` of `groups` (one group per
    row, e.g. its conversation), split by StratifiedGroupKFold on `y`; the rows after them (`extra`) join
    every training fold except those whose test rows hold their group."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(y)
    extra = np.arange(n, len(groups))
    return [(np.concatenate([train, extra[~np.isin(groups[extra], groups[test])]]), test) for train, test in
            StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), y, groups[:n])]


def fit(labelled: pl.DataFrame, folds: int = 5, seed: int = 0, c_grid: tuple[float, ...] = C_GRID,
        spec: FeatureSpec | None = None, progress=None, hidden_followups: float = HIDDEN_FOLLOWUPS,
        extra: pl.DataFrame | None = None, trees: bool = True) -> LearnedModel:
    """Fit a LearnedModel on labelled exchanges (see `check_labelled`); deterministic for a seed.

    `folds` grouped by `group` (a conversation) give the out-of-fold scores that choose C, the blend's
    weight of the boosted trees (`trees=False`: linear models alone), the calibration and the
    thresholds; the final model is fitted on every row. A `hidden_followups` share
    of the rows is fitted without its followup (`hide_followups`). `extra` rows (e.g. short labelled
    turns in languages the logs lack) join every training fold and the final fit but are never scored:
    the calibration, thresholds and figures come from `labelled` alone. An `extra` row with the `group` of
    a scored row (another exchange of the same conversation) stays out of the training folds that score
    that group, as a scored row would."""
    from sklearn.metrics import average_precision_score

    labelled = check_labelled(labelled)
    n_scored = labelled.height
    if extra is not None:
        if "group" not in extra.columns:  # each its own group, apart from the scored rows' numbered ones
            extra = extra.with_columns(group=pl.format("extra:{}", pl.int_range(pl.len())))
        labelled = pl.concat([labelled, check_labelled(extra)], how="diagonal_relaxed")
    unknown = set(labelled["category"].drop_nulls()) - set(POLARITY)
    if unknown:
        raise InputError(f"unknown category {min(unknown)!r}", f"use one of: {', '.join(sorted(POLARITY))}")
    spec = spec or FeatureSpec(context_bits=CONTEXT_BITS, cues_version=cues_version())
    labelled = hide_followups(labelled, hidden_followups, seed)
    x = featurise(labelled, spec)
    y_all = labelled["label"].to_numpy()
    y = y_all[:n_scored]  # the scored rows come first; `extra` rows follow
    is_dsat, is_sat = y == "dsat", y == "sat"
    if is_dsat.sum() < 2 or (~is_dsat).sum() < 2:
        raise InputError("labels need at least 2 dsat rows and 2 other rows to fit a detector")
    w = labelled["weight"].to_numpy()
    all_groups = labelled["group"].to_numpy()
    groups = all_groups[:n_scored]
    scale = _column_scale(x, spec)
    n_folds = min(folds, int(is_dsat.sum()), int((~is_dsat).sum()), len(np.unique(groups)))
    splits = fit_splits(y, all_groups, n_folds, seed)

    def out_of_fold(target_all: np.ndarray, c: float) -> np.ndarray:
        oof = np.zeros(n_scored)
        for train, test in splits:
            oof[test] = _fit_linear(x[train], target_all[train], c, w[train], scale).proba(x[test])[:, 1]
        return oof

    trials = {}
    for c in c_grid:
        oof = out_of_fold(y_all == "dsat", c)
        trials[c] = (float(average_precision_score(is_dsat, oof)), oof)
        if progress:
            progress(f"C={c}: out-of-fold DSAT average precision {trials[c][0]:.3f}")
    c_best = max(trials, key=lambda c: trials[c][0])
    logit = _logit(trials[c_best][1])
    columns = np.flatnonzero(np.bincount(x.indices, minlength=x.shape[1]) >= BOOST_MIN_ROWS)
    blend, blend_trials, boosted = 0.0, {}, None
    if trees and len(columns):
        boosted = np.zeros(n_scored)
        for i, (train, test) in enumerate(splits):
            boosted[test] = Boosted.fit(x[train], y_all[train] == "dsat", w[train], columns, seed).logit(x[test])
            if progress:
                progress(f"boosted trees: fold {i + 1} of {len(splits)}")
        blend_trials = {wt: float(average_precision_score(is_dsat, blend_logits(logit, boosted, wt)))
                        for wt in BLEND_GRID}
        blend = max(BLEND_GRID, key=lambda wt: (blend_trials[wt], -wt))  # a tie keeps fewer trees
        if progress:
            progress("trees' weight: " + ", ".join(f"{wt} AP {ap:.3f}" for wt, ap in blend_trials.items()))
    logit = blend_logits(logit, boosted, blend)
    a, b = _platt(logit, is_dsat)
    p_dsat = 1 / (1 + np.exp(-(a * logit + b)))
    threshold, dsat_cv = best_threshold(is_dsat, p_dsat)
    sat_model, sat_threshold, sat_cv = None, 1.0, {}
    if is_sat.sum() >= n_folds:
        p_sat = out_of_fold(y_all == "sat", c_best)
        sat_threshold, sat_cv = _sat_threshold(is_sat, p_sat, p_dsat < threshold, dsat_cv["precision"])
        sat_model = _fit_linear(x, y_all == "sat", c_best, w, scale)
    categories = {}
    for pol in ("dsat", "sat"):
        rows = labelled.with_row_index("i").filter((pl.col("label") == pol) & pl.col("category").is_not_null())
        counts = rows.group_by("category").len().filter(pl.col("len") >= MIN_CATEGORY_EXAMPLES)
        rows = rows.join(counts.select("category"), on="category", how="semi")
        names = sorted(counts["category"].to_list())
        if len(names) == 1:
            categories[pol] = Linear(names, sp.csr_matrix((1, x.shape[1])), np.zeros(1))
        elif names:
            idx = rows["i"].to_numpy()
            categories[pol] = _fit_linear(x[idx], rows["category"].to_numpy(), c_best, w[idx], scale)
    counts = labelled.head(n_scored)["label"].value_counts().sort("label")
    info = {
        "trained_on": {"rows": n_scored, "labels": dict(counts.iter_rows()), "hidden_followups": hidden_followups},
        "cross_validation": {"folds": n_folds, "grouped_by": "conversation", "seed": seed, "C": c_best,
                             "dsat_average_precision": blend_trials[blend] if blend_trials else trials[c_best][0],
                             "dsat": dsat_cv, "sat": sat_cv,
                             "average_precision_by_C": {str(c): v[0] for c, v in trials.items()},
                             **({"average_precision_by_blend": {str(k): v for k, v in blend_trials.items()}}
                                if blend_trials else {})},
    }
    if extra is not None:
        extra_counts = labelled.tail(len(y_all) - n_scored)["label"].value_counts().sort("label")
        info["trained_on"]["extra"] = {"rows": len(y_all) - n_scored, "labels": dict(extra_counts.iter_rows())}
    boost = Boosted.fit(x, y_all == "dsat", w, columns, seed) if blend else None
    return LearnedModel(spec, _fit_linear(x, y_all == "dsat", c_best, w, scale), sat_model, categories, (a, b),
                        threshold, sat_threshold, info, boost, blend)


# the detector -----------------------------------------------------------------------------------
class LearnedDetector(Detector):
    """DETECTIONS from a LearnedModel: the shipped one, or a directory from `detectors fit`/`distill`.

    Input columns: exchanges.exchange_id, feedback (and the texts its features read). Output: detections."""

    name = KIND

    @classmethod
    def from_config(cls, config: MineConfig, cache: Cache | None = None) -> LearnedDetector:
        """The model of `config.learned.detector_dir` (None: the shipped one)."""
        return cls(config.learned.detector_dir)

    def __init__(self, detector_dir: str | Path | None = None):
        path = Path(detector_dir) if detector_dir is not None else SHIPPED_DIR
        self.model = LearnedModel.load(path)
        digest = hashlib.md5((path / "detector.json").read_bytes()).hexdigest()[:8]
        self.version = f"{FORMAT_VERSION}.0+{'default' if detector_dir is None else ''}{digest}"

    @property
    def threshold(self) -> float:
        """The stored decision threshold on the calibrated score (chosen by cross-validation)."""
        return self.model.threshold

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """One DETECTIONS row per exchange with feedback, in input order (no feedback: no evidence)."""
        rows = exchanges.filter(pl.col("feedback").is_not_null())
        found = self.model.predict(rows) if rows.height else pl.DataFrame(
            schema={"score": pl.Float64, "p_sat": pl.Float64, "label": pl.Boolean, "polarity": pl.String,
                    "category": pl.String})
        out = rows.select("exchange_id").hstack(found).select(
            "exchange_id",
            detector=pl.lit(self.name),
            score="score",
            label="label",
            category="category",
            rationale=pl.when(pl.col("polarity") != "neutral").then(
                pl.format("{} p={}", "polarity", pl.col("score").round(2))),
            detector_version=pl.lit(self.version),
        )
        return conform(out, DETECTIONS)
