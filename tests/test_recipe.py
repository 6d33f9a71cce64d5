"""The training recipe: YAML loading, alignment-handbook name translation, one-line errors; pair helpers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dsatkit.errors import ConfigError, TrainError, first_line
from dsatkit.schema import PAIRS, conform
from dsatkit.trainers import recipe as recipe_mod
from dsatkit.trainers.data import load_pairs, split_test
from dsatkit.trainers.drift import distinct_2
from dsatkit.trainers.recipe import Recipe, load_recipe, translate_dpo
from dsatkit.trainers.sampler import drop_degenerate, sampling_messages

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


MINIMAL = "model: builtin:tiny\ndata: {path: mined/}\noutput_dir: runs/x\n"


def test_published_recipe_translates_handbook_names(monkeypatch) -> None:
    monkeypatch.setattr(recipe_mod, "_translated_once", set())
    with pytest.warns(UserWarning, match="rpo_alpha 0.001"):
        rec = load_recipe(RECIPES / "drift-qwen2.5-7b.yaml")
    assert rec.model == "Qwen/Qwen2.5-7B-Instruct" and rec.method == "drift" and rec.rounds == 2
    assert rec.seed_stage.enabled and rec.seed_stage.epochs == 3
    s = rec.sampler
    assert (s.temperature, s.top_p, s.max_new_tokens, s.condition_on_feedback) == (0.7, 0.9, 512, True)
    dpo = rec.dpo
    assert dpo["loss_type"] == ["sigmoid", "sft"] and dpo["loss_weights"] == [1.0, 0.001]
    assert dpo["model_init_kwargs"] == {"dtype": "bfloat16"} and dpo["warmup_steps"] == 0.1
    assert not {"rpo_alpha", "torch_dtype", "max_prompt_length", "warmup_ratio"} & set(dpo)
    cfg = rec.dpo_config(Path("/tmp/unused"))  # TRL accepts every translated field
    assert (cfg.beta, cfg.learning_rate, cfg.max_length, cfg.per_device_train_batch_size) == (0.1, 5e-7, 2048, 4)
    assert cfg.optim == "rmsprop" and cfg.loss_weights == [1.0, 0.001] and cfg.lr_scheduler_type == "linear"


def test_translation_keeps_explicit_values_and_warns_once(monkeypatch) -> None:
    monkeypatch.setattr(recipe_mod, "_translated_once", set())
    with pytest.warns(UserWarning) as first:
        out = translate_dpo({"rpo_alpha": 0.5, "loss_type": ["ipo"], "max_prompt_length": 10, "beta": 0.2})
    assert out == {"loss_type": ["ipo"], "loss_weights": [1.0, 0.5], "beta": 0.2}
    assert len(first) == 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second translation of the same names is silent
        translate_dpo({"rpo_alpha": 0.5, "loss_type": ["ipo"], "max_prompt_length": 10})
    assert translate_dpo({"rpo_alpha": 0}) == {}


def test_tiny_recipe_loads_with_overrides() -> None:
    rec = load_recipe(RECIPES / "tiny-cpu.yaml", {"rounds": 1, "sampler.temperature": 1.0, "method": None})
    assert rec.model == "builtin:tiny" and rec.rounds == 1 and rec.sampler.temperature == 1.0
    assert rec.dpo_config(Path("/tmp/unused")).bf16 is False


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (MINIMAL + "epochs: 3\n", r"epochs: unknown key"),
        (MINIMAL + "sampler: {temprature: 0.7}\n", r"sampler\.temprature: unknown key"),
        (MINIMAL + "dpo: {betta: 0.1}\n", r"unknown DPOConfig field 'betta'"),
        (MINIMAL + "dpo: {loss_type: [dpo]}\n", r"unknown loss_type 'dpo'"),
        (MINIMAL + "dpo: {output_dir: x}\n", r"set output_dir at the top level"),
        (MINIMAL + "dpo: {loss_type: [sigmoid], loss_weights: [1, 2]}\n", r"dpo: .*loss_weights"),
        # each dpo: value is checked against its DPOConfig field's type when the recipe loads
        (MINIMAL + "dpo: {learning_rate: fast}\n", r"recipe\.yaml: dpo\.learning_rate: .*valid number"),
        (MINIMAL + "dpo: {learning_rate: true}\n", r"dpo\.learning_rate: .*a number, not a boolean"),
        (MINIMAL + "dpo: {bf16: maybe}\n", r"dpo\.bf16: .*valid boolean"),
        (MINIMAL + "dpo: {per_device_train_batch_size: 2.5}\n", r"dpo\.per_device_train_batch_size: .*integer"),
        (MINIMAL + "dpo: {lr_scheduler_type: wobble}\n", r"dpo\.lr_scheduler_type: Input should be 'linear', "),
        (MINIMAL + "dpo: {truncation_mode: middle}\n", r"dpo\.truncation_mode: .*'keep_end' or 'keep_start'"),
        (MINIMAL + "dpo: {optim: sgdx}\n", r"dpo\.optim: .*'rmsprop'"),
        (MINIMAL + "dpo: {loss_type: [sigmoid, 3]}\n", r"dpo\.loss_type: expected str \| list\[str\], got"),
        (MINIMAL + "dpo: {loss_weights: [1, x]}\n", r"dpo\.loss_weights\.1: .*valid number"),
        (MINIMAL + "dpo: {rpo_alpha: fast}\n", r"dpo\.rpo_alpha: .*valid number"),
        ("model: builtin:huge\ndata: {path: m}\noutput_dir: o\n",
         r"model: unknown builtin model 'builtin:huge'; the builtins are: builtin:tiny$"),
        (MINIMAL + "method: idpo\n", r"idpo .* needs a scorer"),
        (MINIMAL + "method: idpo\nscorer: {reward_model: a, judge: {model: m}}\n", r"exactly one of judge"),
        (MINIMAL + "method: ppo\n", r"method: Input should be 'drift', 'spin' or 'idpo'"),
        (MINIMAL + "sampler: {backend: tgi}\n", r"sampler\.backend"),
        (MINIMAL + "lora: {rank: 8}\n", r"lora: .*not a LoraConfig"),
        (MINIMAL + "reference: first\n", r"reference: Input should be 'round_start' or 'initial'"),
        ("model: builtin:tiny\noutput_dir: x\n", r"data: Field required"),
        ("model: [unclosed\n", r"not valid YAML"),
        ("- a list\n", r"must be a mapping"),
    ],
)
def test_bad_recipes_fail_with_one_clear_line(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, text))
    assert "\n" not in str(err.value) and re.search(pattern, str(err.value)), str(err.value)
    assert err.value.hint


def test_dpo_values_are_converted_to_their_field_types(tmp_path: Path) -> None:
    """YAML 1.1 reads `5e-7` as a string: the recipe hands DPOConfig the number; enum names stay names."""
    rec = load_recipe(write(tmp_path, MINIMAL + "dpo: {learning_rate: 5e-7, beta: '0.2', lr_scheduler_type: cosine,"
                                                " max_length: null, loss_type: sigmoid, logging_steps: 2}\n"))
    assert rec.dpo == {"learning_rate": 5e-7, "beta": 0.2, "lr_scheduler_type": "cosine", "max_length": None,
                       "loss_type": "sigmoid", "logging_steps": 2}
    assert type(rec.dpo["lr_scheduler_type"]) is str and type(rec.dpo["learning_rate"]) is float
    cfg = rec.dpo_config(tmp_path / "out")
    assert (cfg.learning_rate, cfg.beta, cfg.loss_type) == (5e-7, 0.2, ["sigmoid"])


def test_first_line_of_library_errors() -> None:
    assert first_line(ValueError("\n  bad value\n  at line 3\n")) == "bad value"
    assert first_line(OSError()) == "OSError"  # an empty message is not an IndexError


def test_cli_prints_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "dpo: {betta: 0.1}\n")
    proc = subprocess.run([sys.executable, "-m", "dsatkit", "train", str(path), "--check"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and "betta" in lines[0] and lines[1].startswith("hint:")
    proc = subprocess.run([sys.executable, "-m", "dsatkit", "train", str(path), "--set", "nokey"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "expected KEY=VALUE" in proc.stderr


# ---- data ------------------------------------------------------------------------------------------
def pairs_frame(n: int = 6) -> pl.DataFrame:
    rows = [
        {"exchange_id": f"e{i}", "prompt": [{"role": "user", "content": f"q{i}"}],
         "rejected": [{"role": "assistant", "content": f"bad {i}"}], "feedback": "wrong" if i % 2 else None,
         "category": "factual_error" if i % 2 else "revision", "score": i / n, "origin": "dsat"}
        for i in range(n)
    ]
    rows.append({**rows[1], "chosen": [{"role": "assistant", "content": "good 1"}], "origin": "seed"})
    return conform(pl.DataFrame(rows), PAIRS)


def test_load_pairs_from_parquet_and_store_with_sql_filter(tmp_path: Path) -> None:
    import duckdb

    frame = pairs_frame()
    frame.write_parquet(tmp_path / "pairs.parquet")
    got = load_pairs(tmp_path / "pairs.parquet", "category = 'factual_error' and origin = 'dsat'")
    assert sorted(got["exchange_id"]) == ["e1", "e3", "e5"] and got.schema == PAIRS
    store = tmp_path / "mined"
    store.mkdir()
    con = duckdb.connect(str(store / "dsat.duckdb"))
    con.execute("create table pairs as select * from frame")
    con.close()
    assert load_pairs(store, "score > 0.5").height == 2  # no pairs.parquet: the store's table
    with pytest.raises(ConfigError, match=r"data.where: .*nosuch"):
        load_pairs(tmp_path / "pairs.parquet", "nosuch = 1")
    with pytest.raises(TrainError, match="does not exist"):
        load_pairs(tmp_path / "missing.parquet")
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "other.parquet")
    with pytest.raises(TrainError, match="not a pairs table"):
        load_pairs(tmp_path / "other.parquet")


def test_split_test_holds_out_whole_exchanges() -> None:
    frame = pairs_frame(10)
    train, test = split_test(frame, 0.3)
    assert test["exchange_id"].n_unique() == 3
    assert not set(train["exchange_id"]) & set(test["exchange_id"])
    assert train.height + test.height == frame.height
    assert split_test(frame, 0.3)[1].equals(test)  # stable


def test_sampling_messages_condition_on_feedback() -> None:
    rec = Recipe.model_validate({"model": "m", "data": {"path": "x"}, "output_dir": "o"})
    frame = pairs_frame(2).filter(pl.col("origin") == "dsat")
    drift_msgs = sampling_messages(frame, rec.sampler, conditioned=True)
    assert [m["role"] for m in drift_msgs[1]] == ["user", "assistant", "user"]
    assert drift_msgs[1][1]["content"] == "bad 1" and drift_msgs[1][2]["content"].startswith("wrong\n\n")
    assert drift_msgs[0][2]["content"] == rec.sampler.instruction  # no feedback text: the instruction alone
    assert sampling_messages(frame, rec.sampler, conditioned=False) == [[{"role": "user", "content": "q0"}],
                                                                        [{"role": "user", "content": "q1"}]]


def test_drop_degenerate_counts_each_reason() -> None:
    frame = pl.DataFrame({
        "s": ["", "  ", "!!!", "The same answer.", "the same answer", "a fresh and different reply", "ok fine"],
        "r": ["x", "x", "x", "The same answer.", "The same answer!", "the old reply", "no"],
        "truncated": [False, True, True, False, False, False, True],
    })
    kept, dropped = drop_degenerate(frame, "s", "r", near_duplicate=0.9)
    assert dropped == {"empty": 2, "truncated": 1, "identical": 1, "near_identical": 1}
    assert kept["s"].to_list() == ["a fresh and different reply", "ok fine"]


def test_distinct_2() -> None:
    assert distinct_2(pl.Series(["a b a b", "a b"])) == pytest.approx(2 / 4)
    assert distinct_2(pl.Series(["one", ""])) is None
