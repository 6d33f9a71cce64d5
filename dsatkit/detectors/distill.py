"""Distil an LLM judge into the learned detector, on a user's own logs (as SPUR distils its rubric).

    logs -> exchanges with feedback -> the current detector's score -> a sample stratified by that score
         -> the judge's verdicts (cached, budgeted, resumable) -> `learned.fit` -> a detector directory

Stratifying by the current score puts rare DSAT in the sample; every row carries the weight
(stratum size / rows drawn from it) that makes the fit see the logs' own mix, so the calibration and the
threshold hold on the logs, not on the sample. What the judge could not label (failures, budget) is
counted and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from dsatkit.cache import Cache
from dsatkit.config import MineConfig
from dsatkit.detectors import build_detector
from dsatkit.detectors.judge import JudgeDetector, JudgePlan
from dsatkit.detectors.learned import LearnedModel, fit
from dsatkit.errors import ConfigError, EndpointError, InputError
from dsatkit.exchanges import build_exchanges
from dsatkit.taxonomy import POLARITY

STRATA = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0001)
"""Edges of the current detector's score bands that the sample is spread over (equal shares)."""
CACHE_NAME = "distill-cache.duckdb"


class DistillSummary(BaseModel):
    """What a distil run read, sampled, asked and fitted."""

    exchanges: int = 0
    sampled: int = 0
    judged: int = 0
    unlabelled: int = 0
    labels: dict[str, int] = {}
    plan: JudgePlan | None = None


def exchanges_of(paths: Sequence[str | Path], config: MineConfig) -> pl.DataFrame:
    """Every exchange with feedback in the logs, with its context (the judge reads it)."""
    from dsatkit.logs import read_logs

    frames = [build_exchanges(batch.turns) for batch in read_logs([str(p) for p in paths], config.read)]
    ex = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
    ex = ex.filter(pl.col("feedback").is_not_null()) if ex.height else ex
    if ex.height == 0:
        raise InputError("no exchange with a user turn after it in these logs: nothing to distil",
                         "check the paths and --format")
    return ex


def stratified_sample(ex: pl.DataFrame, scores: pl.Series, n: int, seed: int) -> pl.DataFrame:
    """`n` exchanges spread evenly over the score bands of `STRATA` (a band with fewer gives all it has,
    the rest go to the others), each with weight = band size / rows drawn from the band."""
    edges = list(STRATA)
    banded = ex.with_columns(score=scores, band=scores.cut(edges[1:-1], labels=[str(i) for i in range(len(edges) - 1)],
                                                          left_closed=True).cast(pl.String))
    sizes = dict(banded.group_by("band").len().iter_rows())
    quota, left, bands = {}, n, sorted(sizes, key=sizes.get)
    for i, band in enumerate(bands):  # smallest bands first: what they cannot use goes to the rest
        quota[band] = min(sizes[band], left // (len(bands) - i))
        left -= quota[band]
    parts = [banded.filter(pl.col("band") == b).sample(quota[b], seed=seed).with_columns(
        weight=pl.lit(sizes[b] / quota[b])) for b in bands if quota[b]]
    out = pl.concat(parts)
    return out.with_columns(pl.col("weight") * (out.height / out["weight"].sum()))  # mean weight 1


def judge_labels(detections: pl.DataFrame) -> pl.DataFrame:
    """The judge's DETECTIONS as labels: dsat when it says so, sat for a SAT category, else neutral."""
    polarity = pl.col("category").replace_strict(POLARITY, default=None, return_dtype=pl.String)
    sat = ~pl.col("label") & (polarity == "sat")
    return detections.select(
        "exchange_id",
        label=pl.when("label").then(pl.lit("dsat")).when(sat).then(pl.lit("sat")).otherwise(pl.lit("neutral")),
        category=pl.when(pl.col("label") & (polarity == "dsat")).then("category").when(sat).then("category"),
    )


def distill(paths: Sequence[str | Path], out: Path, config: MineConfig, n: int = 2000, seed: int = 0,
            dry_run: bool = False, progress: Callable[[str], None] = print) -> tuple[DistillSummary, LearnedModel | None]:
    """See the module docstring. With `dry_run`, only the plan (calls, tokens, cost) is computed."""
    if config.judge is None:
        raise ConfigError("distill needs a judge: --judge-model and --judge-base-url (or judge: in --config)",
                          "e.g. --judge-model gpt-4o-mini, or --judge-base-url http://localhost:8000/v1 for a local server")
    summary = DistillSummary()
    ex = exchanges_of(paths, config)
    summary.exchanges = ex.height
    # a dry run writes nothing: it reads the cache of an earlier run, if there is one, to count its answers
    cache = Cache(None if dry_run and not (out / CACHE_NAME).exists() else out / CACHE_NAME)
    try:
        current = build_detector("learned", config, cache)
        scores = current.detect(ex)["score"]
        sample = stratified_sample(ex, scores, n, seed)
        summary.sampled = sample.height
        judge = JudgeDetector(config.judge, cache)
        summary.plan = judge.plan(sample)
        if dry_run:
            return summary, None
        progress(f"judging {summary.plan.calls} exchanges ({summary.plan.cached} answered by the cache)")
        labels = judge_labels(judge.detect(sample))
    finally:
        cache.close()
    labelled = sample.join(labels, on="exchange_id", how="inner").with_columns(group=pl.col("conversation_id"))
    summary.judged = labelled.height
    summary.unlabelled = sample.height - labelled.height
    if labelled.is_empty():
        raise EndpointError(f"the judge labelled none of the {sample.height:,} sampled exchanges "
                            f"({judge.stats.failures:,} answers failed, {judge.stats.skipped_by_budget:,} over the budget)",
                            "check the judge's answers: dsatkit mine with --judge-model on a few logs shows why they fail")
    summary.labels = dict(labelled["label"].value_counts().sort("label").iter_rows())
    if (labelled["label"] == "dsat").sum() < 2 or (labelled["label"] != "dsat").sum() < 2:
        raise InputError(f"the judge labelled {summary.labels}: too few of one kind to fit a detector",
                         "raise --n, or check the judge's answers in the cache")
    model = fit(labelled, seed=seed, progress=progress)
    model.info["source"] = {"distilled_from": config.judge.model, "logs": [str(p) for p in paths],
                            "sampled": summary.sampled, "judged": summary.judged,
                            "strata": list(STRATA), "weights": "band size / rows drawn"}
    model.save(out)
    return summary, model

