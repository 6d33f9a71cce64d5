"""`dsatkit train`: real TRL DPO rounds on the tiny local model, over pairs mined from fixture logs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsatkit.trainers import drift, questions
from dsatkit.trainers.recipe import Recipe
from dsatkit.trainers.sampler import sample, sampling_messages
from dsatkit.trainers.tiny import build_tiny_reward

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "data"))
import make_example_logs

N_CONVERSATIONS = 24


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    """Fixture logs -> `dsatkit.pipeline.mine` -> a mined directory (DSAT + natural seed pairs)."""
    from dsatkit.config import MineConfig
    from dsatkit.pipeline import mine

    tmp = tmp_path_factory.mktemp("mined")
    logs = make_example_logs.write(tmp / "logs.jsonl", N_CONVERSATIONS)
    lexical = importlib.util.find_spec("dsatkit.detectors.lexical") is not None
    mine([logs], tmp / "mined", MineConfig(detectors=["lexical" if lexical else "embedding"]))
    pairs = pl.read_parquet(tmp / "mined" / "pairs.parquet")
    assert pairs.filter(pl.col("origin") == "dsat").height >= N_CONVERSATIONS // 2
    assert pairs.filter(pl.col("origin") == "seed").height >= 1
    return tmp / "mined"


def recipe(mined: Path, out: Path, **kw) -> Recipe:
    """The tiny-cpu recipe, pointed at `mined` and `out`, with overrides (nested dicts merge)."""
    import yaml

    data = yaml.safe_load((ROOT / "recipes" / "tiny-cpu.yaml").read_text())
    data.update(output_dir=str(out), data={**data["data"], "path": str(mined)})
    data["metrics"] = {"embedding_model": None}  # tested once, in the two-round test
    for key, value in kw.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return Recipe.model_validate(data)


def texts(frame: pl.DataFrame, col: str) -> dict[str, str]:
    return dict(zip(frame["exchange_id"], frame[col].list.last().struct.field("content"), strict=True))


@pytest.mark.slow
def test_two_drift_rounds_via_cli(mined: Path, tmp_path: Path, capsys) -> None:
    from dsatkit.cli import main

    out = tmp_path / "run"
    main(["train", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--data", str(mined), "-o", str(out)])
    printed = capsys.readouterr().out  # the summary is the command's result: stdout (progress: stderr)
    assert "drift rounds" in printed and re.search(r"\b1\b.*drift", printed) and re.search(r"\b2\b.*drift", printed)

    m1, m2 = (drift.RoundMetrics.model_validate_json((out / f"round-{n}/metrics.json").read_text()) for n in (1, 2))
    base, r1 = str(out / "base-model"), str(out / "round-1" / "model")
    # checkpoints, pairs and the train_rounds table
    for n in (1, 2):
        assert (out / f"round-{n}/model/model.safetensors").exists()
        assert (out / f"round-{n}/pairs.parquet").exists()
    rows = duckdb.connect(str(out / "train.duckdb"), read_only=True).sql(
        "select round, stage, pairs_kept, loss, distinct_2, embedding_distance from train_rounds order by round"
    ).fetchall()
    assert [r[:2] for r in rows] == [(1, "drift"), (2, "drift")]
    for _, _, kept, loss, d2, emb in rows:
        assert kept > 0 and loss is not None and 0 < d2 <= 1 and 0 <= emb <= 2

    # the reference of round N is the start of round N (same path, same weights)
    assert (m1.start_model, m1.reference_model) == (base, base)
    assert (m2.start_model, m2.reference_model) == (r1, r1)
    fp_base, fp_r1 = drift.fingerprint_of(base), drift.fingerprint_of(r1)
    assert fp_base != pytest.approx(fp_r1)  # round 1 moved the weights
    assert m1.reference_fingerprint == pytest.approx(fp_base)
    assert m2.reference_fingerprint == pytest.approx(fp_r1)

    # pairs: prompt = the original conversation, rejected = the real DSAT response, chosen = a sample
    mined_pairs = pl.read_parquet(mined / "pairs.parquet").filter(pl.col("origin") == "dsat")
    p1, p2 = (pl.read_parquet(out / f"round-{n}/pairs.parquet") for n in (1, 2))
    assert set(p1["exchange_id"]) <= set(mined_pairs["exchange_id"])
    assert texts(p1, "rejected") == {k: v for k, v in texts(mined_pairs, "rejected").items() if k in set(p1["exchange_id"])}
    joined = p1.join(mined_pairs.select("exchange_id", mp="prompt"), on="exchange_id")
    assert joined["prompt"].to_list() == joined["mp"].to_list()

    # round 2 samples from round 1's weights: same seed, so the change is the policy's, and re-sampling
    # round 1's checkpoint with round 2's inputs reproduces round 2's chosen exactly
    s1, s2 = texts(p1, "chosen"), texts(p2, "chosen")
    common = s1.keys() & s2.keys()
    assert sum(s1[k] != s2[k] for k in common) >= len(common) // 2
    rec = recipe(mined, out)
    dsat = mined_pairs.sort("exchange_id")
    again = sample(r1, sampling_messages(dsat, rec.sampler, True), rec.sampler, seed=rec.seed)
    resampled = dict(zip(dsat["exchange_id"], again.sort("row")["text"], strict=True))
    assert all(resampled[k] == s2[k] for k in s2)
    assert any(resampled[k] != s1[k] for k in common)


@pytest.mark.slow
def test_resume_after_crash_in_round_2(mined: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    rec = recipe(mined, out)
    real_train = drift.DriftRun.train

    def crash_in_round_2(self, start, pairs, rdir, epochs):
        if rdir.name == "round-2":
            raise RuntimeError("simulated crash")
        return real_train(self, start, pairs, rdir, epochs)

    monkeypatch.setattr(drift.DriftRun, "train", crash_in_round_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        drift.run(rec)
    assert (out / "round-1/metrics.json").exists()
    assert (out / "round-2/pairs.parquet").exists() and not (out / "round-2/metrics.json").exists()
    round1 = (out / "round-1/metrics.json").read_text()
    round1_mtime = (out / "round-1/model/model.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(drift.DriftRun, "train", real_train)
    calls: list[str] = []
    real_one = drift.DriftRun.one_round
    monkeypatch.setattr(drift.DriftRun, "one_round", lambda self, n, *a: calls.append(n) or real_one(self, n, *a))
    results = drift.run(rec)
    assert calls == [2]  # round 1 is not redone, the half-written round 2 is
    assert [m.resumed for m in results] == [True, False]
    assert (out / "round-1/metrics.json").read_text() == round1
    assert (out / "round-1/model/model.safetensors").stat().st_mtime_ns == round1_mtime
    assert results[1].start_model == str(out / "round-1/model")
    n = duckdb.connect(str(out / "train.duckdb"), read_only=True).sql("select count(*) from train_rounds").fetchall()
    assert n == [(2,)]


def test_seed_stage_then_spin_round(mined: Path, tmp_path: Path) -> None:
    out = tmp_path / "spin"
    results = drift.run(recipe(mined, out, method="spin", rounds=1, seed_stage={"enabled": True, "epochs": 1}))
    assert [(m.round, m.stage) for m in results] == [(0, "seed"), (1, "spin")]
    seed = pl.read_parquet(mined / "pairs.parquet").filter(pl.col("origin") == "seed")
    p0 = pl.read_parquet(out / "round-0/pairs.parquet")
    assert sorted(p0["exchange_id"]) == sorted(seed["exchange_id"])
    # spin: chosen = the natural SAT revision, rejected = a policy sample; prompts without one are skipped
    p1 = pl.read_parquet(out / "round-1/pairs.parquet")
    assert texts(p1, "chosen") == {k: v for k, v in texts(seed, "chosen").items() if k in set(p1["exchange_id"])}
    assert set(p1["exchange_id"]) <= set(seed["exchange_id"])
    assert not set(texts(p1, "rejected").values()) & set(texts(seed, "rejected").values())
    assert results[1].start_model == str(out / "round-0/model") == results[1].reference_model
    assert results[1].dropped.get("no_sat_response", 0) > 0


def test_idpo_round_ranked_by_judge(mined: Path, tmp_path: Path) -> None:
    from tests.openai_server import OpenAIServer

    def words(text: str) -> int:
        return len(text.split())

    def rate(req) -> str:  # scripted judge: the longer response (in words) is the better one
        shown = json.loads(req.user_text.split(questions.OPEN + "\n", 1)[1].split("\n" + questions.CLOSE)[0])
        return json.dumps({"rationale": "longer", "rating": min(10, 1 + words(shown["candidate_response"]) / 10)})

    with OpenAIServer(rate) as srv:
        rec = recipe(mined, tmp_path / "idpo", method="idpo", rounds=1,
                     scorer={"judge": {"model": "test-judge", "base_url": srv.url}})
        (m,) = drift.run(rec)
        requests = list(srv.requests)
        n_requests = len(requests)
    pairs = pl.read_parquet(tmp_path / "idpo/round-1/pairs.parquet")
    assert m.stage == "idpo" and m.pairs_kept == pairs.height > 0
    # one rating per distinct sample (identical ones share the cached answer)
    assert 0 < n_requests <= 2 * (pairs.height + m.dropped.get("tied", 0))
    assert n_requests == len({r.user_text for r in requests})
    chosen, rejected = texts(pairs, "chosen"), texts(pairs, "rejected")
    assert all(words(chosen[k]) > words(rejected[k]) for k in chosen)
    real_rejected = set(texts(pl.read_parquet(mined / "pairs.parquet"), "rejected").values())
    assert not set(rejected.values()) & real_rejected  # both sides are policy samples


def test_idpo_round_ranked_by_reward_model(mined: Path, tmp_path: Path) -> None:
    rm = build_tiny_reward(tmp_path / "rm")
    (m,) = drift.run(recipe(mined, tmp_path / "idpo", method="idpo", rounds=1, scorer={"reward_model": str(rm)},
                            data={"max_pairs": 8}))
    assert m.stage == "idpo" and 0 < m.pairs_kept <= 8 and m.loss is not None


def test_precomputed_chosen_needs_no_sampling(mined: Path, tmp_path: Path) -> None:
    (m,) = drift.run(recipe(precomputed(mined, tmp_path), tmp_path / "pre", rounds=1, sampler={"backend": "precomputed"},
                            data={"where": "category is not null", "max_pairs": 10}))
    assert m.pairs_kept == 10 and m.sample_s < 5
    assert set(texts(pl.read_parquet(tmp_path / "pre/round-1/pairs.parquet"), "chosen").values()) == {
        "A better, corrected answer."
    }


def judged_data(req) -> dict:
    """The JSON document a trainer's judge question shows, as the judge reads it."""
    from dsatkit.trainers.questions import CLOSE, OPEN

    return json.loads(req.user_text.split(OPEN + "\n", 1)[1].split("\n" + CLOSE, 1)[0])


def test_judge_checks_that_chosen_samples_answer_the_prompt(mined: Path, tmp_path: Path) -> None:
    from tests.openai_server import OpenAIServer

    verdicts: dict[str, bool] = {}

    def fit_judge(req) -> str:  # scripted: a sample of an even length answers the prompt, an odd one does not
        data = judged_data(req)
        sample = data["candidate_response"]
        assert data["conversation"][-1]["role"] == "user"  # the original prompt, not the repair
        verdicts[sample] = len(sample) % 2 == 0
        return json.dumps({"rationale": "scripted", "answers_prompt": verdicts[sample]})

    with OpenAIServer(fit_judge) as srv:
        rec = recipe(mined, tmp_path / "fit", rounds=1, data={"max_pairs": 8},
                     judge={"model": "fit-judge", "base_url": srv.url},
                     sampler={"clean": {"ask_judge": True, "max_off_topic_words": 0}})
        (m,) = drift.run(rec)
    chosen = set(texts(pl.read_parquet(tmp_path / "fit/round-1/pairs.parquet"), "chosen").values())
    said_no = sum(not v for v in verdicts.values())
    assert 0 < said_no < len(verdicts)  # the scripted verdicts split the samples
    assert m.dropped.get("judge_not_an_answer", 0) == said_no
    assert chosen and all(verdicts[c] for c in chosen)
    assert (tmp_path / "fit/cache.duckdb").exists()


def precomputed(mined: Path, tmp_path: Path) -> Path:
    """The mined pairs with a fixed chosen on every DSAT pair: rounds that train without sampling."""
    pairs = pl.read_parquet(mined / "pairs.parquet")
    filled = pairs.with_columns(
        chosen=pl.when(pl.col("origin") == "dsat")
        .then(pl.concat_list(pl.struct(role=pl.lit("assistant"), content=pl.lit("A better, corrected answer."))))
        .otherwise(pl.col("chosen"))
    )
    filled.write_parquet(tmp_path / "pairs.parquet")
    return tmp_path / "pairs.parquet"


@pytest.mark.parametrize("lora", [None, {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}], ids=["full", "lora"])
def test_reference_initial_is_the_first_policy_every_round(mined: Path, tmp_path: Path, lora) -> None:
    out = tmp_path / "run"
    rec = recipe(precomputed(mined, tmp_path), out, rounds=2, reference="initial", lora=lora,
                 sampler={"backend": "precomputed"}, data={"max_pairs": 8})
    m1, m2 = drift.run(rec)
    base, r1 = str(out / "base-model"), str(out / "round-1" / "model")
    assert (m1.start_model, m2.start_model) == (base, r1)
    assert m1.reference_model == m2.reference_model == base  # round 2 starts from round 1, refers to the base
    fp_base, fp_r1 = drift.fingerprint_of(base), drift.fingerprint_of(r1)
    assert fp_base != pytest.approx(fp_r1)  # round 1 moved the weights: the fingerprints tell them apart
    assert m2.reference_fingerprint == pytest.approx(fp_base)
    if lora is None:
        assert m1.reference_fingerprint == pytest.approx(fp_base)


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not __import__("torch").cuda.is_available(),
    reason="needs vllm and a CUDA GPU",
)
def test_vllm_sampler(tmp_path: Path) -> None:
    from dsatkit.trainers.recipe import SamplerSpec
    from dsatkit.trainers.tiny import build_tiny

    model = build_tiny(tmp_path / "tiny")
    spec = SamplerSpec(backend="vllm", max_new_tokens=8, gpu_memory_utilization=0.3)
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    out = sample(model, chats, spec, n=2, seed=0)
    assert out.height == 8 and sorted(set(out["row"])) == [0, 1, 2, 3] and out["text"].dtype == pl.String
