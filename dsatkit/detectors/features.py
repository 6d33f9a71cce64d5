"""Features of the learned DSAT detector: an exchanges frame -> one row of numbers per exchange.

What the user's next turn says, read in the light of what it answers:
- text: hashed character n-grams (2-5, within word bounds: any language, robust to typos and glued
  text) and word uni/bigrams of the feedback's head, cleaned of glued UI text ("Share Prompt",
  "지금 번역하기"), and the same for its first 60 characters alone (where "no, ..." or "thanks, but"
  shows). Hashing is stateless: the vocabulary needs no storing and no pickle.
- structure (a small data table, `data/structure_cues.csv`): "continue"-like turns, the next step or
  part of a series, a pasted error or traceback, complaints that the answer is incomplete, a new
  requirement, a new question; whether the response held code; lengths.
- relations: how close the feedback is to the request (a repeat or rephrase) and to the response (a
  quote of it), as cosine and containment both ways of their word sets; whether a series number moved
  on.
- the lexical cue table's verdict (`LexicalDetector`) as features: its score and category;
- context (`FeatureSpec.context_bits`): hashed word n-grams of the request's opening (what kind of task)
  and of the response's ending (how the answer closed: a question back, an offer, a cut-off);
- what came next: the opening of the assistant's turn after the feedback (`followup`: an assistant
  that answers a repair owns the mistake first, "I apologize for the confusion", "you're right"), as
  hashed word n-grams and an apology cue; absent when the conversation ends at the feedback (the model
  is trained with some followups hidden, so it does not depend on them).

In: a frame with `feedback` and, where known, `request`, `response` and `followup` (nulls allowed). Out: a
`scipy.sparse.csr_matrix` (rows in input order). Every step is a whole-column Polars expression or a
library vectoriser; nothing loops over rows in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from dsatkit.detectors.lexical import LexicalDetector
from dsatkit.taxonomy import POLARITY

CUES_PATH = Path(str(resources.files("dsatkit.detectors") / "data" / "structure_cues.csv"))
FEEDBACK_CHARS = 400
"""The feedback's opening that the text features read (a long turn is mostly pasted material)."""
CONTEXT_CHARS = 600
"""How much of the request, and of the response's opening and ending, the relation features read."""
CHAR_BITS, WORD_BITS, OPENING_BITS, FOLLOWUP_BITS, CONTEXT_BITS = 18, 17, 16, 16, 15
REQUEST_HEAD_CHARS, RESPONSE_END_CHARS = 150, 200
"""What the context n-grams read: the request's opening (what kind of task: a story, code, a list) and
the response's ending (how the answer closed: a question back, an offer, a cut-off)."""
FOLLOWUP_CHARS = 150
"""The opening of the assistant's turn after the feedback that the features read: an assistant that
answers a repair says so first ("I apologize for the confusion", "You're right")."""
OPENING_CHARS = 60
"""The feedback's first characters, hashed again on their own: where a complaint or a thanks shows
("no, ...", "that's not ...", "thanks, but ..."), whatever follows."""


def load_structure_cues(path: str | Path = CUES_PATH) -> dict[str, str]:
    """feature -> one regex (the table's patterns for it, or-ed), in the table's order. Followup cues
    (matched on the assistant's turn after the feedback) are named `followup_<feature>`."""
    cues = pl.read_csv(path, comment_prefix="#")
    return {
        (feature if reads == "feedback" else f"{reads}_{feature}"): "|".join(f"(?:{p})" for p in group["pattern"])
        for (feature, reads), group in cues.group_by("feature", "reads", maintain_order=True)
    }


@dataclass(frozen=True)
class FeatureSpec:
    """How features are made; stored with a model so that fitting and scoring agree."""

    char_bits: int = CHAR_BITS
    word_bits: int = WORD_BITS
    opening_bits: int = OPENING_BITS
    followup_bits: int = FOLLOWUP_BITS
    feedback_chars: int = FEEDBACK_CHARS
    opening_chars: int = OPENING_CHARS
    cues_version: str = ""
    context_bits: int = 0
    """Hashed word n-grams of the request's opening and the response's ending (0: none, as in models
    fitted before they existed; `fit` uses CONTEXT_BITS)."""

    @cached_property
    def cues(self) -> dict[str, str]:
        return load_structure_cues()

    @cached_property
    def char_vectoriser(self) -> HashingVectorizer:
        return HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=2**self.char_bits,
                                 alternate_sign=False, norm="l2", lowercase=False)

    @cached_property
    def word_vectoriser(self) -> HashingVectorizer:
        return HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=2**self.word_bits,
                                 alternate_sign=False, norm="l2", lowercase=False, token_pattern=r"(?u)\b\w+\b")

    @cached_property
    def opening_vectorisers(self) -> tuple[HashingVectorizer, HashingVectorizer]:
        n = 2**self.opening_bits
        return (HashingVectorizer(analyzer="char_wb", ngram_range=(1, 4), n_features=n, alternate_sign=False,
                                  norm="l2", lowercase=False),
                HashingVectorizer(analyzer="word", ngram_range=(1, 3), n_features=n, alternate_sign=False,
                                  norm="l2", lowercase=False, token_pattern=r"(?u)\b\w+\b"))

    @cached_property
    def followup_vectoriser(self) -> HashingVectorizer:
        return HashingVectorizer(analyzer="word", ngram_range=(1, 3), n_features=2**self.followup_bits,
                                 alternate_sign=False, norm="l2", lowercase=False, token_pattern=r"(?u)\b\w+\b")

    @cached_property
    def context_vectoriser(self) -> HashingVectorizer:
        return HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=2**self.context_bits,
                                 alternate_sign=False, norm="l2", lowercase=False, token_pattern=r"(?u)\b\w+\b")

    @cached_property
    def similarity_vectoriser(self) -> HashingVectorizer:
        """Sets of words (binary, unnormalised), for the feedback's closeness to the request and response
        (cheap: a repeat or a quote shares words; character n-grams cost 6x more here)."""
        return HashingVectorizer(analyzer="word", n_features=2**18, alternate_sign=False, norm=None, binary=True,
                                 lowercase=False, token_pattern=r"(?u)\b\w+\b")

    @cached_property
    def lexical(self) -> LexicalDetector:
        return LexicalDetector()

    @property
    def dense_names(self) -> list[str]:
        cue_names = [f"cue_{c}" for c in self.cues if c != "ui_suffix"]
        return [*cue_names, *RELATIONS, *LENGTHS, *LEXICAL]

    @property
    def width(self) -> int:
        return (2**self.char_bits + 2**self.word_bits + 2 * 2**self.opening_bits + 2**self.followup_bits
                + (2 * 2**self.context_bits if self.context_bits else 0) + len(self.dense_names))


RELATIONS = ("sim_request", "sim_response_head", "sim_response_tail", "feedback_in_request", "request_in_feedback",
             "feedback_in_response", "repeats_request", "series_moves_on", "log_response_turn", "has_followup",
             "response_has_code", "error_after_code", "response_cut")
LENGTHS = ("log_feedback_chars", "log_request_chars", "log_response_chars", "feedback_lines", "ui_suffix",
           "feedback_is_long", "ends_with_question")
_LEX_CATEGORIES = tuple(sorted(POLARITY))
LEXICAL = ("lexical_score", "lexical_dsat", "lexical_sat", *(f"lexical_{c}" for c in _LEX_CATEGORIES))


def clean(text: pl.Expr, cues: dict[str, str]) -> pl.Expr:
    """A user turn without the UI text glued to its end, lower-cased, whitespace runs collapsed."""
    return (
        text.fill_null("").str.to_lowercase()
        .str.replace(f"(?:{cues['ui_suffix']})\\s*$", "")
        .str.replace_all(r"\s+", " ").str.strip_chars()
    )


def _overlap(a: sp.csr_matrix, b: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise cosine, share of a's words in b, share of b's words in a, of two binary word-set matrices."""
    shared = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    na, nb = np.diff(a.indptr).astype(float), np.diff(b.indptr).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.nan_to_num(shared / np.sqrt(na * nb)), np.nan_to_num(shared / na), np.nan_to_num(shared / nb))


def series_number(text: pl.Expr, series: str) -> pl.Expr:
    """The number of the first step, part, chapter, ... that `text` names (the `series` cue's match):
    "step 10" -> 10; null when it names none or without a number ("the next part")."""
    return text.str.extract(f"({series})", 1).str.extract(r"(\d+)", 1).cast(pl.Int64, strict=False)


def featurise(exchanges: pl.DataFrame, spec: FeatureSpec) -> sp.csr_matrix:
    """The feature matrix of `exchanges` (see the module docstring); one row per input row."""
    cols = exchanges.columns
    text = {c: (pl.col(c) if c in cols else pl.lit(None, pl.String)).cast(pl.String) for c in
            ("feedback", "request", "response", "followup")}
    cues = spec.cues
    fb_raw = text["feedback"].fill_null("")
    base = exchanges.select(
        fb=clean(fb_raw.str.slice(0, 4000), cues),
        req=clean(text["request"].str.slice(0, CONTEXT_CHARS), cues),
        resp_head=text["response"].fill_null("").str.slice(0, CONTEXT_CHARS).str.to_lowercase(),
        resp_tail=text["response"].fill_null("").str.slice(-CONTEXT_CHARS).str.to_lowercase(),
        fb_chars=fb_raw.str.len_chars(),
        turn=(pl.col("response_turn") if "response_turn" in cols else pl.lit(0)).fill_null(0).cast(pl.Float64),
        req_chars=text["request"].fill_null("").str.len_chars(),
        resp_chars=text["response"].fill_null("").str.len_chars(),
        fb_lines=fb_raw.str.count_matches("\n"),
        ui=fb_raw.str.to_lowercase().str.contains(f"(?:{cues['ui_suffix']})\\s*$"),
        resp_code=text["response"].fill_null("").str.contains(r"```|\n(?: {4}|\t)\S"),
        resp_cut=~text["response"].fill_null("").str.strip_chars_end().str.contains(r"[.!?。！？:)\]}>\"'`*]$"),
        fol=text["followup"].str.slice(0, FOLLOWUP_CHARS).str.to_lowercase(),
    )
    fb = pl.col("fb")
    head = fb.str.slice(0, spec.feedback_chars)
    cue_cols = {f"cue_{name}": head.str.contains(rx).cast(pl.Float32) for name, rx in cues.items()
                if name not in ("ui_suffix", "error") and not name.startswith("followup_")}
    cue_cols |= {f"cue_{name}": pl.col("fol").str.contains(rx).fill_null(False).cast(pl.Float32)
                 for name, rx in cues.items() if name.startswith("followup_")}
    cue_cols["cue_error"] = fb.str.slice(0, 3000).str.count_matches(cues["error"]).clip(0, 5).cast(pl.Float32)
    fb_num, req_num = (series_number(t, cues["series"]) for t in (head, pl.col("req")))
    frame = base.with_columns(head=head, **cue_cols).with_columns(
        series_moves_on=((fb_num > req_num) & (fb_num <= req_num + 3)).fill_null(False).cast(pl.Float32),
        req_head=pl.col("req").fill_null("").str.slice(0, REQUEST_HEAD_CHARS),
        resp_end=pl.col("resp_tail").str.slice(-RESPONSE_END_CHARS),
        repeats_request=((pl.col("req").str.len_chars() >= 12)
                         & head.str.starts_with(pl.col("req").str.slice(0, 200))).cast(pl.Float32),
        response_has_code=pl.col("resp_code").cast(pl.Float32),
        error_after_code=(pl.col("resp_code") & (pl.col("cue_error") > 0)).cast(pl.Float32),
        response_cut=pl.col("resp_cut").cast(pl.Float32),
        log_feedback_chars=(pl.col("fb_chars") + 1).log() / math.log(10),
        log_request_chars=(pl.col("req_chars") + 1).log() / math.log(10),
        log_response_chars=(pl.col("resp_chars") + 1).log() / math.log(10),
        feedback_lines=(pl.col("fb_lines") + 1).log() / math.log(10),
        ui_suffix=pl.col("ui").cast(pl.Float32),
        feedback_is_long=(pl.col("fb_chars") > 1000).cast(pl.Float32),
        ends_with_question=head.str.contains(r"[?？]$").cast(pl.Float32),
        log_response_turn=(pl.col("turn") + 1).log() / math.log(10),
        has_followup=pl.col("fol").is_not_null().cast(pl.Float32),
    )
    heads = frame["head"].to_list()
    chars = spec.char_vectoriser.transform(heads)
    word_grams = spec.word_vectoriser.transform(heads)
    openings = frame["fb"].str.slice(0, spec.opening_chars).to_list()
    opening_chars, opening_words = (v.transform(openings) for v in spec.opening_vectorisers)
    followup_words = spec.followup_vectoriser.transform(frame["fol"].fill_null("").to_list())
    words = spec.similarity_vectoriser
    near = words.transform(heads)
    sims = {}
    sims["sim_request"], sims["feedback_in_request"], sims["request_in_feedback"] = _overlap(
        near, words.transform(frame["req"].to_list()))
    sims["sim_response_head"], sims["feedback_in_response"], _ = _overlap(near, words.transform(frame["resp_head"].to_list()))
    sims["sim_response_tail"], *_ = _overlap(near, words.transform(frame["resp_tail"].to_list()))
    frame = frame.with_columns(**{k: pl.Series(v, dtype=pl.Float32) for k, v in sims.items()})
    frame = frame.hstack(_lexical(exchanges, spec))
    context = []
    if spec.context_bits:
        context = [spec.context_vectoriser.transform(frame[c].to_list()) for c in ("req_head", "resp_end")]
    dense = frame.select(spec.dense_names).cast(pl.Float32).fill_null(0.0).to_numpy()
    return sp.hstack([chars, word_grams, opening_chars, opening_words, followup_words, *context, sp.csr_matrix(dense)],
                     format="csr", dtype=np.float32)


def _lexical(exchanges: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The lexical cue table's verdict as columns: score, polarity flags, category one-hot."""
    ids = pl.int_range(pl.len()).cast(pl.String)
    rows = exchanges.select(
        exchange_id=ids,
        feedback=pl.col("feedback") if "feedback" in exchanges.columns else pl.lit(None, pl.String),
        request=pl.col("request") if "request" in exchanges.columns else pl.lit(None, pl.String),
    )
    found = spec.lexical.detect(rows)
    cat = pl.col("category")
    polarity = cat.replace_strict(POLARITY, default=None, return_dtype=pl.String)
    return found.select(
        lexical_score=pl.col("score"),
        lexical_dsat=(polarity == "dsat").fill_null(False).cast(pl.Float32),
        lexical_sat=(polarity == "sat").fill_null(False).cast(pl.Float32),
        **{f"lexical_{c}": (cat == c).fill_null(False).cast(pl.Float32) for c in _LEX_CATEGORIES},
    )
