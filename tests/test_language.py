"""Language of conversations whose logs carry none: a whole-column guess from the first user turn."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dsatkit.config import ReadConfig
from dsatkit.language import fill_turns, guess
from dsatkit.logs import read_logs

# what users type first, in the languages the guess knows (short turns included: they are the hard ones)
TEXTS = [
    ("how do I reverse a list in python", "en"),
    ("continue", "en"),
    ("count users per country", "en"),  # one Italian-looking word ("per") does not outvote English
    ("Please tell me the initialization syntax in c++11\nAnswer in English.지금 번역하기", "en"),  # glued UI text
    ("¿cómo puedo ordenar una lista en python?", "es"),
    ("quiero que me escribas un correo para mi jefe", "es"),
    ("Est-ce que tu peux m'expliquer cette fonction ?", "fr"),
    ("Kannst du mir bitte eine E-Mail an meinen Chef schreiben?", "de"),
    ("você pode me explicar como funciona isso?", "pt"),
    ("puoi scrivere una poesia sul mare per me?", "it"),
    ("Kun je dit voor mij vertalen naar het Engels?", "nl"),
    ("tolong buatkan saya surat lamaran kerja", "id"),
    ("帮我写一个Python函数", "zh"),
    ("帮我看看这段代码哪里错了\ndef f(x):\n    return x + 1\nprint(f(2))", "zh"),  # a Chinese question over code
    ("このコードを説明してください", "ja"),
    ("이 코드를 설명해 주세요", "ko"),
    ("Напиши функцию на питоне", "ru"),
    ("Напиши мені вірш про море", "uk"),
    ("اكتب لي قصيدة عن البحر", "ar"),
    ("یک شعر درباره دریا بنویس", "fa"),
    ("כתוב לי שיר על הים", "he"),
    ("मुझे एक कविता लिखो", "hi"),
    ("เขียนกลอนให้หน่อย", "th"),
    ("bạn có thể giúp tôi viết một bài thơ không", "vi"),
]


@pytest.mark.parametrize(("text", "language"), TEXTS, ids=[lang for _, lang in TEXTS])
def test_guess_names_the_language_users_write_in(text: str, language: str):
    assert guess(pl.Series([text])).to_list() == [language]


def test_guess_is_null_where_a_text_shows_no_language_and_keeps_order():
    texts = pl.Series([None, "", "  ", "1234 + 5678", "the cat is on the mat and it is fine", "¿qué es esto?"])
    assert guess(texts).to_list() == [None, None, None, None, "en", "es"]


def test_fill_turns_guesses_per_conversation_and_keeps_given_languages():
    turns = pl.DataFrame({
        "conversation_id": ["a", "a", "a", "b", "b", "c", "d"],
        "role": ["system", "user", "assistant", "user", "assistant", "assistant", "user"],
        "content": ["You are helpful.", "explique-moi cette fonction s'il te plaît", "Bien sûr.",
                    "write a poem about the sea", "The sea...", "Hello!", "hola"],
        "language": [None, None, None, "de", "de", None, "es"],
    })
    filled = fill_turns(turns)
    assert filled["language"].to_list() == ["fr", "fr", "fr", "de", "de", None, "es"]
    assert filled.columns == turns.columns and filled["conversation_id"].to_list() == turns["conversation_id"].to_list()


def test_reading_logs_fills_the_language_unless_switched_off(tmp_path: Path):
    path = tmp_path / "logs.jsonl"
    rows = [
        {"id": "1", "messages": [{"role": "user", "content": "¿puedes explicar esta función de python?"},
                                 {"role": "assistant", "content": "Claro."}]},
        {"id": "2", "messages": [{"role": "user", "content": "이 코드를 설명해 주세요"},
                                 {"role": "assistant", "content": "네."}]},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    turns = pl.concat(b.turns for b in read_logs([str(path)], ReadConfig()))
    assert turns.group_by("conversation_id").agg(pl.col("language").unique()).sort("conversation_id").rows() == [
        ("1", ["es"]), ("2", ["ko"])]
    off = pl.concat(b.turns for b in read_logs([str(path)], ReadConfig(infer_language=False)))
    assert off["language"].null_count() == off.height
