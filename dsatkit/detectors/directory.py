"""A detector directory: `detector.json` (what the detector is: kind, classes, thresholds, figures) and
one `.npz` of arrays (weights). No pickle, so a directory is safe to share. The learned detector and
the embedding detector's exemplar classifier both persist this way; each owns what goes inside.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from dsatkit.errors import ConfigError

META = "detector.json"
T = TypeVar("T")


def save(out_dir: str | Path, arrays_name: str, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `meta` as detector.json and `arrays` as `arrays_name` (compressed) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / arrays_name, **arrays)
    (out / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return out


def detector_kind(path: str | Path) -> str:
    """What a detector directory holds, from its detector.json: 'learned', or 'embedding' (an exemplar
    classifier names no kind). A directory that is missing, or whose detector.json is missing or cannot
    be read, is a one-line ConfigError (a user's `--detector-dir` must not fall back to the default)."""
    meta = Path(path) / META
    hint = "pass a directory written by `dsatkit detectors fit` or `distill`"
    if not Path(path).is_dir():
        raise ConfigError(f"detector directory {path} does not exist", hint)
    try:
        kind = json.loads(meta.read_text()).get("kind", "embedding")
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a detector directory (no {META})", hint) from None
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{meta}: cannot be read ({e})", "re-run `dsatkit detectors fit`") from None
    return str(kind)


def load(path: str | Path, arrays_name: str, what: str, build: Callable[[dict, np.lib.npyio.NpzFile], T]) -> T:
    """`build(meta, arrays)` of the directory at `path`; a missing file, unreadable content or a field
    `build` cannot find is a one-line ConfigError naming the directory and `what` it should be."""
    d = Path(path)
    if not (d / META).exists() or not (d / arrays_name).exists():
        raise ConfigError(f"{d} is not a {what} directory (needs {META} and {arrays_name})",
                          "create one with `dsatkit detectors fit LABELS -o DIR`")
    try:
        return build(json.loads((d / META).read_text()), np.load(d / arrays_name))
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{d}: corrupt {what} ({e})", "re-run `dsatkit detectors fit`") from None
