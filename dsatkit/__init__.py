"""dsatkit: mine user dissatisfaction from chat logs into preference data; train DRIFT rounds on it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Polars' allocator (jemalloc) is built to hand freed pages back to the OS after 0.5-1 s. A mine run
# frees a batch's buffers and allocates the next batch's about a second later, so every page was
# faulted in again: ~1M extra page faults, ~3 CPU-s of system time per 1M conversations. jemalloc's
# own defaults (keep freed pages 10 s) avoid that for ~10% more peak memory. Read once, when Polars
# loads, so it takes effect where dsatkit is imported first (the CLI, the bench); a user's setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:10000,muzzy_decay_ms:0")

__version__ = "0.1.0"
__all__ = ["MineConfig", "MineResult", "__version__", "connect", "mine"]

if TYPE_CHECKING:
    from dsatkit.config import MineConfig
    from dsatkit.pipeline import MineResult, mine
    from dsatkit.store import connect

_LAZY = {
    "mine": "dsatkit.pipeline",
    "MineResult": "dsatkit.pipeline",
    "MineConfig": "dsatkit.config",
    "connect": "dsatkit.store",
}


def __getattr__(name: str) -> Any:
    # lazy, so that `import dsatkit` (and the CLI's start-up) does not pay for Polars/DuckDB imports
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dsatkit' has no attribute {name!r}")
