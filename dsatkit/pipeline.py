"""The `mine` pipeline: logs -> turns -> exchanges -> detections -> verdicts -> pairs -> store.

Batches stream through every stage (conversations never span two batches), so memory stays bounded
by the batch size, not the input size.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from pydantic import BaseModel, Field

import dsatkit
from dsatkit.cache import Cache
from dsatkit.config import MineConfig
from dsatkit.detectors import Detector, build_detector, fused_threshold
from dsatkit.errors import StoreError
from dsatkit.exchanges import attach_context, build_exchanges
from dsatkit.fuse import fuse
from dsatkit.lock import OutputLock
from dsatkit.pairs import dsat_and_pairs
from dsatkit.progress import progress
from dsatkit.readahead import ReadAhead
from dsatkit.schema import DETECTIONS, empty
from dsatkit.store import CACHE_NAME, RunWriter, connect

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
    skipped_files: dict[str, int] = Field(
        default_factory=dict, description="files found inside directories and not read, by reason (hidden, .csv, ...)")
    dsat: int = 0
    sat: int = 0
    neutral: int = 0
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


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] += time.perf_counter() - t0


def _stats_of(detector: Detector) -> dict:
    stats = getattr(detector, "stats", None)
    if stats is None:
        return {}
    if isinstance(stats, BaseModel):
        return stats.model_dump()
    return dict(getattr(stats, "__dict__", {})) or {}


def judge_selection(exchanges: pl.DataFrame, verdicts: pl.DataFrame, config: MineConfig) -> pl.DataFrame:
    """The exchanges the LLM judge should see, by `config.judge.judge_on` (the cascade)."""
    assert config.judge is not None
    with_feedback = exchanges.filter(pl.col("feedback").is_not_null())
    mode = config.judge.judge_on
    if mode == "all":
        return with_feedback
    lo, hi = config.fuse.uncertain_band
    pick = pl.col("label") if mode == "candidates" else pl.col("score").is_between(lo, hi, closed="left")
    ids = verdicts.filter(pick).select("exchange_id")
    return with_feedback.join(ids, on="exchange_id", how="semi")


def run_detectors(
    exchanges: pl.DataFrame,
    config: MineConfig,
    cache: Cache | None = None,
    detectors: Sequence[Detector] | None = None,
    timer: _Timer | None = None,
    turns: pl.DataFrame | None = None,
    cascade: Counter[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run the configured detectors (cheap ones first, then the judge on its cascade) and fuse.

    `turns` lets the judge's exchanges get their context when `exchanges` was built without it;
    `cascade` counts the exchanges the judge could have seen (`eligible`) and was given (`sent_to_judge`).
    """
    timer = timer or _Timer()
    if detectors is None:
        detectors = [build_detector(n, config, cache) for n in config.detectors]
    fuse_config = config.fuse.model_copy(update={"threshold": fused_threshold(config.fuse.threshold, detectors)})
    found = [empty(DETECTIONS)]
    judge = None
    for det in detectors:
        if det.name == "judge":
            judge = det
            continue
        with timer(f"detect:{det.name}"):
            found.append(det.detect(exchanges))
    with timer("fuse"):
        detections = pl.concat(found, how="vertical_relaxed")
        verdicts = fuse(detections, fuse_config)
    if judge is not None:
        selected = judge_selection(exchanges, verdicts, config)
        if cascade is not None:
            cascade["eligible"] += int(exchanges["feedback"].is_not_null().sum())
            cascade["sent_to_judge"] += selected.height
        if turns is not None:
            selected = attach_context(selected, turns)
        with timer("detect:judge"):
            found.append(judge.detect(selected))
        with timer("fuse"):
            detections = pl.concat(found, how="vertical_relaxed")
            verdicts = fuse(detections, fuse_config)
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

    `topics`: once the store is committed, cluster its requests into topics as well (`dsatkit topics`,
    under the same lock and through the same embedding cache); the result's `topics` holds them."""
    from dsatkit.logs import read_logs

    config = config or MineConfig()
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
    lock = OutputLock(out).acquire()  # one run at a time per directory: a second is refused at once
    started = dt.datetime.now(dt.UTC)
    summary = MineSummary(run_id=uuid.uuid4().hex[:12])
    topics_result = None
    timer = _Timer()
    reasons: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    cascade: Counter[str] = Counter()
    files: set[str] = set()
    # a reader thread reads the next batch while this one is mined ("read" times the wait for it);
    # the first is read while the store and the detectors are set up
    reader = read_logs([str(p) for p in paths], config.read)
    summary.skipped_files = dict(reader.skipped)
    batches = ReadAhead(reader)
    cache = Cache(out / CACHE_NAME)
    writer = RunWriter(out, config.store.text_compression)
    try:
        detectors = [build_detector(n, config, cache) for n in config.detectors]
        with progress() as bar:
            task = bar.add_task("mining", total=None, unit="conversations")
            def process(batch) -> None:
                # a function of its own, so that none of a batch's frames outlive it: while the next
                # batch is read, only the writer still holds this one. The turns go to the store at
                # once, to be written while the batch is mined.
                with timer("store"):
                    writer.append_many([("turns", batch.turns), ("quarantine", batch.quarantine)])
                files.add(batch.source_file)
                summary.rows_read += batch.rows_read
                summary.quarantined += batch.quarantine.height
                reasons.update(dict(batch.quarantine["reason"].value_counts().iter_rows()))
                with timer("exchanges"):
                    ex = build_exchanges(batch.turns, context=False)
                with timer("store"):  # each table goes to the writer as soon as it is ready: its
                    writer.append_many([("exchanges", ex)])  # lanes then keep busy through the batch
                detections, verdicts = run_detectors(ex, config, cache, detectors, timer, batch.turns, cascade)
                with timer("store"):
                    writer.append_many([("detections", detections), ("verdicts", verdicts)])
                with timer("pairs"):
                    dsat, pairs, no_prompt = dsat_and_pairs(ex, verdicts, batch.turns)
                    summary.no_prompt += no_prompt
                n_conv = batch.conversations
                summary.conversations += n_conv
                summary.turns += batch.turns.height
                summary.exchanges += ex.height
                summary.with_feedback += ex["feedback"].is_not_null().sum()
                for pol, n in verdicts["polarity"].value_counts().iter_rows():
                    setattr(summary, pol, getattr(summary, pol) + n)
                dsat_categories = verdicts.filter(pl.col("label"))["category"].fill_null("uncategorised")
                categories.update(dict(dsat_categories.value_counts().iter_rows()))
                summary.pairs += pairs.height
                summary.seed_pairs += int((pairs["origin"] == "seed").sum())
                with timer("store"):
                    writer.append_many([("dsat", dsat), ("pairs", pairs)])
                bar.update(task, advance=n_conv)

            while True:
                with timer("read"):
                    batch = next(batches, None)
                if batch is None:
                    break
                process(batch)
                del batch
        summary.files = len(files)
        summary.quarantine_reasons = dict(reasons.most_common())
        summary.dsat_by_category = dict(categories.most_common())
        stats = {d.name: _stats_of(d) for d in detectors}
        summary.detectors = {name: s for name, s in stats.items() if s}
        if cascade:
            cascade["saved"] = cascade["eligible"] - cascade["sent_to_judge"]
            summary.judge_cascade = dict(cascade)
        with timer("commit"):
            summary.timings_s = {k: round(v, 3) for k, v in timer.totals.items()}
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
        summary.timings_s = {k: round(v, 3) for k, v in timer.totals.items()}
        if topics is not None:
            from dsatkit.topics import build_topics

            topics_result = build_topics(out, topics, cache=cache, take_lock=False)
    except BaseException:
        writer.abort()
        raise
    finally:
        batches.close()
        cache.close()
        lock.release()
    return MineResult(out, summary, keepalive, topics_result)
