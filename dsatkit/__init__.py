"""dsatkit: mine user dissatisfaction from chat logs into preference data; train DRIFT rounds on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# process-wide settings (Polars' allocator) are not set on import: see dsatkit.runtime.configure_process

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
