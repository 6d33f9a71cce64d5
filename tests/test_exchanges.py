"""Exchange construction on the edge cases of real logs."""

from __future__ import annotations

import polars as pl

from dsatkit.exchanges import attach_context, build_exchanges
from dsatkit.schema import EXCHANGES, TURNS, conform


def turns(rows: list[tuple[str, int, str, str]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=["conversation_id", "turn_index", "role", "content"], orient="row")
    return conform(frame, TURNS)


def by_response(ex: pl.DataFrame) -> dict[tuple[str, int], dict]:
    return {(r["conversation_id"], r["response_turn"]): r for r in ex.iter_rows(named=True)}


def test_basic_exchange_has_context_feedback_followup():
    ex = build_exchanges(
        turns([("c", 0, "user", "q1"), ("c", 1, "assistant", "a1"), ("c", 2, "user", "wrong"),
               ("c", 3, "assistant", "a2"), ("c", 4, "user", "thanks")])
    )
    assert ex.schema == EXCHANGES
    rows = by_response(ex)
    assert set(rows) == {("c", 1), ("c", 3)}
    first = rows[("c", 1)]
    assert first["context"] == [{"role": "user", "content": "q1"}]
    assert (first["request"], first["response"], first["feedback"], first["followup"]) == ("q1", "a1", "wrong", "a2")
    second = rows[("c", 3)]
    assert [m["content"] for m in second["context"]] == ["q1", "a1", "wrong"]
    assert (second["request"], second["feedback"], second["followup"]) == ("wrong", "thanks", None)


def test_system_prompt_is_context_not_request():
    ex = build_exchanges(turns([("c", 0, "system", "sys"), ("c", 1, "user", "hi"), ("c", 2, "assistant", "hello")]))
    row = ex.row(0, named=True)
    assert row["context"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert row["request"] == "hi" and row["feedback"] is None


def test_consecutive_user_turns_feedback_is_first_and_followup_skips_them():
    ex = build_exchanges(
        turns([("c", 0, "user", "q"), ("c", 1, "assistant", "a"), ("c", 2, "user", "no"),
               ("c", 3, "user", "I meant X"), ("c", 4, "assistant", "b")])
    )
    rows = by_response(ex)
    assert rows[("c", 1)]["feedback"] == "no"
    assert rows[("c", 1)]["followup"] == "b"
    assert rows[("c", 4)]["request"] == "I meant X"


def test_nothing_crosses_a_conversation_boundary():
    """Lookups stop at the conversation's first and last turn, wherever it sits in the frame: an
    assistant greeting gets no request from the conversation before, and a response followed by a
    system or tool turn gets no feedback or followup from the conversation after."""
    ex = build_exchanges(
        turns([
            ("a", 0, "user", "a:q"), ("a", 1, "assistant", "a:r"), ("a", 2, "user", "a:no"), ("a", 3, "system", "a:s"),
            ("b", 0, "system", "b:sys"), ("b", 1, "assistant", "b:hello"), ("b", 2, "user", "b:q"),
            ("b", 3, "assistant", "b:r"), ("b", 4, "tool", "b:t"),
            ("c", 0, "user", "c:q"), ("c", 1, "assistant", "c:r"), ("c", 2, "user", "c:thanks"),
        ])
    )
    rows = by_response(ex)
    for (cid, _), row in rows.items():
        for col in ("request", "response", "feedback", "followup"):
            assert row[col] is None or row[col].startswith(f"{cid}:"), (cid, col, row[col])
    assert (rows[("a", 1)]["feedback"], rows[("a", 1)]["followup"]) == ("a:no", None)
    assert rows[("b", 1)]["request"] is None and rows[("b", 1)]["feedback"] == "b:q"
    assert (rows[("b", 3)]["request"], rows[("b", 3)]["feedback"]) == ("b:q", None)
    assert (rows[("c", 1)]["request"], rows[("c", 1)]["feedback"]) == ("c:q", "c:thanks")


def test_conversation_ending_on_user_turn_and_assistant_first():
    ex = build_exchanges(
        turns([("c", 0, "assistant", "Hi! How can I help?"), ("c", 1, "user", "q"), ("c", 2, "assistant", "a"),
               ("c", 3, "user", "that's wrong")])
    )
    rows = by_response(ex)
    assert rows[("c", 0)]["request"] is None and rows[("c", 0)]["context"] == []
    assert rows[("c", 0)]["feedback"] == "q"
    assert rows[("c", 2)]["feedback"] == "that's wrong" and rows[("c", 2)]["followup"] is None


def test_tool_turns_and_consecutive_assistant_turns():
    ex = build_exchanges(
        turns([("c", 0, "user", "weather?"), ("c", 1, "assistant", "call:get_weather"), ("c", 2, "tool", "12C"),
               ("c", 3, "assistant", "It is 12C"), ("c", 4, "user", "in fahrenheit?"), ("c", 5, "assistant", "54F")])
    )
    rows = by_response(ex)
    # the user reacts to the final answer, not to the tool call
    assert rows[("c", 1)]["feedback"] is None
    assert rows[("c", 3)]["feedback"] == "in fahrenheit?" and rows[("c", 3)]["followup"] == "54F"
    assert [m["role"] for m in rows[("c", 3)]["context"]] == ["user", "assistant", "tool"]


def test_order_independent_and_ids_stable():
    rows = [("a", 0, "user", "q"), ("a", 1, "assistant", "r"), ("b", 0, "user", "q2"), ("b", 1, "assistant", "r2"),
            ("b", 2, "user", "again?")]
    ex1 = build_exchanges(turns(rows))
    ex2 = build_exchanges(turns(list(reversed(rows))))
    assert ex1.equals(ex2)
    # grouped but not sorted (b before a), and interleaved: the same exchanges
    grouped = build_exchanges(turns(rows[2:] + rows[:2])).sort("exchange_id")
    interleaved = build_exchanges(turns([rows[0], rows[2], rows[1], rows[3], rows[4]])).sort("exchange_id")
    assert grouped.equals(ex1.sort("exchange_id")) and interleaved.equals(ex1.sort("exchange_id"))
    assert ex1["exchange_id"].n_unique() == ex1.height == 2
    # an id depends only on conversation id and response turn, not on the batch it came in
    alone = build_exchanges(turns(rows[:2]))
    assert alone["exchange_id"][0] == ex1.filter(pl.col("conversation_id") == "a")["exchange_id"][0]


def test_turn_indexes_with_gaps():
    ex = build_exchanges(turns([("c", 10, "user", "q"), ("c", 20, "assistant", "a"), ("c", 30, "user", "thx")]))
    row = ex.row(0, named=True)
    assert row["response_turn"] == 20 and row["feedback"] == "thx"


def test_attach_context_fills_from_any_turns_frame():
    """Context filled later (the pipeline builds exchanges without it) equals context built at once,
    whatever the order of the turns; a response missing from the turns gets none."""
    rows = [("a", 0, "system", "be brief"), ("a", 1, "user", "q"), ("a", 2, "assistant", "r"),
            ("b", 0, "assistant", "hello"), ("b", 1, "user", "q2"), ("b", 2, "assistant", "r2"), ("b", 3, "user", "ok")]
    t = turns(rows)
    built = build_exchanges(t)
    bare = build_exchanges(t, context=False)
    assert bare["context"].is_null().all()
    assert attach_context(bare, t).equals(built)
    assert attach_context(bare, turns(list(reversed(rows)))).equals(built)
    assert by_response(built)[("b", 0)]["context"] == []
    assert [m["role"] for m in by_response(built)[("a", 2)]["context"]] == ["system", "user"]
    lost = pl.concat([bare.head(1), bare.head(1).with_columns(conversation_id=pl.lit("z")),
                      bare.head(1).with_columns(response_turn=pl.lit(9, pl.Int32))])
    assert attach_context(lost, t)["context"].to_list() == [built["context"][0].to_list(), None, None]
