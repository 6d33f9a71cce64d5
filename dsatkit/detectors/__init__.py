"""Detectors map an EXCHANGES frame to a DETECTIONS frame.

A detector is any object with `name`, `version` and `detect(exchanges) -> detections`; being a plain
object, the same code runs inside a Ray Data `map_batches` when one machine is not enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import polars as pl

if TYPE_CHECKING:
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig

DETECTOR_NAMES: tuple[str, ...] = ("lexical", "embedding", "judge")
CHEAP_DETECTORS: tuple[str, ...] = ("lexical", "embedding")


@runtime_checkable
class Detector(Protocol):
    name: str
    version: str

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """Return one DETECTIONS row per exchange (schema `dsatkit.schema.DETECTIONS`)."""
        ...


def build_detector(name: str, config: MineConfig, cache: Cache | None = None) -> Detector:
    """Instantiate one detector by name; heavy imports happen only for the detectors asked for."""
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
