"""The `mine` pipeline: logs -> turns -> exchanges -> detections -> verdicts -> pairs -> store.

Batches stream through every stage (conversations never span two batches), so memory stays bounded
by the batch size, not the input size.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from pydantic import BaseModel, Field

import dsatkit
from dsatkit.cache import Cache
from dsatkit.config import MineConfig
from dsatkit.detectors import Detector
from dsatkit.errors import StoreError
from dsatkit.executors import MineJob, executor_for
from dsatkit.lock import OutputLock
from dsatkit.progress import console, quiet
from dsatkit.stages.flow import MineCounts, MineStages, detect_and_fuse
from dsatkit.store import CACHE_NAME, TOPICS_NAME, RunWriter, connect

if TYPE_CHECKING:
    from dsatkit.topics import TopicsConfig

_VERSIONED = ("polars", "duckdb", "pydantic", "sentence-transformers", "openai", "trl", "transformers", "torch")


class MineSummary(BaseModel):
    """What one run read, found and wrote; also stored as a row of the `runs` table."""

    run_id: str
    files: int = 0
    rows_read: int = 0
    conversations: int = 0
    turns: int = 0
    exchanges: int = 0
    with_feedback: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    resumed_files: list[str] = Field(
        default_factory=list, description="input files a killed earlier run had finished: read from its parts, "
        "not mined again (Ray executor)")
    driver_files: list[str] = Field(
        default_factory=list, description="input files the Ray executor's driver mined itself, beside its workers "
        "(while the cluster started, or because they repeat an earlier file's conversation ids)")
    skipped_files: dict[str, int] = Field(
        default_factory=dict, description="files found inside directories and not read, by reason (hidden, .csv, ...)")
    dsat: int = 0
    sat: int = 0
    neutral: int = 0
    fused_threshold: float | None = Field(
        None, description="the fused score at or above which an exchange was labelled DSAT (configured, or the "
        "stored threshold of the one cheap detector)")
    dsat_by_category: dict[str, int] = Field(default_factory=dict)
    pairs: int = 0
    seed_pairs: int = 0
    no_prompt: int = Field(0, description="DSAT records with no prompt to pair (no user turn before the response)")
    timings_s: dict[str, float] = Field(
        default_factory=dict,
        description="the main thread's seconds per stage; 'read' is its wait for the reader thread, which "
        "reads the next batch while this one is mined, and 'store' its wait for the writer threads",
    )
    detectors: dict[str, dict] = Field(default_factory=dict, description="per-detector stats")
    judge_cascade: dict[str, int] = Field(
        default_factory=dict, description="exchanges eligible for the judge, sent to it, and calls saved"
    )


def run_detectors(
    exchanges: pl.DataFrame,
    config: MineConfig,
    cache: Cache | None = None,
    detectors: Sequence[Detector] | None = None,
    turns: pl.DataFrame | None = None,
    cascade: Counter[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """DETECTIONS and VERDICTS of `exchanges`: the detectors' stages (cheap ones, then cascade ones on
    their selection) and the fuse stage, as `mine_batch` runs them (for evaluation and tests).

    `detectors`: default, `config.detectors` built through the registry. `turns`: where the judge gets
    its exchanges' context when `exchanges` has none. `cascade` counts the exchanges the cascade
    detectors could have seen (`eligible`) and were given (`sent_to_judge`).
    """
    stages = MineStages.from_config(config, cache, detectors)
    frames = {"exchanges": exchanges} if turns is None else {"exchanges": exchanges, "turns": turns}
    detections, verdicts, counts = detect_and_fuse(frames, stages)
    if cascade is not None:
        cascade.update(counts)
    return detections, verdicts


class MineResult:
    """A finished run: its summary, and the store's tables as Polars frames."""

    def __init__(self, out_dir: Path, summary: MineSummary, keepalive: object = None, topics: object = None):
        self.out_dir = out_dir
        self.summary = summary
        self.topics = topics  # the TopicsResult of `mine(..., topics=TopicsConfig())`, else None
        self._keepalive = keepalive  # a TemporaryDirectory when mine() was given no out_dir

    def sql(self, query: str) -> pl.DataFrame:
        con = connect(self.out_dir)
        try:
            return con.sql(query).pl()
        finally:
            con.close()

    def table(self, name: str) -> pl.DataFrame:
        return self.sql(f'select * from "{name}"')

    @property
    def dsat(self) -> pl.DataFrame:
        return self.table("dsat")

    @property
    def pairs(self) -> pl.DataFrame:
        return self.table("pairs")

    @property
    def verdicts(self) -> pl.DataFrame:
        return self.table("verdicts")

    @property
    def exchanges(self) -> pl.DataFrame:
        return self.table("exchanges")

    @property
    def quarantine(self) -> pl.DataFrame:
        return self.table("quarantine")

    def __repr__(self) -> str:
        s = self.summary
        return f"MineResult({self.out_dir}, exchanges={s.exchanges}, dsat={s.dsat}, pairs={s.pairs})"


def _summarise(summary: MineSummary, job: MineJob) -> None:
    """Fill the summary's counts and detector stats from what the executor gathered."""
    c = job.counts
    summary.files = len(c.files)
    summary.resumed_files = list(job.resumed)
    summary.driver_files = list(job.driver_files)
    for name in type(c).model_fields:  # the counts both models name (counts by reason: most first)
        if name in MineSummary.model_fields and name != "files":
            value = getattr(c, name)
            setattr(summary, name, dict(Counter(value).most_common()) if isinstance(value, dict) else value)
    summary.detectors = {
        name: stats.model_dump() | {"seconds": round(stats.seconds, 3)}
        for name in job.config.detectors if (stats := job.stats.get(name)) is not None
    }
    fuse = job.stats.get("fuse")
    summary.fused_threshold = getattr(fuse, "threshold", None)
    if c.cascade:
        summary.judge_cascade = c.cascade | {"saved": c.cascade["eligible"] - c.cascade["sent_to_judge"]}


def _timings(job: MineJob) -> dict[str, float]:
    """The run's seconds: the executor's own steps (read, store, commit, ...) and each stage's."""
    totals = dict(job.timer.totals)
    for name, stats in job.stats.items():
        totals[job.labels.get(name, name)] = stats.seconds
    return {k: round(v, 3) for k, v in totals.items()}


def _versions() -> dict[str, str]:
    out = {"dsatkit": dsatkit.__version__}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def mine(
    paths: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    config: MineConfig | None = None,
    topics: TopicsConfig | None = None,
) -> MineResult:
    """Mine DSAT from chat logs into `out_dir` (a temp dir when None) and return the result.

    `topics` (default: `config.topics`): once the store is committed, cluster its requests into topics
    as well (`dsatkit topics`, under the same lock and through the same embedding cache); the result's
    `topics` holds them. Without topics, the topics of the store this run replaces are removed (they
    describe exchanges that are gone)."""
    from dsatkit.logs.files import expand_paths

    config = config or MineConfig()
    topics = topics or config.topics_config()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    keepalive = None
    if out_dir is None:
        keepalive = tempfile.TemporaryDirectory(prefix="dsatkit-")
        out_dir = keepalive.name
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"output {out} exists and is not a directory", hint="choose another -o/--out")
    out.mkdir(parents=True, exist_ok=True)
    found = expand_paths([str(p) for p in paths])  # a path that matches nothing: InputError, at once
    executor = executor_for(config)
    lock = OutputLock(out).acquire()  # one run at a time per directory: a second is refused at once
    started = dt.datetime.now(dt.UTC)
    summary = MineSummary(run_id=uuid.uuid4().hex[:12], skipped_files=dict(
        sorted(found.skipped.items(), key=lambda kv: (-kv[1], kv[0]))))  # most first, as the reader counts them
    topics_result = None
    cache = writer = None
    try:
        executor.start(found, config)  # the local one reads the first batch while the store is set up
        cache = Cache(out / CACHE_NAME)
        writer = RunWriter(out, config.store.text_compression)
        job = MineJob(found, out, config, writer, cache, MineCounts())
        executor.run(job)
        _summarise(summary, job)
        with job.timer("commit"):
            summary.timings_s = _timings(job)
            writer.commit(
                {
                    "run_id": summary.run_id,
                    "started_at": started,
                    "finished_at": dt.datetime.now(dt.UTC),
                    "dsatkit_version": dsatkit.__version__,
                    "inputs": [str(p) for p in paths],
                    "config": config.model_dump(mode="json"),
                    "versions": _versions(),
                    "counts": summary.model_dump(exclude={"timings_s", "run_id"}),
                    "timings": summary.timings_s,
                    "detectors": list(config.detectors),
                }
            )
        summary.timings_s = _timings(job)
        for done in job.after_commit:
            done()
        if topics is not None:
            from dsatkit.topics import build_topics

            topics_result = build_topics(out, topics, cache=cache, take_lock=False)
        elif (out / TOPICS_NAME).exists():
            (out / TOPICS_NAME).unlink()
            if not quiet():
                console.print(f"removed {TOPICS_NAME}: its topics described the store this run replaced "
                              f"(`dsatkit topics {out}` builds them again, from the cached embeddings)",
                              highlight=False, soft_wrap=True)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        executor.close()
        if cache is not None:
            cache.close()
        lock.release()
    return MineResult(out, summary, keepalive, topics_result)
