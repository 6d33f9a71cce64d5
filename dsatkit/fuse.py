"""DETECTIONS -> VERDICTS: one fused decision per exchange.

The fused score is a weighted mean of the detectors' scores. A detector that abstains (category is
null: it saw no evidence either way) still contributes its prior, but with a fraction of its weight,
so one confident detector is not drowned by others that simply saw nothing. A detector missing for an
exchange (the judge outside the cascade, a judge failure) does not contribute at all. New detectors
plug in by name through `FuseConfig.weights`; unknown names get weight 1.
"""

from __future__ import annotations

import polars as pl

from dsatkit.config import FuseConfig
from dsatkit.detectors import DEFAULT_THRESHOLD
from dsatkit.schema import DETECTIONS, VERDICTS, conform, empty
from dsatkit.taxonomy import POLARITY

ABSTAIN_WEIGHT = 0.5
"""Share of a detector's weight that its score keeps when it abstains."""


def _strongest(d: pl.DataFrame, polarity: str, strength: pl.Expr) -> pl.DataFrame:
    """Per exchange, the category of `polarity` whose detector gave the strongest evidence."""
    return (
        d.filter(pl.col("polarity") == polarity)
        .with_columns(strength=strength)
        .sort("strength", "detector", descending=[True, False])
        .unique("exchange_id", keep="first")
        .select("exchange_id", pl.col("category").alias(f"{polarity}_category"))
    )


def fuse(detections: pl.DataFrame, config: FuseConfig | None = None) -> pl.DataFrame:
    """Fuse a long DETECTIONS frame into one VERDICTS row per exchange_id it holds."""
    config = config or FuseConfig()
    d = conform(detections, DETECTIONS).with_columns(
        polarity=pl.col("category").replace_strict(POLARITY, default=None, return_dtype=pl.String),
    )
    if d.is_empty():
        return empty(VERDICTS)
    names = sorted(d["detector"].unique().to_list())
    if len(names) == 1:  # one detector, one row per exchange: its detections are the verdicts
        v = d.select(
            "exchange_id",
            "score",
            detectors=pl.when("label").then("detector"),
            dsat_category=pl.when(pl.col("polarity") == "dsat").then("category"),
            sat_category=pl.when(pl.col("polarity") == "sat").then("category"),
        )
        return _decide(v, config)
    # sorted keys make the group-by a linear scan; the voters are a bitmask per exchange, named
    # afterwards (a string aggregation per group costs more than all the rest together)
    d = d.with_columns(
        weight=pl.col("detector").replace_strict(config.weights, default=1.0, return_dtype=pl.Float64)
        * pl.when(pl.col("category").is_null()).then(ABSTAIN_WEIGHT).otherwise(1.0),
    ).sort("exchange_id", maintain_order=True)
    bit = pl.col("detector").replace_strict({n: 1 << i for i, n in enumerate(names)}, return_dtype=pl.Int64)
    v = d.group_by("exchange_id", maintain_order=True).agg(
        score=((pl.col("weight") * pl.col("score")).sum() / pl.col("weight").sum()).fill_nan(0.0),
        voters=(bit * pl.col("label").cast(pl.Int64)).sum(),
    )
    masks = {m: ",".join(n for i, n in enumerate(names) if m >> i & 1) or None for m in range(1 << len(names))}
    v = v.with_columns(detectors=pl.col("voters").replace_strict(masks, return_dtype=pl.String))
    for part in (
        _strongest(d, "dsat", pl.col("weight") * pl.col("score")),
        _strongest(d, "sat", pl.col("weight") * (1 - pl.col("score"))),
    ):
        v = v.join(part, on="exchange_id", how="left", maintain_order="left")
    return _decide(v, config)


def _decide(v: pl.DataFrame, config: FuseConfig) -> pl.DataFrame:
    """Label, polarity and category from a fused score and the strongest DSAT / SAT categories."""
    label = pl.col("score") >= (DEFAULT_THRESHOLD if config.threshold is None else config.threshold)
    v = v.with_columns(
        label=label,
        polarity=pl.when(label)
        .then(pl.lit("dsat"))
        .when(pl.col("sat_category").is_not_null())
        .then(pl.lit("sat"))
        .otherwise(pl.lit("neutral")),
        category=pl.when(label).then(pl.col("dsat_category")).otherwise(pl.col("sat_category")),
    )
    return conform(v, VERDICTS)
