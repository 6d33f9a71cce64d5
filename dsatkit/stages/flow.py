"""The mine flow as stages: turns -> exchanges -> detections -> verdicts -> dsat + pairs.

    stages = MineStages.from_config(config, cache)
    mined = mine_batch(batch.turns, stages)      # MinedBatch: the store's tables and the counts

`mine_batch` is the one place that composes the stages; both executors (dsatkit.executors) call it, the
local one in its main thread, the Ray one in its workers. Frames between the stages:

- turns (TURNS) -> ExchangesStage -> exchanges (EXCHANGES, context left null: costly, and only the judge
  and the DSAT rows need it);
- exchanges -> each cheap Detector -> detections (DETECTIONS, long) -> FuseStage -> verdicts (VERDICTS);
- then each cascade detector (the judge) on the exchanges its `select` picks, and FuseStage again;
- exchanges + verdicts + turns -> PairsStage -> dsat (DSAT records) and pairs (PAIRS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl
from pydantic import BaseModel, Field

from dsatkit.config import FuseConfig, MineConfig
from dsatkit.detectors import Detector, as_stage, build_detector, cheap, fused_threshold
from dsatkit.exchanges import build_exchanges
from dsatkit.fuse import fuse
from dsatkit.pairs import dsat_and_pairs
from dsatkit.schema import DETECTIONS, empty
from dsatkit.stages.base import Frames, Stage, StageStats

Emit = Callable[[list[tuple[str, pl.DataFrame]]], None]
"""Where `mine_batch` hands each store table as soon as it is ready: (store table name, frame) pairs."""


class ExchangesStage(Stage):
    """TURNS -> EXCHANGES (dsatkit.exchanges.build_exchanges), without the context column (filled later
    for the rows that need it). Input columns: turns.conversation_id, turn_index, role, content.
    Output: exchanges."""

    name = "exchanges"
    reads = {"turns": ("conversation_id", "turn_index", "role", "content")}  # noqa: RUF012
    writes = ("exchanges",)

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        return {"exchanges": build_exchanges(frames["turns"], context=False)}


class FuseStats(StageStats):
    threshold: float | None = Field(None, description="the fused score at or above which an exchange was DSAT")


class FuseStage(Stage):
    """DETECTIONS -> VERDICTS (dsatkit.fuse.fuse) with the run's fused threshold.
    Input columns: detections.exchange_id, detector, score, label, category. Output: verdicts."""

    name = "fuse"
    reads = {"detections": ("exchange_id", "detector", "score", "label", "category")}  # noqa: RUF012
    writes = ("verdicts",)
    Stats = FuseStats

    def __init__(self, config: FuseConfig):
        self.config = config

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        self.stats.threshold = self.config.threshold
        return {"verdicts": fuse(frames["detections"], self.config)}


class PairsStats(StageStats):
    no_prompt: int = Field(0, description="DSAT records left without a pair for want of a prompt")


class PairsStage(Stage):
    """EXCHANGES + VERDICTS -> DSAT records and PAIRS (dsatkit.pairs.dsat_and_pairs); the DSAT rows get
    their context from the turns. Input columns: exchanges.exchange_id, conversation_id, response_turn,
    request, response, feedback, followup, followup_turn; verdicts.exchange_id, label, polarity, category,
    score, detectors; turns (for the context). Output: dsat, pairs."""

    name = "pairs"
    reads = {  # noqa: RUF012
        "exchanges": ("exchange_id", "conversation_id", "response_turn", "request", "response", "feedback",
                      "followup", "followup_turn"),
        "verdicts": ("exchange_id", "label", "polarity", "category", "score", "detectors"),
        "turns": ("conversation_id", "turn_index", "role", "content"),
    }
    writes = ("dsat", "pairs")
    Stats = PairsStats

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        dsat, pairs, no_prompt = dsat_and_pairs(frames["exchanges"], frames["verdicts"], frames["turns"])
        self.stats.no_prompt += no_prompt
        return {"dsat": dsat, "pairs": pairs}


@dataclass
class MineStages:
    """The stages of one run, in order: exchanges, the detectors (cheap ones, then cascade ones), fuse, pairs."""

    detectors: list[Detector]
    fuse: FuseStage
    exchanges: ExchangesStage = field(default_factory=ExchangesStage)
    pairs: PairsStage = field(default_factory=PairsStage)

    @classmethod
    def from_config(cls, config: MineConfig, cache=None, detectors: Sequence[Detector] | None = None) -> MineStages:
        """The run's stages: `detectors` (default: `config.detectors` built through the registry, their
        state in `cache`) and a fuse stage whose threshold is resolved from them (`fused_threshold`)."""
        if detectors is None:
            detectors = [build_detector(n, config, cache) for n in config.detectors]
        threshold = fused_threshold(config.fuse.threshold, detectors)
        return cls([as_stage(d) for d in detectors], FuseStage(config.fuse.model_copy(update={"threshold": threshold})))

    def all(self) -> list[Stage]:
        return [self.exchanges, *self.detectors, self.fuse, self.pairs]

    def take_stats(self) -> dict[str, StageStats]:
        """Each stage's stats so far, by name, leaving fresh ones (see `Stage.take_stats`)."""
        return {s.name: s.take_stats() for s in self.all()}


class MineCounts(BaseModel):
    """What a run (or one batch, or one input file) read and found; counts add up with `add`."""

    files: list[str] = Field(default_factory=list, description="input files read, in order")
    rows_read: int = 0
    conversations: int = 0
    turns: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    exchanges: int = 0
    with_feedback: int = 0
    dsat: int = 0
    sat: int = 0
    neutral: int = 0
    dsat_by_category: dict[str, int] = Field(default_factory=dict)
    pairs: int = 0
    seed_pairs: int = 0
    no_prompt: int = 0
    cascade: dict[str, int] = Field(
        default_factory=dict, description="exchanges the cascade detectors could see (eligible) and saw (sent)")

    def add(self, other: MineCounts) -> None:
        """Add `other`'s counts to these (files are appended, those already listed kept once)."""
        for name in type(self).model_fields:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "files":
                mine.extend(f for f in theirs if f not in mine)
            elif isinstance(mine, dict):
                merged = dict(mine)
                for key, n in theirs.items():
                    merged[key] = merged.get(key, 0) + n
                setattr(self, name, merged)
            else:
                setattr(self, name, mine + theirs)

    def add_read(self, rows_read: int, conversations: int, turns: pl.DataFrame, quarantine: pl.DataFrame,
                 source_file: str) -> None:
        """Count one read batch (dsatkit.logs.LogBatch's fields)."""
        if source_file not in self.files:
            self.files.append(source_file)
        self.rows_read += rows_read
        self.conversations += conversations
        self.turns += turns.height
        self.quarantined += quarantine.height
        for reason, n in quarantine["reason"].value_counts().iter_rows():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + n


@dataclass
class MinedBatch:
    """What `mine_batch` made of one batch of turns: the store's tables (by store table name) and counts."""

    tables: dict[str, pl.DataFrame]
    counts: MineCounts


def detect_and_fuse(frames: Frames, stages: MineStages) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """The detector and fuse stages over `frames["exchanges"]`: the cheap detectors on every exchange,
    fused; then each cascade detector on what its `select` picks from those verdicts, fused again.

    Out: DETECTIONS (long, the detectors' rows in stage order), VERDICTS, and the cascade's counts
    (`eligible`: exchanges with feedback; `sent_to_judge`: exchanges the cascade detectors were given;
    empty when no cascade detector runs)."""
    frames = dict(frames)
    ex = frames["exchanges"]
    found = [empty(DETECTIONS)]
    first = cheap(stages.detectors)
    for det in first:
        found.append(det(frames)["detections"])
    frames["detections"] = pl.concat(found, how="vertical_relaxed")
    frames.update(stages.fuse(frames))
    cascade: dict[str, int] = {}
    for det in (d for d in stages.detectors if d not in first):
        selected = det.select(ex, frames["verdicts"])
        if selected is None:
            selected = ex
        cascade["eligible"] = cascade.get("eligible", 0) + int(ex["feedback"].is_not_null().sum())
        cascade["sent_to_judge"] = cascade.get("sent_to_judge", 0) + selected.height
        found.append(det({**frames, "exchanges": selected})["detections"])
        frames["detections"] = pl.concat(found, how="vertical_relaxed")
        frames.update(stages.fuse(frames))
    return frames["detections"], frames["verdicts"], cascade


def mine_batch(turns: pl.DataFrame, stages: MineStages, emit: Emit | None = None) -> MinedBatch:
    """Run the mine stages over one batch of TURNS (whole conversations).

    In: `turns`, the run's `stages`, and `emit`, called with each store table as soon as it is ready (so a
    writer can start on it while the next stage runs). Out: a MinedBatch with the tables exchange_index,
    detections, verdicts, dsat_records, pairs and the batch's counts (the turns are the caller's to store).
    """
    tables: dict[str, pl.DataFrame] = {}

    def ready(**named: pl.DataFrame) -> None:
        tables.update(named)
        if emit is not None:
            emit(list(named.items()))

    counts = MineCounts()
    frames: dict[str, pl.DataFrame] = {"turns": turns}
    frames.update(stages.exchanges(frames))
    ex = frames["exchanges"]
    ready(exchange_index=ex)
    frames["detections"], frames["verdicts"], counts.cascade = detect_and_fuse(frames, stages)
    verdicts = frames["verdicts"]
    ready(detections=frames["detections"], verdicts=verdicts)
    no_prompt_before = stages.pairs.stats.no_prompt
    frames.update(stages.pairs(frames))
    pairs = frames["pairs"]

    counts.exchanges = ex.height
    counts.with_feedback = int(ex["feedback"].is_not_null().sum())
    for polarity, n in verdicts["polarity"].value_counts().iter_rows():
        setattr(counts, polarity, getattr(counts, polarity) + n)
    dsat_categories = verdicts.filter(pl.col("label"))["category"].fill_null("uncategorised")
    counts.dsat_by_category = dict(dsat_categories.value_counts().iter_rows())
    counts.pairs = pairs.height
    counts.seed_pairs = int((pairs["origin"] == "seed").sum())
    counts.no_prompt = stages.pairs.stats.no_prompt - no_prompt_before
    ready(dsat_records=frames["dsat"], pairs=pairs)
    return MinedBatch(tables, counts)
