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
from dsatkit.trainers.clean import CleanSpec, clean_samples, load_meta_talk, request_of
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
         r"model: unknown builtin model 'builtin:huge'; the builtins are: builtin:tiny, builtin:smollm2-135m$"),
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


def test_set_keeps_a_value_with_a_colon_as_text(tmp_path: Path, capsys) -> None:
    """`--set` reads values as YAML, but `lambda m: m.content` in an SQL filter is text, not a mapping."""
    import yaml

    from dsatkit.cli import main

    where = "length(list_transform(prompt, lambda m: m.content)) <= 3"
    main(["train", str(write(tmp_path, MINIMAL)), "--check", "--set", f"data.where={where}",
          "--set", "lora={r: 8}", "--set", "rounds=3"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["where"] == where and printed["lora"]["r"] == 8 and printed["rounds"] == 3


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


def test_split_test_keeps_each_conversation_on_one_side() -> None:
    """Two exchanges of one conversation (the later prompt holds the earlier one) are never split; a shared
    system prompt does not make conversations one."""
    msg = lambda role, text: {"role": role, "content": text}
    rows = []
    for c in range(20):
        first = [msg("system", "You are helpful."), msg("user", f"question {c}")]
        rows.append({"exchange_id": f"c{c}-1", "prompt": first, "rejected": [msg("assistant", "bad")], "origin": "dsat"})
        rows.append({"exchange_id": f"c{c}-3", "prompt": [*first, msg("assistant", "bad"), msg("user", "wrong")],
                     "rejected": [msg("assistant", "worse")], "origin": "dsat"})
    frame = conform(pl.DataFrame(rows), PAIRS)
    train, test = split_test(frame, 0.25)
    assert test.height == 10 and train.height == 30  # 25% of the exchanges, as 5 whole conversations
    conversations = lambda f: {e.split("-")[0] for e in f["exchange_id"]}
    assert not conversations(train) & conversations(test)
    assert split_test(frame, 0.25)[1].equals(test)  # stable
    assert split_test(frame, 3)[1].height == 4  # a count: whole conversations until it is reached
    assert split_test(frame, 0.99)[0].height == 2  # one conversation is always left to train on


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


# ---- chosen samples that fit the prompt --------------------------------------------------------------
LANGUAGES = ("en", "zh", "es", "fr", "de", "ko", "ja", "pt", "ru")


def test_meta_talk_table_has_every_kind_in_every_language() -> None:
    table, version = load_meta_talk()  # validates: known kinds, patterns compile, each matches its example
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    have = set(table.select("kind", "language").iter_rows())
    for lang in LANGUAGES:
        for kind in ("preamble", "meta", "no_engagement"):
            assert (kind, lang) in have, (kind, lang)


def test_meta_talk_table_rows_are_checked(tmp_path: Path) -> None:
    head = "# version: 1.0.0\nkind,language,pattern,example\n"
    (tmp_path / "miss.csv").write_text(head + 'meta,en,"\\bprevious answer\\b","an unrelated text"\n')
    with pytest.raises(ConfigError, match="miss their own example"):
        load_meta_talk(tmp_path / "miss.csv")
    (tmp_path / "kind.csv").write_text(head + 'praise,en,"great","great"\n')
    with pytest.raises(ConfigError, match="kind not in"):
        load_meta_talk(tmp_path / "kind.csv")
    (tmp_path / "nover.csv").write_text("kind,language,pattern,example\n")
    with pytest.raises(ConfigError, match="version"):
        load_meta_talk(tmp_path / "nover.csv")


CAPITAL = "What is the capital of Australia? Please answer in one sentence."
# (sample, request, expected: the cleaned text, or the drop reason in brackets)
SAMPLES = [
    # a leading revision preamble is stripped where the rest stands alone
    ("Here's a revised version of the response that addresses your concern:\n\nThe capital of Australia is Canberra.",
     CAPITAL, "The capital of Australia is Canberra."),
    ("Sure! Here is an improved response: Canberra is the capital of Australia.", CAPITAL,
     "Canberra is the capital of Australia."),
    ("**Revised response:**\n\nCanberra is the capital of Australia.", CAPITAL, "Canberra is the capital of Australia."),
    ("I apologize for the confusion. You're right, Canberra is the capital of Australia.", CAPITAL,
     "Canberra is the capital of Australia."),
    ("Canberra is the capital of Australia. I hope this revised version better addresses your needs.", CAPITAL,
     "Canberra is the capital of Australia."),
    ("以下是修改后的版本：\n\n澳大利亚的首都是堪培拉。", "澳大利亚的首都是哪里？", "澳大利亚的首都是堪培拉。"),
    ("Aquí tienes una versión revisada: La capital de Australia es Canberra.", "¿Cuál es la capital de Australia?",
     "La capital de Australia es Canberra."),
    ("Voici une version révisée : La capitale de l'Australie est Canberra.", "Quelle est la capitale de l'Australie ?",
     "La capitale de l'Australie est Canberra."),
    ("Hier ist eine überarbeitete Version: Die Hauptstadt Australiens ist Canberra.", "Was ist die Hauptstadt?",
     "Die Hauptstadt Australiens ist Canberra."),
    ("Aqui está uma versão revisada: A capital da Austrália é Canberra.", "Qual é a capital da Austrália?",
     "A capital da Austrália é Canberra."),
    ("Вот исправленная версия: Столица Австралии — Канберра.", "Какая столица Австралии?", "Столица Австралии — Канберра."),
    ("다음은 수정된 버전입니다: 호주의 수도는 캔버라입니다.", "호주의 수도는?", "호주의 수도는 캔버라입니다."),
    ("以下は修正版です：オーストラリアの首都はキャンベラです。", "オーストラリアの首都は？", "オーストラリアの首都はキャンベラです。"),
    # a preamble with nothing standing after it
    ("Here's a revised version:", CAPITAL, "[preamble_only]"),
    ("Sure! I apologize for the confusion in my previous response.", CAPITAL, "[preamble_only]"),
    # meta-talk about a previous answer, the user or the feedback, anywhere: dropped
    ("I've made a few adjustments to the original response. Canberra is the capital.", CAPITAL, "[meta_talk]"),
    ("The user requested a correction. The capital is Canberra.", CAPITAL, "[meta_talk]"),
    ("Canberra is the capital, as I said in my previous answer.", CAPITAL, "[meta_talk]"),
    ("Based on your feedback, the capital is Canberra.", CAPITAL, "[meta_talk]"),
    ("我对原来的回答做了一些调整。首都是堪培拉。", "澳大利亚的首都是哪里？", "[meta_talk]"),
    ("He realizado algunos ajustes a la respuesta original.", "¿Cuál es la capital?", "[meta_talk]"),
    ("J'ai apporté quelques modifications à la réponse originale.", "Quelle est la capitale ?", "[meta_talk]"),
    ("Der Benutzer hat eine Korrektur angefordert.", "Was ist die Hauptstadt?", "[meta_talk]"),
    ("O usuário solicitou uma correção.", "Qual é a capital?", "[meta_talk]"),
    ("Я внёс несколько изменений в исходный ответ.", "Какая столица?", "[meta_talk]"),
    ("원래 답변을 몇 가지 수정했습니다.", "호주의 수도는?", "[meta_talk]"),
    ("元の回答にいくつか調整を加えました。", "首都は？", "[meta_talk]"),
    ("Here's a revised version: as the user requested a correction, Canberra.", CAPITAL, "[meta_talk]"),
    # no engagement with the request
    ("I'm ready to assist you with any question you have.", CAPITAL, "[no_engagement]"),
    ("Sure, I'd be happy to help!", CAPITAL, "[no_engagement]"),
    ("Please provide the text you'd like me to revise.", CAPITAL, "[no_engagement]"),
    ("我随时准备回答您的任何问题。", "澳大利亚的首都是哪里？", "[no_engagement]"),
    ("Estoy listo para ayudarte con cualquier pregunta.", "¿Cuál es la capital?", "[no_engagement]"),
    ("Je suis prêt à vous aider avec toute question.", "Quelle est la capitale ?", "[no_engagement]"),
    ("Ich bin bereit, Ihnen bei jeder Frage zu helfen.", "Was ist die Hauptstadt?", "[no_engagement]"),
    ("Estou pronto para ajudar com qualquer pergunta.", "Qual é a capital?", "[no_engagement]"),
    ("Я готов помочь вам с любым вопросом.", "Какая столица?", "[no_engagement]"),
    ("어떤 질문이든 도와드릴 준비가 되어 있습니다.", "호주의 수도는?", "[no_engagement]"),
    ("どんな質問でもお手伝いする準備ができています。", "首都は？", "[no_engagement]"),
    # length/overlap: short, and not one content word of a long request
    ("That sounds great, thanks.", "Explain how photosynthesis converts sunlight into chemical energy in plants.",
     "[off_topic]"),
    # answers that engage with the request are kept as they are
    ("Here's the Python function:\n\ndef reverse(s):\n    return s[::-1]", "Write a Python function that reverses a string.",
     "Here's the Python function:\n\ndef reverse(s):\n    return s[::-1]"),
    ("Unlike the previous version of Python, 3.12 adds better error messages.", "What changed in Python 3.12?",
     "Unlike the previous version of Python, 3.12 adds better error messages."),
    ("Canberra.\n", "What is the capital of Australia?", "Canberra.\n"),  # nothing stripped: not even a newline
    ("Photosynthesis converts sunlight into chemical energy.", "Explain how photosynthesis converts sunlight.",
     "Photosynthesis converts sunlight into chemical energy."),
    ("", CAPITAL, ""),  # empty: left for the degenerate-sample check
]


def test_clean_samples_strips_preambles_and_drops_meta_talk_by_reason() -> None:
    frame = pl.DataFrame({"sample": [s for s, _, _ in SAMPLES], "request": [r for _, r, _ in SAMPLES]}).with_row_index()
    kept, dropped, stripped = clean_samples(frame, "sample", pl.col("request"), CleanSpec())
    got = dict.fromkeys(range(len(SAMPLES)), None) | dict(zip(kept["index"], kept["sample"], strict=True))
    for i, (sample, _, want) in enumerate(SAMPLES):
        if want.startswith("["):
            assert got[i] is None, (sample, got[i])
        else:
            assert got[i] == want, sample
    expected = {}
    for _, _, want in SAMPLES:
        if want.startswith("["):
            expected[want[1:-1]] = expected.get(want[1:-1], 0) + 1
    assert dropped == expected
    assert stripped == sum(1 for s, _, want in SAMPLES if not want.startswith("[") and want != s)

    # strip: false drops what would have been stripped; the overlap check can be turned off
    kept2, dropped2, stripped2 = clean_samples(frame, "sample", pl.col("request"),
                                               CleanSpec(strip=False, max_off_topic_words=0))
    # every sample with a preamble goes: the stripped ones, and the one whose preamble came before meta-talk
    assert stripped2 == 0 and dropped2["preamble_only"] == expected["preamble_only"] + stripped + 1
    assert dropped2["meta_talk"] == expected["meta_talk"] - 1
    assert "off_topic" not in dropped2 and kept2.height == kept.height - stripped + expected["off_topic"]


def test_request_of_is_the_last_user_turn() -> None:
    frame = pairs_frame(2).with_columns(
        prompt=pl.concat_list("prompt", pl.lit([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
                                                {"role": "assistant", "content": "c"}],
                                               dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))))
    )
    assert frame.select(request_of(pl.col("prompt")))[:, 0].to_list() == ["b", "b", "b"]
