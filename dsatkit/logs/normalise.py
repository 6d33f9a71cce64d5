"""Conversations (C) and messages (M) of a batch -> canonical TURNS plus QUARANTINE, all vectorised.

See `formats.py` for what C and M hold. Flat turn tables arrive as one row per message (R) and are
grouped here first; `split_carry` keeps the conversations that may still continue at the end of a batch
for the next one, so that a conversation is not split across batches when its rows are contiguous in
the file, or interleaved with other conversations' rows within half a batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from dsatkit.hashing import md5_of
from dsatkit.logs import quarantine as q
from dsatkit.logs.formats import ROLE_ALIASES
from dsatkit.schema import ROLE_DTYPE, TURNS, conform


class SeenIds:
    """Conversation ids seen so far in one `read_logs` call, as sorted runs of 64-bit hashes.

    Hashes keep memory at 8 bytes an id (80 MB for 10M conversations); a false "duplicate" needs a
    64-bit collision (odds ~n^2/2^65: 3e-6 at 10M ids). Each batch adds a run; a run is merged into
    the one before it while that one is at most twice its size, so there are O(log n) runs and
    every hash is merged O(log n) times (one sorted array grown by insertion copied all of it at
    every batch: 14 s of a 10M-conversation read, now 5 s).
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    @staticmethod
    def hash(ids: pl.Series) -> np.ndarray:
        return ids.hash(seed=0).to_numpy()

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        if not self._runs or not len(h):
            return found
        # sorted queries walk each run front to back (numpy's binary search starts at the last hit)
        order = np.argsort(h)
        queries = h[order]
        for run in self._runs:
            idx = np.searchsorted(run, queries)
            idx[idx == len(run)] = len(run) - 1
            found[order] |= run[idx] == queries
        return found

    def add(self, h: np.ndarray) -> None:
        if not len(h):
            return
        run = np.sort(h)  # np.unique's hash-based path is ~20x slower on 50k ids
        self._runs.append(run[np.concatenate(([True], run[1:] != run[:-1]))])
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newer])
            merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
            self._runs.append(merged)


def split_carry(r: pl.DataFrame, gap: int, window: int, limit: int) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(rows to emit now, rows to carry into the next batch, the widest gap seen so far).

    `r` is in file order. A conversation is carried while it may still continue: when one of its rows
    lies within the last `gap` rows, `gap` being the widest distance seen so far between two rows of
    one conversation (1 in a file whose conversations are contiguous), capped at `window`. At most
    `limit` rows are carried (the most recent conversations first, and always the last one).
    """
    ok = pl.col("_bad").is_null() & pl.col("conversation_id").is_not_null()
    good = r.filter(ok).select("conversation_id", "_row")
    if good.is_empty():
        return r, r.clear(), gap
    cid, row = pl.col("conversation_id"), pl.col("_row")
    convs = good.group_by(cid).agg(first=row.min(), last=row.max(), rows=pl.len())
    widest = 1
    if convs.select((pl.col("last") - pl.col("first") >= pl.col("rows")).any()).item():  # not contiguous
        widest = good.sort(cid, row).select(pl.when(cid == cid.shift()).then(row.diff()).max()).item()
    gap = min(max(gap, widest), window)
    recent = convs.filter(pl.col("last") > good["_row"].max() - gap).sort("last", descending=True)
    open_ids = recent.filter((pl.col("rows").cum_sum() <= limit) | (pl.int_range(pl.len()) == 0))["conversation_id"]
    carry = pl.col("conversation_id").is_in(open_ids.implode())  # a bad row that names one goes with it
    return r.filter(~carry.fill_null(False)), r.filter(carry), gap


def flat_to_cm(r: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group the rows of a flat turn table into C and M (order: the turn column, then file order)."""
    ok = pl.col("_bad").is_null() & pl.col("conversation_id").is_not_null()
    lone = r.filter(~ok).select(
        (-pl.col("_row") - 1).alias("_conv"), "_row",
        pl.coalesce("_bad", pl.lit(q.NO_ID)).alias("_bad"), pl.lit(0, pl.Int32).alias("_n"), "conversation_id",
    )
    m = (
        r.filter(ok)
        .with_columns(_conv=pl.col("_row").min().over("conversation_id"))
        .sort("_conv", "_turn", "_row", nulls_last=True)
        .select(
            "_conv", "_row", pl.int_range(pl.len(), dtype=pl.Int32).over("_conv").alias("m_turn"),
            pl.lit(False).alias("_null"), "m_role", "m_content",
            pl.col("timestamp").alias("m_timestamp"), pl.col("language").alias("m_language"),
            pl.col("model").alias("m_model"), pl.col("metadata").alias("m_metadata"), "conversation_id",
            *(["m_bad"] if "m_bad" in r.columns else []),
        )
    )
    # a conversation named by a bad row (a line that does not parse still shows its id) has a hole: it
    # would yield wrong exchanges, so all of it is quarantined
    holed = lone.filter(pl.col("conversation_id").is_not_null())["conversation_id"]
    c = m.group_by("_conv", maintain_order=True).agg(
        pl.col("conversation_id").first(), pl.len().cast(pl.Int32).alias("_n")
    ).with_columns(
        _row=pl.col("_conv"),
        _bad=pl.when(pl.col("conversation_id").is_in(holed.implode())).then(pl.lit(q.IN_BAD_CONVERSATION)),
        # in a flat table these are per row, so they live in M
        model=pl.lit(None, pl.String), language=pl.lit(None, pl.String),
        timestamp=pl.lit(None, pl.Datetime("us", "UTC")), metadata=pl.lit(None, pl.String),
    )
    c = pl.concat([c, lone], how="diagonal_relaxed")
    return c, m.drop("conversation_id")


def _issue(max_chars: int, m_bad: bool) -> pl.Expr:
    """A message's problem, the first that applies, or null (`m_bad`: M has a column of problems found
    while reading, such as a row of a flat table that is not UTF-8)."""
    found = pl.col("m_bad") if m_bad else pl.lit(None, pl.String)
    return (
        pl.when(found.is_not_null()).then(found)
        .when(pl.col("_null")).then(pl.lit(q.MALFORMED_MESSAGE))
        .when(pl.col("role").is_null()).then(pl.lit(q.UNKNOWN_ROLE))
        .when(pl.col("m_content").is_null()).then(pl.lit(q.NON_TEXT))
        # characters are counted only where the bytes could be too many (counting reads every byte)
        .when(pl.when(pl.col("m_content").str.len_bytes() > max_chars).then("m_content").str.len_chars() > max_chars)
        .then(pl.lit(q.TOO_LONG))
    )


def to_turns(
    c: pl.DataFrame, m: pl.DataFrame, raw: pl.DataFrame, source_file: str, max_chars: int, seen: SeenIds,
    roles: Mapping[str, str] = ROLE_ALIASES,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Validate a batch's conversations: (TURNS of the good ones, QUARANTINE of the rest, how many
    good ones; each has a message at least, and an id of its own). `roles` maps a role as written
    (lower-cased, stripped) to its canonical role."""
    # a log spells its roles a handful of ways: each distinct spelling is normalised once
    spellings = m.select(pl.col("m_role").drop_nulls().unique()).with_columns(
        role=pl.col("m_role").str.strip_chars().str.to_lowercase()
        .replace_strict(dict(roles), default=None, return_dtype=pl.String)
    )
    m = m.with_columns(
        role=pl.col("m_role").replace_strict(spellings["m_role"], spellings["role"], default=None, return_dtype=ROLE_DTYPE)
    ).with_columns(_issue=_issue(max_chars, "m_bad" in m.columns))
    worst = (
        m.filter(pl.col("_issue").is_not_null())
        .group_by("_conv", maintain_order=True)
        .agg(pl.col("_row").first().alias("_brow"), pl.col("_issue").first())
    )
    c = c.join(worst, on="_conv", how="left", maintain_order="left").with_columns(
        reason=pl.coalesce("_bad", pl.when(pl.col("_n").fill_null(0) == 0).then(pl.lit(q.NO_MESSAGES)), "_issue"),
        _brow=pl.coalesce("_brow", "_row"),
    )
    c = _fill_ids(c, source_file)
    c = _mark_duplicates(c, seen)

    bad = c.filter(pl.col("reason").is_not_null())
    good = c.filter(pl.col("reason").is_null())
    bad_keys = bad["_conv"]
    keep = m.filter(~pl.col("_conv").is_in(bad_keys.implode())) if len(bad_keys) else m
    conv_cols = good.select("_conv", "conversation_id", "model", "language", "timestamp", "metadata")
    t = keep.join(conv_cols, on="_conv", how="inner", maintain_order="left")
    turns = t.select(
        "conversation_id",
        pl.col("m_turn").alias("turn_index"),
        "role",
        pl.col("m_content").alias("content"),
        _coalesce(t, "timestamp"),
        _coalesce(t, "model"),
        _coalesce(t, "language"),
        pl.lit(source_file).alias("source_file"),
        _coalesce(t, "metadata"),
    )

    siblings = (
        m.join(bad.select("_conv", "_brow"), on="_conv", how="inner")
        .filter(pl.col("_row") != pl.col("_brow"))
        .select("_row", pl.lit(q.IN_BAD_CONVERSATION).alias("reason"))
    )
    rejected = pl.concat([bad.select(pl.col("_brow").alias("_row"), "reason"), siblings]).unique(
        "_row", keep="first", maintain_order=True
    )
    return conform(turns, TURNS), q.quarantine_frame(rejected, raw, source_file), good.height


def _coalesce(t: pl.DataFrame, name: str) -> pl.Expr:
    """The message's own value when the format has one, else the conversation's."""
    own = f"m_{name}"
    return (pl.coalesce(own, name) if own in t.columns else pl.col(name)).alias(name)


def _fill_ids(c: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """A stable id for conversations that have none: md5 of the file (as given) and the row number."""
    missing = c["conversation_id"].is_null() & c["reason"].is_null()
    if not missing.any():
        return c
    rows = c.filter(missing)["_row"]
    made = md5_of(pl.Series([source_file] * len(rows)), rows)
    ids = c["conversation_id"].clone().scatter(np.flatnonzero(missing.to_numpy()), made)
    return c.with_columns(conversation_id=ids)


def _mark_duplicates(c: pl.DataFrame, seen: SeenIds) -> pl.DataFrame:
    """Good conversations whose id came before (this batch or an earlier one) become duplicates."""
    good = c["reason"].is_null().to_numpy()
    idx = np.flatnonzero(good)
    if not len(idx):
        return c
    ids = c["conversation_id"].gather(idx)
    h = SeenIds.hash(ids)
    dup = seen.contains(h) | ~ids.is_first_distinct().to_numpy()
    seen.add(h[~dup])
    if dup.any():
        reason = c["reason"].clone().scatter(idx[dup], q.DUPLICATE)
        c = c.with_columns(reason=reason)
    return c
