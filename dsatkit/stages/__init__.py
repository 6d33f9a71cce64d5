"""Stages: the `Stage` base (dsatkit.stages.base) and the mine flow built from it (dsatkit.stages.flow)."""

from dsatkit.stages.base import Frames, Stage, StageError, StageStats

__all__ = ["Frames", "Stage", "StageError", "StageStats"]
