"""Evaluation between DRIFT rounds: win rates from a scripted judge on the local OpenAI-compatible server,
the length-controlled win rate, position bias, the judge budget, a killed evaluation that resumes without
asking twice, `keep: best`, and the implicit-reward metrics without a judge, on the tiny local model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dsatkit.config import JudgeConfig
from dsatkit.rates import wilson_interval
from dsatkit.schema import MESSAGE_DTYPE
from dsatkit.trainers import drift
from dsatkit.trainers.evaluation import judge_comparison, lc_win_rate, read_eval, win_stats
from dsatkit.trainers.questions import PairwiseQuestion
from tests.openai_server import OpenAIServer, Reply
from tests.test_train import judged_data, mined, recipe  # noqa: F401 (mined is a fixture)

REPO = Path(__file__).resolve().parents[1]


def prompts_frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "exchange_id": [f"e{i:02d}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"question {i}"}] for i in range(n)],
    }, schema={"exchange_id": pl.String, "prompt": pl.List(MESSAGE_DTYPE)})


def verdict(winner: str) -> str:
    return json.dumps({"rationale": "scripted", "winner": winner})


def compare(handler, policy: list[str], other: list[str], **judge) -> tuple[pl.DataFrame, list, PairwiseQuestion]:
    """Judge `policy` against `other` (answers to question 0..n-1) with a scripted judge."""
    with OpenAIServer(handler) as srv:
        question = PairwiseQuestion(JudgeConfig(model="pair-judge", base_url=srv.url, **judge))
        judgments = judge_comparison(question, prompts_frame(len(policy)), pl.Series(policy), pl.Series(other))
        requests = list(srv.requests)
    return judgments, requests, question


def by_content(req) -> str:
    """good beats anything, bad loses to anything, a tie is a tie."""
    data = judged_data(req)
    a, b = data["response_A"], data["response_B"]
    if "tie" in a or "tie" in b:
        return verdict("tie")
    if a.startswith("good") or b.startswith("bad"):
        return verdict("A")
    return verdict("B")


def test_win_rates_from_known_verdicts_in_both_orders() -> None:
    policy = ["good 0", "good 1", "good 2", "good 3", "tie 4", "tie 5", "bad 6", "bad 7"]
    judgments, requests, _ = compare(by_content, policy, [f"reference {i}" for i in range(8)])
    assert len(requests) == 16 and judgments.height == 16  # every pair, both orders
    shown = [(judged_data(r)["response_A"], judged_data(r)["response_B"]) for r in requests]
    assert {("good 0", "reference 0"), ("reference 0", "good 0")} <= set(shown)
    s = win_stats(judgments)
    assert (s["wins"], s["losses"], s["ties"], s["judged"]) == (8, 4, 4, 8)
    assert s["win_rate"] == pytest.approx((4 + 0.5 * 2) / 8)
    assert (s["win_low"], s["win_high"]) == pytest.approx(wilson_interval(5, 8))
    assert s["win_low"] < s["win_rate"] < s["win_high"]
    assert s["order_agreement"] == 1.0 and s["first_position_rate"] == 0.5 and s["position_bias"] is False


def test_position_bias_is_detected_when_the_judge_always_picks_the_first() -> None:
    policy = [f"good {i}" for i in range(8)]
    judgments, _, _ = compare(lambda req: verdict("A"), policy, [f"reference {i}" for i in range(8)])
    s = win_stats(judgments)
    assert s["win_rate"] == 0.5 and s["wins"] == s["losses"] == 8  # each pair wins once, loses once
    assert s["first_position_rate"] == 1.0 and s["order_agreement"] == 0.0 and s["position_bias"] is True


def test_lc_win_rate_discounts_a_judge_that_prefers_length() -> None:
    def longer(req):
        data = judged_data(req)
        return verdict("A" if len(data["response_A"]) > len(data["response_B"]) else "B")

    # the policy is longer on 18 prompts of 20 (by varied amounts), shorter on 2: longer always wins
    policy = [f"answer {i} " + "more words " * (3 + i % 7) if i % 10 else f"answer {i}" for i in range(20)]
    other = [f"reference {i} " + "x" * (5 + i % 4) for i in range(20)]
    judgments, _, _ = compare(longer, policy, other)
    s = win_stats(judgments)
    assert s["win_rate"] == pytest.approx(0.9)
    assert s["lc_win_rate"] == pytest.approx(0.5, abs=0.01)

    # control: a judge that ignores length; the policy wins 16 of 20, as often when longer as when shorter
    policy = [("good " if i % 5 else "bad ") + ("long answer text " * 4 if i % 2 else "short") for i in range(20)]
    judgments, _, _ = compare(by_content, policy, ["a reference of middling length"] * 20)
    s = win_stats(judgments)
    assert s["win_rate"] == pytest.approx(0.8) and s["lc_win_rate"] == pytest.approx(0.8, abs=0.1)
    assert lc_win_rate(judgments["length_diff"].to_numpy(), [1.0] * 40, judgments["first"].to_numpy()) is None


def test_judge_budget_is_respected() -> None:
    policy = [f"good {i}" for i in range(8)]
    judgments, requests, question = compare(by_content, policy, ["reference"] * 8, max_calls=5, concurrency=2)
    assert len(requests) == 5 == question.stats.calls
    assert question.stats.skipped_by_budget == 11 and judgments["winner"].null_count() == 11
    s = win_stats(judgments)
    assert s["judged"] <= 2 and s["wins"] == 5  # only prompts with both orders count in the win rate


# ---- a trained output ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(mined: Path, tmp_path_factory) -> Path:  # noqa: F811 (the fixture imported above)
    """One DRIFT round on the tiny model with prompts held out: evaluated after the round, no judge. The
    evaluation samples at the sampler's temperature: greedy answers of an untrained model are all blank."""
    out = tmp_path_factory.mktemp("trained") / "run"
    drift.run(recipe(mined, out, rounds=1, data={"test_size": 0.3, "max_pairs": 8},
                     evaluation={"max_prompts": 6, "temperature": None}))
    return out


def copy_of(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def answers_of(out: Path, policy: str) -> dict[str, str]:
    (path,) = (out / "eval" / "answers").glob(f"{policy}-*.parquet")
    frame = pl.read_parquet(path)
    return dict(zip(frame["exchange_id"], frame["answer"], strict=True))


def test_rounds_are_evaluated_after_training_without_a_judge(trained: Path, tmp_path: Path, capsys) -> None:
    from dsatkit.cli import main

    rows = read_eval(trained)
    assert rows["policy"].to_list() == ["start", "round-1"] and set(rows["against"]) == {"rejected"}
    assert rows["judge_model"].null_count() == 2 and rows["win_rate"].null_count() == 2
    start, r1 = rows.row(0, named=True), rows.row(1, named=True)
    assert start["implicit_accuracy"] is None  # the start against itself: no reward
    assert 0 <= r1["implicit_accuracy"] <= 1 and r1["implicit_margin"] is not None and r1["prompts"] == 6
    assert 0 < r1["distinct_2"] <= 1 and r1["mean_length"] > 0
    # the held-out prompts were never trained on
    held = set(pl.read_parquet(trained / "test_pairs.parquet")["exchange_id"])
    assert set(answers_of(trained, "round-1")) <= held
    assert not held & set(pl.read_parquet(trained / "round-1/pairs.parquet")["exchange_id"])
    assert set(answers_of(trained, "start")) == set(answers_of(trained, "round-1"))

    # the train summary (here of a resumed run: nothing trained, nothing evaluated again) shows them
    out = copy_of(trained, tmp_path)
    main(["train", str(out / "recipe.yaml"), "-o", str(out)])
    printed = capsys.readouterr().out
    assert "impl acc" in printed and "no judge configured" in printed and read_eval(out).equals(rows)


def prefer(out: Path, policy: str):
    """A scripted judge that prefers `policy`'s held-out answers (read from the evaluation's own files)."""
    def handler(req) -> str:
        mine = set(answers_of(out, policy).values())
        data = judged_data(req)
        a, b = data["response_A"] in mine, data["response_B"] in mine
        return verdict("A" if a and not b else "B" if b and not a else "tie")
    return handler


def judge_args(url: str, model: str = "pair-judge", *extra: str) -> list[str]:
    return ["--set", f"judge.model={model}", "--set", f"judge.base_url={url}", *extra]


def test_eval_rounds_with_a_judge_marks_the_best_round(trained: Path, tmp_path: Path, capsys) -> None:
    from dsatkit.cli import main

    out = copy_of(trained, tmp_path)
    with OpenAIServer(prefer(out, "round-1")) as srv:
        main(["eval-rounds", str(out), *judge_args(srv.url, "pair-judge", "--set", "evaluation.keep=best")])
        n_requests = len(srv.requests)
        printed = capsys.readouterr().out
        main(["eval-rounds", str(out), *judge_args(srv.url, "pair-judge", "--set", "evaluation.keep=best")])
        assert len(srv.requests) == n_requests  # evaluated already: nothing asked again
    rows = read_eval(out)
    assert rows.select("policy", "against", "against_policy").rows() == [
        ("start", "rejected", None), ("round-1", "rejected", None), ("round-1", "previous", "start")]
    start, r1 = answers_of(out, "start"), answers_of(out, "round-1")
    differ = sum(start[k] != r1[k] for k in r1)
    vs_prev = rows.row(2, named=True)
    assert vs_prev["judged"] == 6 and vs_prev["win_rate"] == pytest.approx((differ + 0.5 * (6 - differ)) / 6)
    assert differ > 0 and vs_prev["complete"]
    if differ == 6:  # every verdict for round 1: one outcome, no regression to fit; best falls back to the raw rate
        assert vs_prev["lc_win_rate"] is None
    else:
        assert vs_prev["lc_win_rate"] > 0.5
    assert rows["best"].to_list() == [False, True, True]
    assert json.loads((out / "best.json").read_text())["policy"] == "round-1"
    assert (out / "round-1" / "model").exists() and (out / "base-model").exists()  # marked, nothing deleted
    assert "round-1" in printed and "win [95% CI]" in printed and "best" in printed

    # a judge that prefers the start: a new setup (another judge model), re-evaluated; the start is best
    with OpenAIServer(prefer(out, "start")) as srv:
        main(["eval-rounds", str(out), *judge_args(srv.url, "other-judge", "--set", "evaluation.keep=best")])
    assert read_eval(out)["best"].to_list() == [True, False, False]
    assert json.loads((out / "best.json").read_text())["policy"] == "start"


def request_id(req) -> str:
    return hashlib.md5(json.dumps(req.messages, sort_keys=True).encode()).hexdigest()


def test_budget_stops_cleanly_and_a_rerun_finishes_without_asking_twice(trained: Path, tmp_path: Path) -> None:
    from dsatkit.cli import main

    out = copy_of(trained, tmp_path)
    with OpenAIServer(prefer(out, "round-1")) as srv:
        main(["eval-rounds", str(out), *judge_args(srv.url, "pair-judge", "--set", "judge.max_calls=5")])
        first = [request_id(r) for r in srv.requests]
    assert len(first) == 5
    rows = read_eval(out)
    assert not rows["complete"].any() and rows["skipped_by_budget"].sum() > 0
    assert not (out / "eval" / "start.json").exists()
    with OpenAIServer(prefer(out, "round-1")) as srv:
        main(["eval-rounds", str(out), *judge_args(srv.url)])
        second = [request_id(r) for r in srv.requests]
    assert not set(first) & set(second) and len(set(second)) == len(second)
    rows = read_eval(out)
    assert rows["complete"].all() and (rows["judged"] == 6).all()


def test_killed_evaluation_resumes_without_repeating_judge_calls(trained: Path, tmp_path: Path) -> None:
    out = copy_of(trained, tmp_path)
    answered: list[str] = []
    judge = prefer(out, "round-1")

    def slow_after_four(req):
        if len(answered) < 4:
            answered.append(request_id(req))
            return judge(req)
        return Reply(delay=60)  # hang: the evaluation is killed while waiting

    with OpenAIServer(slow_after_four) as srv:
        child = subprocess.Popen([sys.executable, "-m", "dsatkit", "eval-rounds", str(out),
                                  *judge_args(srv.url, "pair-judge", "--set", "judge.concurrency=2")], cwd=REPO)
        deadline = time.monotonic() + 120
        while len(srv.requests) < 6 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert len(srv.requests) == 6, "the evaluation did not get as far as expected"
        time.sleep(0.5)  # the background commit of the four answers has landed
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not (out / "eval" / "start.json").exists()

    from dsatkit.cli import main

    with OpenAIServer(judge) as srv:
        main(["eval-rounds", str(out), *judge_args(srv.url)])
        again = [request_id(r) for r in srv.requests]
    assert not set(answered) & set(again)
    rows = read_eval(out)
    assert rows["complete"].all() and rows.height == 3
    con = duckdb.connect(str(out / "cache.duckdb"), read_only=True)
    assert con.sql("select count(*) from judge_cache").fetchall() == [(len(answered) + len(set(again)),)]
    con.close()
