"""Executors run the mine stages over the input files and hand the tables to the store writer.

- `LocalExecutor` (default): this process. A reader thread reads the next batch (ReadAhead) while the
  main thread mines this one (`mine_batch`) and the store writer's threads write the one before.
- `RayExecutor` (dsatkit.executors.ray, `executor: ray`): Ray workers read and mine one input file each,
  write its tables as Arrow part files, and this process streams finished files into the store.

Both fill the same `MineJob` (counts, stage stats, timings): the store and the run summary do not
know which executor ran. Stages know nothing of either.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig
    from dsatkit.logs import LogBatch
    from dsatkit.logs.files import Found
    from dsatkit.stages import StageStats
    from dsatkit.stages.flow import MineCounts, MineStages
    from dsatkit.store import RunWriter


class Timer:
    """Seconds per named step, summed over the run (`with timer("store"): ...`)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[step] += time.perf_counter() - t0


@dataclass
class MineJob:
    """One mine run as an executor sees it. In: the input files, the output directory, the config, the
    store writer and the detectors' cache. Out (filled by the executor): counts, the stages' stats by
    stage name (merged over batches and workers), and timings (`timer`, plus `stage_seconds`)."""

    found: Found
    out: Path
    config: MineConfig
    writer: RunWriter
    cache: Cache | None
    counts: MineCounts
    stats: dict[str, StageStats] = field(default_factory=dict)
    timer: Timer = field(default_factory=Timer)
    labels: dict[str, str] = field(default_factory=dict)
    """Each stage's name in the run's timings (`Stage.label`: "detect:lexical" for a detector)."""
    resumed: list[str] = field(default_factory=list)
    """Input files not mined again: a killed earlier run had finished them (Ray executor)."""
    driver_files: list[str] = field(default_factory=list)
    """Input files the Ray executor's driver mined itself (while the cluster started, or because they
    repeat an earlier file's conversation ids)."""
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    """What the caller runs once the store is committed (the Ray executor removes its part files)."""

    def add_stats(self, stats: dict[str, StageStats], labels: dict[str, str] | None = None) -> None:
        """Merge stage stats (by stage name) into the run's."""
        for name, s in stats.items():
            if name in self.stats:
                self.stats[name].merge(s)
            else:
                self.stats[name] = s
        self.labels.update(labels or {})


class Executor(Protocol):
    """Runs a MineJob: reads `job.found.files`, mines every batch with the mine stages, appends the store
    tables to `job.writer` (turns, quarantine, exchange_index, detections, verdicts, dsat_records, pairs)
    and fills the job's counts, stats and timings. The caller commits the store.

    `start(found, config)` is called before the store is opened (work that may begin early), `close()`
    at the end of the run, whatever happened."""

    def start(self, found: Found, config: MineConfig) -> None: ...

    def run(self, job: MineJob) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """This process: a reader thread, the mine stages in the calling thread, the writer's threads."""

    def __init__(self) -> None:
        self._batches = None

    def start(self, found: Found, config: MineConfig) -> None:
        """Start the reader thread: the first batch is read while the store and the detectors are set up."""
        from dsatkit.logs import LogReader
        from dsatkit.readahead import ReadAhead

        self._batches = ReadAhead(LogReader(found, config.read))

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()

    def run(self, job: MineJob) -> None:
        from dsatkit.progress import progress
        from dsatkit.stages.flow import MineStages

        if self._batches is None:
            self.start(job.found, job.config)
        batches, timer = self._batches, job.timer

        def read() -> Iterator[LogBatch]:
            """The batches, each wait for the reader thread timed as 'read'."""
            while True:
                with timer("read"):
                    batch = next(batches, None)
                if batch is None:
                    return
                yield batch

        try:
            stages = MineStages.from_config(job.config, job.cache)  # while the first batch is read
            with progress() as bar:
                task = bar.add_task("mining", total=None, unit="conversations")
                mine_into_store(job, read(), stages, job.counts, lambda n: bar.update(task, advance=n))
        finally:
            self.close()
        job.add_stats(stages.take_stats(), {s.name: s.label for s in stages.all()})


def mine_into_store(job: MineJob, batches: Iterable[LogBatch], stages: MineStages, counts: MineCounts,
                    mined: Callable[[int], None] | None = None) -> None:
    """Mine `batches` with `stages` into `job.writer`, adding to `counts`; `mined` is told each batch's
    conversations once it is mined. Each table goes to the writer as soon as it is ready (the turns
    first, to be written while the batch is mined), so the writer's lanes keep busy through the batch."""
    from dsatkit.stages.flow import mine_batch

    def emit(tables: list) -> None:
        with job.timer("store"):
            job.writer.append_many(tables)

    for batch in batches:
        emit([("turns", batch.turns), ("quarantine", batch.quarantine)])
        counts.add_read(batch.rows_read, batch.conversations, batch.turns, batch.quarantine, batch.source_file)
        counts.add(mine_batch(batch.turns, stages, emit).counts)
        if mined is not None:
            mined(batch.conversations)
        del batch  # none of a batch's frames outlive it: only the writer holds them


def executor_for(config: MineConfig) -> Executor:
    """The executor `config.executor` names (Ray is imported only when asked for)."""
    if config.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            from dsatkit.errors import ConfigError

            raise ConfigError("executor 'ray' needs Ray, which is not installed",
                              hint="pip install 'dsatkit[ray]' (or run with --executor local)") from None
        from dsatkit.executors.ray import RayExecutor

        return RayExecutor(config.ray)
    return LocalExecutor()
