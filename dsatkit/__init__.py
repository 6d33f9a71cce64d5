"""dsatkit: mine user dissatisfaction from chat logs into preference data; train DRIFT rounds on it."""

from __future__ import annotations

__version__ = "0.1.0"
