"""Detectors: stages that map an EXCHANGES frame to a DETECTIONS frame, registered by name.

A detector is a `Detector` subclass (a `dsatkit.stages.Stage`): `name`, `version`, `detect(exchanges)
-> detections`, an optional stored `threshold`, a `from_config(config, cache)` that builds it from the
run's MineConfig, and the cascade hook `select(exchanges, verdicts)`. Names map to classes in one
registry (dsatkit.registry); a new detector is one file plus one `register_detector` line (see
docs/detectors.md). The same object runs in the local executor or inside a Ray worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import polars as pl
from pydantic import BaseModel

from dsatkit.errors import ConfigError
from dsatkit.registry import detector_class, detector_names, register_detector
from dsatkit.stages.base import Frames, Stage

if TYPE_CHECKING:
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig

__all__ = [
    "DEFAULT_THRESHOLD", "Detector", "build_detector", "detector_names", "fused_threshold", "register_detector",
    "threshold_of",
]

DEFAULT_THRESHOLD = 0.5
"""The score at which a detector without a stored threshold says DSAT."""


class Detector(Stage):
    """A detector stage. Subclasses set `name` and implement `detect`; they may also set:

    - `threshold` (attribute or property): the score at which this detector alone says DSAT, when it
      stores one (the learned detector's is chosen by cross-validation); None: DEFAULT_THRESHOLD.
    - `Config`: a pydantic model of its settings, read from the `stages: {name: {...}}` section of the
      MineConfig (unknown keys are errors) and handed to `__init__` by the default `from_config`.
    - `cascade = True` and `select`: the detector sees only the exchanges `select` picks from the cheap
      detectors' fused verdicts (the LLM judge); the verdicts are then fused again with its detections.
    """

    reads: ClassVar = {"exchanges": ("exchange_id", "feedback")}
    writes: ClassVar = ("detections",)
    threshold: float | None = None
    Config: ClassVar[type[BaseModel] | None] = None
    cascade: ClassVar[bool] = False
    cached: ClassVar[bool] = False
    """Whether it keeps entries in the run's content cache (`from_config`'s `cache`): the Ray executor
    then hands its workers a snapshot of the cache."""

    @property
    def label(self) -> str:
        return f"detect:{self.name}"

    @classmethod
    def from_config(cls, config: MineConfig, cache: Cache | None = None) -> Detector:
        """This detector as the run's config asks for it: by default `cls()`, or `cls(section)` with its
        `Config` validated from `config.stages[name]` (an empty section when absent)."""
        if cls.Config is None:
            if config.stages.get(cls.name):
                raise ConfigError(f"config stages.{cls.name}: detector {cls.name!r} takes no settings there",
                                  hint=f"remove stages.{cls.name}, or give the detector a Config")
            return cls()
        from dsatkit.config import validate

        return cls(validate(cls.Config, config.stages.get(cls.name, {}), source=f"config stages.{cls.name}"))

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """One DETECTIONS row (dsatkit.schema.DETECTIONS) per exchange it has evidence on."""
        raise NotImplementedError

    def select(self, exchanges: pl.DataFrame, verdicts: pl.DataFrame) -> pl.DataFrame | None:
        """The exchanges this detector should see, given the cheap detectors' fused `verdicts`; None
        (the default): every exchange, before fusion."""
        return None

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        return {"detections": self.detect(frames["exchanges"])}


class Wrapped(Detector):
    """A detector given as a plain object with `name`, `version` and `detect` (no Stage subclass), run as
    a stage: its `threshold` and `cascade`/`select`, when it has them, are its own."""

    def __init__(self, inner: object):
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.version = inner.version  # type: ignore[attr-defined]
        self.threshold = getattr(inner, "threshold", None)
        self.cascade = getattr(inner, "cascade", False)  # type: ignore[misc]

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        return self.inner.detect(exchanges)  # type: ignore[attr-defined]

    def select(self, exchanges: pl.DataFrame, verdicts: pl.DataFrame) -> pl.DataFrame | None:
        select = getattr(self.inner, "select", None)
        return None if select is None else select(exchanges, verdicts)


def as_stage(detector: object) -> Detector:
    """`detector` itself when it is a Detector stage, else wrapped as one (`Wrapped`)."""
    return detector if isinstance(detector, Detector) else Wrapped(detector)


def build_detector(name: str, config: MineConfig, cache: Cache | None = None) -> Detector:
    """The detector registered under `name`, built from `config` (its heavy imports happen now, and only
    for the detectors asked for). ConfigError when no detector has that name."""
    try:
        cls = detector_class(name)
    except KeyError:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(detector_names())}") from None
    return cls.from_config(config, cache)


def threshold_of(detector: object) -> float:
    """The score at which `detector` alone says DSAT: its stored `threshold`, else DEFAULT_THRESHOLD."""
    threshold = getattr(detector, "threshold", None)
    return DEFAULT_THRESHOLD if threshold is None else float(threshold)


def cheap(detectors: Sequence[object]) -> list:
    """The detectors that see every exchange (not a cascade stage)."""
    return [d for d in detectors if not getattr(d, "cascade", False)]


def fused_threshold(configured: float | None, detectors: Sequence[object]) -> float:
    """The fused verdict's threshold: the configured one; else, when one cheap detector runs (with or
    without a cascade detector), its own threshold; else DEFAULT_THRESHOLD."""
    if configured is not None:
        return configured
    found = cheap(detectors)
    return threshold_of(found[0]) if len(found) == 1 else DEFAULT_THRESHOLD
