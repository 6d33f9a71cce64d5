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
from dsatkit.schema import DETECTIONS, VERDICTS, conform
from dsatkit.taxonomy import POLARITY

ABSTAIN_WEIGHT = 0.2
"""Share of a detector's weight that its score keeps when it abstains."""


def _strongest(category_polarity: str, strength: pl.Expr) -> pl.Expr:
    mine = pl.col("polarity") == category_polarity
    return pl.col("category").filter(mine).sort_by(strength.filter(mine), descending=True).first()


def fuse(detections: pl.DataFrame, config: FuseConfig | None = None) -> pl.DataFrame:
    """Fuse a long DETECTIONS frame into one VERDICTS row per exchange_id it holds."""
    config = config or FuseConfig()
    d = conform(detections, DETECTIONS).with_columns(
        polarity=pl.col("category").replace_strict(POLARITY, default=None, return_dtype=pl.String),
        weight=pl.col("detector").replace_strict(config.weights, default=1.0, return_dtype=pl.Float64)
        * pl.when(pl.col("category").is_null()).then(ABSTAIN_WEIGHT).otherwise(1.0),
    )
    v = d.group_by("exchange_id").agg(
        score=((pl.col("weight") * pl.col("score")).sum() / pl.col("weight").sum()).fill_nan(0.0),
        dsat_category=_strongest("dsat", pl.col("weight") * pl.col("score")),
        sat_category=_strongest("sat", pl.col("weight") * (1 - pl.col("score"))),
        detectors=pl.col("detector").filter(pl.col("label")).sort().str.join(","),
    )
    label = pl.col("score") >= config.threshold
    v = v.with_columns(
        label=label,
        polarity=pl.when(label)
        .then(pl.lit("dsat"))
        .when(pl.col("sat_category").is_not_null())
        .then(pl.lit("sat"))
        .otherwise(pl.lit("neutral")),
        category=pl.when(label).then(pl.col("dsat_category")).otherwise(pl.col("sat_category")),
        detectors=pl.when(pl.col("detectors") == "").then(None).otherwise(pl.col("detectors")),
    )
    return conform(v, VERDICTS).sort("exchange_id")
