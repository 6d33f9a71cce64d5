"""`build_topics`: a store directory's requests -> topics, written to `DIR/topics.duckdb`.

In: a store written by `dsatkit mine` (its exchanges and verdicts). Out: three tables in
`DIR/topics.duckdb`, which `dsatkit sql DIR` and `store.connect` see unqualified next to the store's own:

- `topics`: one row per topic: name, description (LLM naming only), distinctive terms, group, size,
  DSAT count and rate with its 95% Wilson interval, SAT count and rate, the leading DSAT categories,
  languages and models, and the run's metadata (method, seed, model, version, the store run it read);
- `topic_groups`: the second level, one row per group of topics, with the same counts;
- `exchange_topics`: exchange_id -> topic_id and the cosine distance of its request to the topic's centre;
- `topic_runs`: the run: config, counts, timings, the silhouette of each k that auto compared.

Rates are over every exchange of the topic (as `dsatkit stats` counts them); `with_feedback` says how
many of them had a next user turn, without which an exchange cannot be DSAT. Exchanges without a
request (a conversation part that opens with the assistant, a blank turn) get no topic.

Steps: the request of each exchange (its last user turn before the response), cut to `head_chars`, is
deduplicated by md5; the distinct texts are embedded through the embedding cache (`DIR/cache.duckdb`,
shared with the embedding detector, keyed by model and text hash: a re-run encodes nothing), clustered
(dsatkit.topics.cluster), and named (dsatkit.topics.terms, or dsatkit.topics.llm). The file is built in a
temp file and renamed into place, under the directory's lock (one writer at a time).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import scipy.sparse as sp

import dsatkit
from dsatkit.cache import Cache
from dsatkit.detectors.embedding import Embedder
from dsatkit.duck import arrow_of
from dsatkit.errors import StoreError, first_line
from dsatkit.hashing import md5_hex
from dsatkit.lock import OutputLock
from dsatkit.progress import progress
from dsatkit.rates import with_rate
from dsatkit.store import CACHE_NAME, TOPICS_NAME, connect
from dsatkit.topics import cluster as clustering
from dsatkit.topics.config import TopicsConfig
from dsatkit.topics.llm import TopicName, TopicNamer
from dsatkit.topics.terms import class_counts, top_terms

TOPICS_DB = TOPICS_NAME
"""The file of the topic tables, inside the store directory."""
VERSION = "topics-v1"
"""Bumped when the way topics are computed changes (stored in every topics row)."""
METHOD = "minibatch-kmeans"
TOP_N = 3
"""Entries kept in top_categories / top_languages / top_models."""

_REQUESTS = """
select exchange_id, request, model, language, feedback_turn is not null as has_feedback,
       coalesce(v.label, false) as dsat, coalesce(v.polarity = 'sat', false) as sat,
       case when v.label then v.category end as category
from exchanges left join verdicts v using (exchange_id)
"""
"""What a topics run reads of the store: one row per exchange, through the store's views."""

_TOP = pl.List(pl.Struct({"value": pl.String, "n": pl.Int32}))


@dataclass
class TopicsSummary:
    """What one topics run found and did; also stored as the row of `topic_runs`."""

    run_id: str
    exchanges: int = 0
    with_request: int = 0
    distinct_requests: int = 0
    topics: int = 0
    groups: int = 0
    dissolved: int = 0
    k_chosen_by: str = ""
    silhouettes: dict[int, float] = field(default_factory=dict)
    embedded: int = 0
    embedding_cache_hits: int = 0
    naming: dict = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class TopicsResult:
    """A finished topics run: the `topics` and `topic_groups` tables as written, and the summary."""

    topics: pl.DataFrame
    groups: pl.DataFrame
    summary: TopicsSummary
    path: Path


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] += time.perf_counter() - t0


def read_requests(store_dir: Path, head_chars: int) -> tuple[pl.DataFrame, str | None]:
    """(one row per exchange: exchange_id, request head, model, language, has_feedback, dsat, sat,
    category of a DSAT verdict; the id of the store's last mine run)."""
    con = connect(store_dir)
    try:
        frame = con.sql(_REQUESTS).pl()
        run = con.sql("select run_id from runs order by finished_at desc limit 1").fetchall()
    except duckdb.Error as e:
        raise StoreError(f"{store_dir} is not a dsatkit store: {first_line(e)}") from None
    finally:
        con.close()
    frame = frame.with_columns(pl.col("request").str.slice(0, head_chars).str.strip_chars())
    return frame, (run[0][0] if run else None)


def build_topics(
    store_dir: str | Path,
    config: TopicsConfig | None = None,
    cache: Cache | None = None,
    take_lock: bool = True,
) -> TopicsResult:
    """Cluster the requests of the store in `store_dir` into topics and write `topics.duckdb` there.

    `cache`: an open cache to embed through (default: `DIR/cache.duckdb`, opened here); `take_lock=False`
    when the caller already holds the directory's lock (`mine --topics`). Returns the written topics,
    groups and the run's summary.
    """
    config = config or TopicsConfig()
    out = Path(store_dir)
    if not out.is_dir():
        raise StoreError(f"{out} is not a directory")
    lock = OutputLock(out).acquire() if take_lock else None
    try:
        return _build(out, config, cache)
    finally:
        if lock is not None:
            lock.release()


def _build(out: Path, config: TopicsConfig, cache: Cache | None) -> TopicsResult:
    timer = _Timer()
    summary = TopicsSummary(run_id=uuid.uuid4().hex[:12])
    started = dt.datetime.now(dt.UTC)
    with timer("read"):
        frame, store_run = read_requests(out, config.head_chars)
        summary.exchanges = frame.height
        frame = frame.filter(pl.col("request").is_not_null() & (pl.col("request") != ""))
        summary.with_request = frame.height
        frame = frame.with_columns(h=md5_hex(frame["request"]))
        # distinct requests, in hash order: the clustering does not depend on the order of the store
        distinct = frame.group_by("h").agg(pl.col("request").first(), pl.len().alias("weight")).sort("h")
        summary.distinct_requests = distinct.height
    own_cache = cache is None
    if own_cache:
        cache = Cache(out / CACHE_NAME)
    naming: dict = {}
    try:
        with progress() as bar:
            embedder = Embedder(config.model, config.device, config.batch_size, cache)
            with timer("embed"):
                vectors = (
                    embedder.embed(distinct["request"], "embedding requests")
                    if distinct.height else np.zeros((0, 1), dtype=np.float32)
                )
            summary.embedded, summary.embedding_cache_hits = embedder.stats.encoded, embedder.stats.cache_hits
            weights = distinct["weight"].to_numpy().astype(np.float64)
            with timer("cluster"):
                candidates = clustering.candidate_ks(distinct.height, frame.height, config)
                task = bar.add_task("clustering", total=(len(candidates) if config.n_topics == "auto" else 0) + 1,
                                    unit="fits")
                if distinct.height:
                    result = clustering.cluster(vectors, weights, config, on_step=lambda: bar.advance(task))
                else:
                    result = clustering.Clustering(np.zeros(0, np.int32), np.zeros(0), np.zeros((0, 1)),
                                                   np.zeros(0, np.int64))
                bar.advance(task)
                k = len(result.sizes)
                groups = clustering.group(result.centres, result.sizes, config) if k else np.zeros(0, np.int32)
            summary.topics, summary.groups, summary.dissolved = k, int(groups.max(initial=-1)) + 1, result.dissolved
            summary.silhouettes = result.silhouettes
            summary.k_chosen_by = "silhouette" if config.n_topics == "auto" else "n_topics"
            with timer("terms"):
                distinct = distinct.with_columns(
                    topic_id=pl.Series(result.labels, dtype=pl.Int32), distance=pl.Series(result.distance)
                ).with_row_index("row")
                nearest = (
                    distinct.sort("topic_id", "distance", "h").group_by("topic_id", maintain_order=True)
                    .head(max(config.terms_sample, config.examples))
                )
                texts = nearest.group_by("topic_id", maintain_order=True).head(config.terms_sample)
                counts, vocabulary = class_counts(
                    texts["request"].to_list(), texts["topic_id"].to_numpy(), texts["weight"].to_numpy(), k
                )
                terms = top_terms(counts, vocabulary, config.n_terms)
                to_group = sp.csr_matrix((np.ones(k), (groups, np.arange(k))), shape=(summary.groups, k))
                group_terms = top_terms((to_group @ counts).tocsr(), vocabulary, config.n_terms)
            names: list[TopicName | None] = [None] * k
            group_names: list[TopicName | None] = [None] * summary.groups
            if config.naming == "llm" and k:
                with timer("name"):
                    namer = TopicNamer(config.llm, cache)
                    examples = [
                        nearest.filter(pl.col("topic_id") == t).head(config.examples)["request"].to_list()
                        for t in range(k)
                    ]
                    names = namer.name_topics(terms, examples)
                    if summary.groups < k:  # a real second level: its groups are named from their topics
                        shown = [n.name if n else ", ".join(t[: config.name_terms]) for n, t in zip(names, terms)]
                        group_names = namer.name_topics(
                            group_terms, [[shown[t] for t in np.flatnonzero(groups == g)] for g in range(summary.groups)]
                        )
                    naming = namer.summary
        summary.naming = {"method": config.naming, **naming}
    finally:
        if own_cache:
            cache.close()

    with timer("tables"):
        assigned = frame.join(distinct.select("h", "topic_id", "distance"), on="h", how="left")
        topic_names = [_name(n, t, config) for n, t in zip(names, terms, strict=True)]
        if summary.groups == k:  # no second level: each group is its topic
            group_names = names
            group_terms = terms
        group_labels = [_name(n, t, config) for n, t in zip(group_names, group_terms, strict=True)]
        meta = {"method": METHOD, "model": embedder.key, "seed": config.seed, "version": VERSION,
                "store_run_id": store_run, "built_at": started}
        topics = _topic_table(assigned, k, topic_names, names, terms, groups, group_labels, meta, distinct)
        group_table = _group_table(assigned, groups, group_labels, group_names, group_terms)
        exchange_topics = assigned.select(
            "exchange_id", pl.col("topic_id").cast(pl.Int32), pl.col("distance").cast(pl.Float64)
        ).sort("topic_id", "distance", "exchange_id")
    summary.timings_s = {s: round(v, 3) for s, v in timer.totals.items()}
    run = {
        "run_id": summary.run_id, "started_at": started, "finished_at": dt.datetime.now(dt.UTC),
        "dsatkit_version": dsatkit.__version__, "store_run_id": store_run,
        "config": json.dumps(config.model_dump(mode="json")),
        "summary": json.dumps({k: v for k, v in summary.__dict__.items()}, default=str),
    }
    path = _write(out, {"topics": topics, "topic_groups": group_table, "exchange_topics": exchange_topics,
                        "topic_runs": pl.DataFrame([run])})
    return TopicsResult(topics, group_table, summary, path)


def _name(named: TopicName | None, terms: list[str], config: TopicsConfig) -> str:
    if named is not None:
        return named.name
    return ", ".join(terms[: config.name_terms]) or "(no terms)"


def _top(assigned: pl.DataFrame, key: str, column: str, where: pl.Expr | None = None) -> pl.DataFrame:
    """(key, top list) of the TOP_N most frequent non-null values of `column` per `key`."""
    rows = assigned.filter(pl.col(column).is_not_null() & (True if where is None else where))
    return (
        rows.group_by(key, column).len()
        .sort(key, "len", column, descending=[False, True, False])
        .group_by(key, maintain_order=True).head(TOP_N)
        .group_by(key, maintain_order=True)
        .agg(pl.struct(pl.col(column).alias("value"), pl.col("len").cast(pl.Int32).alias("n")).alias("top"))
    )


def _counts(assigned: pl.DataFrame, key: str, ids: pl.DataFrame) -> pl.DataFrame:
    """Size, DSAT and SAT counts and rates (with intervals) and the top lists per `key`, for every id in `ids`."""
    counts = assigned.group_by(key).agg(
        size=pl.len().cast(pl.Int32),
        with_feedback=pl.col("has_feedback").sum().cast(pl.Int32),
        dsat=pl.col("dsat").sum().cast(pl.Int32),
        sat=pl.col("sat").sum().cast(pl.Int32),
    )
    out = ids.join(counts, on=key, how="left").with_columns(pl.col("size", "with_feedback", "dsat", "sat").fill_null(0))
    # rates over the exchanges with a next user turn, as everywhere (dsatkit.rates)
    out = with_rate(out, "dsat", "with_feedback", "dsat_rate").with_columns(
        sat_rate=pl.when(pl.col("with_feedback") > 0).then(pl.col("sat") / pl.col("with_feedback")),
    )
    for column, name, where in (("category", "top_categories", pl.col("dsat")), ("language", "top_languages", None),
                                ("model", "top_models", None)):
        top = _top(assigned, key, column, where).rename({"top": name})
        out = out.join(top, on=key, how="left", maintain_order="left").with_columns(
            pl.col(name).cast(_TOP).fill_null(pl.lit([], dtype=_TOP))
        )
    return out


def _topic_table(assigned, k, topic_names, names, terms, groups, group_labels, meta, distinct) -> pl.DataFrame:
    ids = pl.DataFrame({
        "topic_id": pl.Series(range(k), dtype=pl.Int32),
        "name": pl.Series(topic_names, dtype=pl.String),
        "description": pl.Series([n.description if n else None for n in names], dtype=pl.String),
        "terms": pl.Series(terms, dtype=pl.List(pl.String)),
        "group_id": pl.Series(groups, dtype=pl.Int32),
        "group_name": pl.Series([group_labels[g] for g in groups], dtype=pl.String),
    })
    per_topic = distinct.group_by("topic_id").agg(
        distinct_requests=pl.len().cast(pl.Int32),
        mean_distance=(pl.col("distance") * pl.col("weight")).sum() / pl.col("weight").sum(),
    )
    out = _counts(assigned, "topic_id", ids).join(per_topic, on="topic_id", how="left", maintain_order="left")
    return out.with_columns(
        method=pl.lit(meta["method"]), model=pl.lit(meta["model"]), seed=pl.lit(meta["seed"], dtype=pl.Int32),
        version=pl.lit(meta["version"]), store_run_id=pl.lit(meta["store_run_id"], dtype=pl.String),
        built_at=pl.lit(meta["built_at"]),
    )


def _group_table(assigned, groups, group_labels, group_names, group_terms) -> pl.DataFrame:
    n = len(group_labels)
    ids = pl.DataFrame({
        "group_id": pl.Series(range(n), dtype=pl.Int32),
        "name": pl.Series(group_labels, dtype=pl.String),
        "description": pl.Series([g.description if g else None for g in group_names], dtype=pl.String),
        "terms": pl.Series(group_terms, dtype=pl.List(pl.String)),
        "topics": pl.Series(np.bincount(groups, minlength=n), dtype=pl.Int32),
    })
    of_topic = pl.DataFrame({"topic_id": pl.Series(range(len(groups)), dtype=pl.Int32),
                             "group_id": pl.Series(groups, dtype=pl.Int32)})
    return _counts(assigned.join(of_topic, on="topic_id", how="left"), "group_id", ids)


def _write(out: Path, tables: dict[str, pl.DataFrame]) -> Path:
    """Write the tables into a temp DuckDB file beside the store and rename it to DIR/topics.duckdb."""
    final = out / TOPICS_DB
    tmp = out / f".{TOPICS_DB}.{os.getpid()}.tmp"
    for stale in (tmp, Path(f"{tmp}.wal")):
        stale.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            for name, table in tables.items():
                data = arrow_of(table)  # noqa: F841 (read by DuckDB)
                con.execute(f'create table "{name}" as select * from data')
            con.execute("checkpoint")
        finally:
            con.close()
        os.replace(tmp, final)
    except (duckdb.Error, OSError) as err:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            leftover.unlink(missing_ok=True)
        raise StoreError(f"cannot write {final}: {first_line(err)}",
                         hint="free disk space there, or check the directory's permissions") from err
    return final
