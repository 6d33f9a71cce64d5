"""Rates with their 95% interval: the one home of the Wilson score interval.

A DSAT rate is counted over the exchanges that have a next user turn (only those can show
dissatisfaction); `dsatkit stats`, `dsatkit topics`, `dsatkit report` and the evaluation between
training rounds all take their intervals from here.
"""

from __future__ import annotations

import polars as pl

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson(successes: pl.Expr | str, trials: pl.Expr | str, z: float = Z95) -> tuple[pl.Expr, pl.Expr]:
    """(low, high) expressions of the Wilson score interval of `successes` out of `trials`, row by row
    (fractional successes allowed: a tie counted as half a win); null where there are no trials."""
    k = pl.col(successes) if isinstance(successes, str) else successes
    n = pl.col(trials) if isinstance(trials, str) else trials
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)).sqrt() / denom
    some = n > 0
    return (pl.when(some).then((centre - half).clip(0.0, 1.0)),
            pl.when(some).then((centre + half).clip(0.0, 1.0)))


def with_rate(frame: pl.DataFrame, successes: str, trials: str, name: str = "rate") -> pl.DataFrame:
    """`frame` with `name` = successes / trials and its 95% interval (`name`_low, `name`_high), per row."""
    low, high = wilson(successes, trials)
    return frame.with_columns(
        pl.when(pl.col(trials) > 0).then(pl.col(successes) / pl.col(trials)).alias(name),
        low.alias(f"{name}_low"),
        high.alias(f"{name}_high"),
    )


def wilson_interval(successes: float, trials: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of one rate (see `wilson`): (None, None) without trials."""
    low, high = wilson(pl.lit(float(successes)), pl.lit(trials, pl.Float64), z)
    row = pl.select(low=low, high=high).row(0)
    return row[0], row[1]
