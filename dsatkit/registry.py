"""The one registry of detectors: name -> class, without importing any of them.

Built-in detectors are lazy "module:Class" entries, so that a run imports only the detectors it uses
(the judge's HTTP client, sentence-transformers and torch are heavy). Other detectors join with
`register_detector(name, cls)` (a class, or a "module:Class" string), or from a plugin package through
the `dsatkit.detectors` entry-point group (`name = "package.module:Class"`), which makes them usable from
the CLI's `--detectors` and a config's `detectors:` list without code. This module imports no Polars,
so `dsatkit.config` can validate detector names against it cheaply.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsatkit.detectors import Detector

ENTRY_POINT_GROUP = "dsatkit.detectors"
"""The entry-point group a plugin package declares its detectors in."""

_DETECTORS: dict[str, str | type] = {
    "learned": "dsatkit.detectors.learned:LearnedDetector",
    "lexical": "dsatkit.detectors.lexical:LexicalDetector",
    "embedding": "dsatkit.detectors.embedding:EmbeddingDetector",
    "judge": "dsatkit.detectors.judge:JudgeDetector",
}
_plugins_loaded = False


def register_detector(name: str, cls: type | str) -> None:
    """Make the detector class `cls` (a `dsatkit.detectors.Detector` subclass, or its "module:Class"
    path) available under `name`; a later registration of the same name replaces the earlier one."""
    _DETECTORS[name] = cls


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _DETECTORS.setdefault(ep.name, ep.value)  # a name registered in code wins


def detector_names() -> list[str]:
    """Every registered detector name (built-ins, `register_detector`, plugins), in registration order."""
    _load_plugins()
    return list(_DETECTORS)


def detector_class(name: str) -> type[Detector]:
    """The class registered under `name` (imported now, if it was a lazy entry); KeyError if none is."""
    _load_plugins()
    entry = _DETECTORS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = _DETECTORS[name] = getattr(importlib.import_module(module), attr)
    return entry
