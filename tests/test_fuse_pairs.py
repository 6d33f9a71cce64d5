"""Fusion of detections into verdicts, and verdicts into preference pairs."""

from __future__ import annotations

import polars as pl
import pytest

from dsatkit.config import FuseConfig
from dsatkit.exchanges import build_exchanges
from dsatkit.fuse import fuse
from dsatkit.pairs import build_pairs, dsat_and_pairs
from dsatkit.schema import DETECTIONS, PAIRS, TURNS, VERDICTS, conform


def detections(rows: list[tuple]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=["exchange_id", "detector", "score", "category"], orient="row")
    return conform(
        frame.with_columns(label=pl.col("score") >= 0.5, detector_version=pl.lit("t")), DETECTIONS
    )


def verdict(v: pl.DataFrame, exchange_id: str) -> dict:
    return v.filter(pl.col("exchange_id") == exchange_id).row(0, named=True)


def test_confident_detector_is_not_drowned_by_an_abstaining_one():
    v = fuse(detections([("e", "lexical", 0.15, None), ("e", "embedding", 0.85, "revision")]))
    assert v.schema == VERDICTS
    row = verdict(v, "e")
    assert row["label"] and row["polarity"] == "dsat" and row["category"] == "revision"
    assert row["detectors"] == "embedding"


def test_sat_evidence_gives_sat_polarity_and_category():
    v = fuse(detections([("e", "lexical", 0.05, "gratitude"), ("e", "embedding", 0.2, None)]))
    row = verdict(v, "e")
    assert not row["label"] and row["polarity"] == "sat" and row["category"] == "gratitude"


def test_no_evidence_is_neutral():
    row = verdict(fuse(detections([("e", "lexical", 0.15, None)])), "e")
    assert row["polarity"] == "neutral" and row["category"] is None and not row["label"]


def test_weights_decide_disagreements_and_strongest_dsat_category_wins():
    d = detections([("e", "lexical", 0.9, "negative_feedback"), ("e", "judge", 0.1, "gratitude")])
    assert not verdict(fuse(d), "e")["label"]  # judge weighs 2x by default
    assert verdict(fuse(d, FuseConfig(weights={"lexical": 3.0, "judge": 1.0})), "e")["label"]
    d2 = detections([("e", "lexical", 0.7, "negative_feedback"), ("e", "judge", 0.95, "factual_error")])
    assert verdict(fuse(d2), "e")["category"] == "factual_error"


def test_threshold_is_configurable():
    d = detections([("e", "lexical", 0.6, "revision")])
    assert verdict(fuse(d), "e")["label"]
    assert not verdict(fuse(d, FuseConfig(threshold=0.7)), "e")["label"]


def test_single_detector_shortcut_agrees_with_the_general_fusion():
    one = detections([("a", "lexical", 0.9, "factual_error"), ("b", "lexical", 0.05, "gratitude"),
                      ("c", "lexical", 0.15, None), ("d", "lexical", 0.55, None)])
    twins = pl.concat([one, one.with_columns(detector=pl.lit("twin"))])  # same evidence twice
    fast, general = fuse(one), fuse(twins, FuseConfig(weights={"lexical": 1.0, "twin": 1.0}))
    cols = ["exchange_id", "score", "label", "polarity", "category"]
    assert fast.select(cols).equals(general.select(cols))
    assert fast["polarity"].to_list() == ["dsat", "sat", "neutral", "dsat"]
    assert fast["detectors"].to_list() == ["lexical", None, None, "lexical"]
    assert general["detectors"].to_list() == ["lexical,twin", None, None, "lexical,twin"]


def test_fuse_config_rejects_bad_band():
    with pytest.raises(ValueError):
        FuseConfig(uncertain_band=(0.8, 0.2))


def _turns(rows: list[tuple]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows, schema=["conversation_id", "turn_index", "role", "content"], orient="row"),
                   TURNS)


_CONVERSATIONS = [
    ("c", 0, "user", "capital of australia?"),
    ("c", 1, "assistant", "Sydney."),
    ("c", 2, "user", "wrong, it's not sydney"),
    ("c", 3, "assistant", "Canberra."),
    ("c", 4, "user", "thanks!"),
    ("d", 0, "user", "hi"),
    ("d", 1, "assistant", "hello"),
    ("d", 2, "user", "that's not what I asked"),
    ("d", 3, "assistant", "sorry"),
    ("d", 4, "user", "still wrong"),
]


def _conversation(context: bool = True):
    return build_exchanges(_turns(_CONVERSATIONS), context=context)


def _verdicts_for(ex: pl.DataFrame, polarities: dict[tuple[str, int], str]) -> pl.DataFrame:
    keyed = ex.select("exchange_id", "conversation_id", "response_turn")
    rows = []
    for r in keyed.iter_rows(named=True):
        pol = polarities[(r["conversation_id"], r["response_turn"])]
        rows.append((r["exchange_id"], 0.9 if pol == "dsat" else 0.1, pol == "dsat", pol,
                     "factual_error" if pol == "dsat" else ("gratitude" if pol == "sat" else None)))
    return conform(pl.DataFrame(rows, schema=["exchange_id", "score", "label", "polarity", "category"],
                                orient="row"), VERDICTS)


def test_pairs_dsat_rows_and_natural_seed_pairs():
    ex = _conversation()
    v = _verdicts_for(ex, {("c", 1): "dsat", ("c", 3): "sat", ("d", 1): "dsat", ("d", 3): "dsat"})
    pairs = build_pairs(ex, v)
    assert pairs.schema == PAIRS
    dsat = pairs.filter(pl.col("origin") == "dsat")
    assert dsat.height == 3 and dsat["chosen"].is_null().all()
    seed = pairs.filter(pl.col("origin") == "seed")
    assert seed.height == 1  # only c: its revision was followed by thanks; d's revision was also DSAT
    row = seed.row(0, named=True)
    assert row["prompt"] == [{"role": "user", "content": "capital of australia?"}]
    assert row["rejected"] == [{"role": "assistant", "content": "Sydney."}]
    assert row["chosen"] == [{"role": "assistant", "content": "Canberra."}]
    assert row["feedback"] == "wrong, it's not sydney"


def test_pairs_are_the_same_whether_verdicts_come_row_for_row_or_in_any_order():
    """Verdicts aligned with the exchanges skip the joins; any other order (or a subset) joins."""
    ex = _conversation()
    v = _verdicts_for(ex, {("c", 1): "dsat", ("c", 3): "sat", ("d", 1): "dsat", ("d", 3): "dsat"})
    aligned = dsat_and_pairs(ex, v)
    for other in (v.reverse(), v.sample(fraction=1.0, shuffle=True, seed=3), v.head(v.height - 1)):
        dsat, pairs, _ = dsat_and_pairs(ex, other)
        if other.height == v.height:
            assert dsat.equals(aligned[0]) and pairs.equals(aligned[1])
        else:  # the exchange left out has no verdict, so no DSAT record
            assert dsat.equals(aligned[0].filter(pl.col("exchange_id") != v["exchange_id"][-1]))
    assert aligned[1].filter(pl.col("origin") == "seed").height == 1


def test_exchanges_without_a_prompt_keep_their_dsat_record_but_get_no_pair():
    """A ShareGPT part (`ID_1`) may open with the assistant; a user turn may be blank: nothing to train on."""
    turns = _turns([
        ("part_1", 0, "assistant", "...and that is the rest of the essay."),  # no user turn before it
        ("part_1", 1, "user", "no, that is wrong"),
        ("part_1", 2, "assistant", "Here is the corrected essay."),
        ("part_1", 3, "user", "thanks!"),
        ("blank", 0, "user", "   "),
        ("blank", 1, "assistant", "How can I help?"),
        ("blank", 2, "user", "that's not what I asked"),
    ])
    ex = pl.concat([_conversation(), build_exchanges(turns)])
    polarities = {("c", 1): "dsat", ("c", 3): "sat", ("d", 1): "dsat", ("d", 3): "dsat",
                  ("part_1", 0): "dsat", ("part_1", 2): "dsat", ("blank", 1): "dsat"}
    v = _verdicts_for(ex, polarities)
    result = dsat_and_pairs(ex, v)
    dsat, pairs, _ = result
    assert dsat.height == 6 and result.no_prompt == 2  # part_1's first answer and the blank request
    key = dict(zip(ex["exchange_id"], zip(ex["conversation_id"], ex["response_turn"], strict=True), strict=True))
    assert sorted(key[e] for e in pairs.filter(pl.col("origin") == "dsat")["exchange_id"]) == [
        ("c", 1), ("d", 1), ("d", 3), ("part_1", 2)]
    # part_1's first answer was revised and the revision thanked, yet no seed pair: it has no prompt
    assert [key[e] for e in pairs.filter(pl.col("origin") == "seed")["exchange_id"]] == [("c", 1)]
    assert all(any(m["role"] == "user" and m["content"].strip() for m in p) for p in pairs["prompt"])
    # the other exchanges' pairs are unchanged; a batch with none to drop counts none
    alone = dsat_and_pairs(_conversation(), _verdicts_for(_conversation(), polarities))
    assert pairs.filter(pl.col("exchange_id").is_in(alone.pairs["exchange_id"].implode())).equals(alone.pairs)
    assert alone.no_prompt == 0
    # the same when the context is filled from the turns for the DSAT rows only (the pipeline's way)
    lazy_ex = pl.concat([_conversation(context=False), build_exchanges(turns, context=False)])
    all_turns = pl.concat([_turns(_CONVERSATIONS), turns])
    lazy = dsat_and_pairs(lazy_ex, v.reverse(), all_turns)
    assert lazy.no_prompt == 2 and sorted(lazy.pairs["exchange_id"]) == sorted(pairs["exchange_id"])
