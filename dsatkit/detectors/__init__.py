"""Detectors map an EXCHANGES frame to a DETECTIONS frame.

A detector is any object with `name`, `version` and `detect(exchanges) -> detections`; being a plain
object, the same code runs inside a Ray Data `map_batches` when one machine is not enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import polars as pl

if TYPE_CHECKING:
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig

DETECTOR_NAMES: tuple[str, ...] = ("learned", "lexical", "embedding", "judge")
DEFAULT_THRESHOLD = 0.5
"""The score at which a detector without a stored threshold says DSAT."""


@runtime_checkable
class Detector(Protocol):
    """`threshold` (optional attribute): the score at which this detector alone says DSAT, when it
    stores one (the learned detector's is chosen by cross-validation); others use DEFAULT_THRESHOLD."""

    name: str
    version: str

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """Return one DETECTIONS row per exchange (schema `dsatkit.schema.DETECTIONS`)."""
        ...


def build_detector(name: str, config: MineConfig, cache: Cache | None = None) -> Detector:
    """Instantiate one detector by name; heavy imports happen only for the detectors asked for."""
    if name == "learned":
        from dsatkit.detectors.learned import LearnedDetector

        return LearnedDetector(config.learned.detector_dir)
    if name == "lexical":
        from dsatkit.detectors.lexical import LexicalDetector

        return LexicalDetector()
    if name == "embedding":
        from dsatkit.detectors.embedding import EmbeddingDetector

        return EmbeddingDetector(config.embedding, cache=cache)
    if name == "judge":
        from dsatkit.detectors.judge import JudgeDetector

        assert config.judge is not None
        return JudgeDetector(config.judge, cache=cache)
    raise ValueError(f"unknown detector {name!r}")


def threshold_of(detector: Detector) -> float:
    """The score at which `detector` alone says DSAT."""
    return float(getattr(detector, "threshold", DEFAULT_THRESHOLD))


def fused_threshold(configured: float | None, detectors: Sequence[Detector]) -> float:
    """The fused verdict's threshold: the configured one; else, when one cheap detector runs (with or
    without the judge), its own threshold; else DEFAULT_THRESHOLD."""
    if configured is not None:
        return configured
    cheap = [d for d in detectors if d.name != "judge"]
    return threshold_of(cheap[0]) if len(cheap) == 1 else DEFAULT_THRESHOLD
