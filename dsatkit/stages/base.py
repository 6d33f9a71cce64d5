"""The `Stage` base: a named, versioned step that maps named Polars frames to new named frames.

A stage declares the frames and columns it reads (`reads`: frame name -> columns) and the frames it
writes (`writes`); `process(frames) -> frames` does the work, and calling the stage checks its input,
times the call and counts rows in its `stats` (a pydantic model; a stage with counters of its own
subclasses `StageStats`). Stages know nothing of threads, processes or clusters: an executor runs them
(dsatkit.executors), the same code on one machine or in a Ray worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar

import polars as pl
from pydantic import BaseModel

from dsatkit.errors import DsatkitError

Frames = Mapping[str, pl.DataFrame]
"""The frames a batch has so far, by name: turns, exchanges, detections, verdicts, dsat, pairs."""


class StageError(DsatkitError):
    """A stage was given frames without the columns it reads (a custom stage's or a plugin's mistake)."""

    hint = "check the stage's `reads` against the frames before it (docs/architecture.md lists them)"


class StageStats(BaseModel):
    """What a stage did. A field is a counter (`merge` adds numbers, ors flags and keeps the last
    non-empty text, so the stats of one stage run in several workers add up to the whole run's), or,
    when its default is None, a setting the stage reports (the same in every batch: the first kept)."""

    batches: int = 0
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0

    def merge(self, other: StageStats) -> None:
        """Add the counters of `other` (the same stage's stats from another batch or worker) to these."""
        for name, info in type(self).model_fields.items():
            mine, theirs = getattr(self, name), getattr(other, name, None)
            if theirs is None:
                continue
            if info.default is None:  # a setting, not a counter
                if mine is None:
                    setattr(self, name, theirs)
            elif isinstance(mine, bool):
                setattr(self, name, mine or theirs)
            elif isinstance(mine, (int, float)):
                setattr(self, name, mine + theirs)
            elif isinstance(mine, str):
                setattr(self, name, theirs or mine)


class Stage:
    """A step of the mine flow. Subclasses set `name`, `reads`, `writes` and implement `process`.

    In: `frames`, the batch's frames by name (each frame holds whole conversations). Out: the frames
    this stage writes, by name. `stats` counts its batches, rows (of its first read and first written
    frame) and seconds; `Stats` names the model to count in.
    """

    name: ClassVar[str] = ""
    version: str = "1"
    reads: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    writes: ClassVar[tuple[str, ...]] = ()
    Stats: ClassVar[type[StageStats]] = StageStats
    gpus: ClassVar[float] = 0.0
    """GPUs one instance puts to use (a model on CUDA). The Ray executor reserves the most any of the
    run's detectors asks for, per worker, when the cluster has GPUs (`ray.gpus_per_worker` overrides)."""

    @property
    def label(self) -> str:
        """The stage's name in the run's timings."""
        return self.name

    @property
    def stats(self) -> StageStats:
        stats = self.__dict__.get("_stats")
        if stats is None:
            stats = self.__dict__["_stats"] = self.Stats()
        return stats

    @stats.setter
    def stats(self, value: StageStats) -> None:
        self.__dict__["_stats"] = value

    def take_stats(self) -> StageStats:
        """The stats so far, leaving fresh ones in their place (a worker reports them per input file)."""
        taken = self.stats
        self.stats = type(taken)()
        return taken

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        """Do the work: the frames this stage writes, computed from those it reads."""
        raise NotImplementedError

    def check(self, frames: Frames) -> None:
        """Raise StageError (one line) naming the frames or columns this stage reads that `frames` lacks."""
        missing = []
        for frame, columns in self.reads.items():
            if frame not in frames:
                missing.append(f"frame {frame!r}")
                continue
            have = set(frames[frame].columns)
            missing += [f"{frame}.{c}" for c in columns if c not in have]
        if missing:
            raise StageError(f"stage {self.name!r} reads {', '.join(missing)}, which its input lacks")

    def __call__(self, frames: Frames) -> dict[str, pl.DataFrame]:
        self.check(frames)
        t0 = time.perf_counter()
        out = self.process(frames)
        stats = self.stats
        stats.seconds += time.perf_counter() - t0
        stats.batches += 1
        if self.reads:
            stats.rows_in += frames[next(iter(self.reads))].height
        if self.writes:
            stats.rows_out += out[self.writes[0]].height
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"
