"""Process-wide settings, in one named place, applied at start-up (never on import).

`configure_process()` is called first thing by the CLI's entry point (`dsatkit.cli.main`) and by the
bench scripts, before Polars is imported (its allocator reads its settings once, when it loads).
Library users who import dsatkit in their own program call it themselves if they want it.
"""

from __future__ import annotations

import os

JEMALLOC_DECAY = "dirty_decay_ms:10000,muzzy_decay_ms:0"
"""Polars' allocator (jemalloc) is built to hand freed pages back to the OS after 0.5-1 s. A mine run
frees a batch's buffers and allocates the next batch's about a second later, so every page was faulted
in again: ~1M extra page faults, ~3 CPU-s of system time per 1M conversations. jemalloc's own defaults
(keep freed pages 10 s) avoid that for ~10% more peak memory."""


def configure_process() -> None:
    """Set the process-wide settings dsatkit runs best with; a user's own setting always wins.

    In: nothing. Out: nothing; sets `_RJEM_MALLOC_CONF` (Polars' jemalloc) when unset. It only matters
    when called before `polars` is first imported."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_DECAY)
