"""Offline language identification of user turns, two ways:

- `guess`: a whole-column guess (Polars expressions: the script, then common words of
  `data/language_words.csv`), cheap enough for every conversation of a log; `mine` fills the language of
  conversations whose logs carry none with it (`fill_turns`, `read.infer_language`);
- `detect`: py3langid (a naive Bayes model over byte n-grams that ships inside its wheel), ~30x dearer
  and better on unlisted Latin-script languages; the labelled corpus is sampled by it.

In: a text column. Out: an ISO 639-1 code per text. `detect` picks from `LANGUAGES` (the languages chat
logs hold most; restricting the model to them keeps short English turns from being called Afrikaans or
Latin) and reads the first `CHARS` characters: the language shows early, and the cost is per byte.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import polars as pl

LANGUAGES = ("en", "zh", "es", "fr", "de", "pt", "it", "ru", "ja", "ko", "tr", "ar", "nl", "pl", "uk", "fa", "he",
             "hi", "id", "vi", "th", "cs", "sv")
CHARS = 400


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    return ident


def detect(texts: pl.Series, chars: int = CHARS) -> pl.Series:
    """The language code of each text's first `chars` characters (null for a null or blank text); each
    distinct text is classified once."""
    ident = _identifier()
    cut = texts.cast(pl.String).str.slice(0, chars).str.strip_chars()
    distinct = cut.drop_nulls().filter(cut.drop_nulls() != "").unique()
    codes = pl.DataFrame({"t": distinct, "code": [ident.classify(t)[0] for t in distinct]},
                         schema={"t": pl.String, "code": pl.String})
    return pl.DataFrame({"t": cut}).join(codes, on="t", how="left", maintain_order="left")["code"].alias("language")


# -- a whole-column guess, cheap enough for every conversation that `mine` reads ---------------------

GUESS_CHARS = 300
"""Characters of a text that `guess` reads."""

SCRIPTS: tuple[tuple[str, str, int], ...] = (
    # (language, the characters of its script, how many Latin characters one of them is worth: a CJK
    # character carries about a word). Japanese is told from Chinese by its kana, Persian from Arabic
    # and Ukrainian from Russian by letters the other lacks (`_VARIANTS`)
    ("ja", r"[\p{Hiragana}\p{Katakana}]", 4),
    ("zh", r"\p{Han}", 4),
    ("ko", r"\p{Hangul}", 3),
    ("ru", r"\p{Cyrillic}", 1),
    ("ar", r"\p{Arabic}", 1),
    ("he", r"\p{Hebrew}", 1),
    ("hi", r"\p{Devanagari}", 1),
    ("th", r"\p{Thai}", 1),
    ("el", r"\p{Greek}", 1),
)
_VARIANTS = {"uk": ("ru", "[іїєґІЇЄҐ]"), "fa": ("ar", "[پچژگکی]")}
"""A language written in another's script -> (that language, letters only it uses)."""
SCRIPT_SHARE = 0.3
"""A non-Latin script names the text's language when its weighted characters reach this share of the
text's ASCII characters (so a Chinese question over pasted code is Chinese, and an English text with a
glued UI suffix such as "지금 번역하기" is English)."""

ENGLISH_WORDS = 3
"""A plain-ASCII text with this many English words of the word table is English without a vote."""


@cache
def _words() -> pl.DataFrame:
    """The word list: (language, word), from `data/language_words.csv` (a word may belong to several;
    the languages' order there breaks ties)."""
    table = pl.read_csv(files("dsatkit") / "data" / "language_words.csv", schema={"language": pl.String, "words": pl.String})
    return table.select("language", word=pl.col("words").str.split(" ")).explode("word").unique(maintain_order=True)


@cache
def _alternations() -> tuple[str, str, str]:
    """The regexes of the word table: English words (any case), other languages' words, all words."""
    words = _words()
    return (_alternation(words.filter(pl.col("language") == "en")["word"].to_list(), "i-u"),
            _alternation(words.filter(pl.col("language") != "en")["word"].to_list(), ""),
            _alternation(words["word"].to_list(), ""))


def _alternation(words: list[str], flags: str) -> str:
    return (f"(?{flags})" if flags else "") + r"\b(?:" + "|".join(sorted(set(words), key=len, reverse=True)) + r")\b"


def _script(frame: pl.DataFrame) -> pl.Series:
    """The non-Latin script language of each text of `frame` (`_text`), or null."""
    rest = pl.col("_text").str.replace_all(r"[\x00-\x7F]+", "")  # ASCII is Latin: search only the rest
    frame = frame.select(_rest=rest, _ascii=pl.col("_text").str.len_chars() - rest.str.len_chars())
    frame = frame.with_columns(pl.col("_rest").str.count_matches(pattern).mul(weight).alias(lang)
                               for lang, pattern, weight in SCRIPTS)
    best = pl.max_horizontal(lang for lang, _, _ in SCRIPTS)
    top = pl.when(pl.col("ja") > 0).then(pl.lit("ja"))  # kana among Han characters: Japanese
    for lang, _, _ in SCRIPTS[1:]:
        top = top.when(pl.col(lang) == best).then(pl.lit(lang))
    script = pl.when((best > 0) & (best >= SCRIPT_SHARE * pl.col("_ascii"))).then(top)
    for variant, (base, letters) in _VARIANTS.items():
        script = pl.when((script == base) & pl.col("_rest").str.contains(letters)).then(pl.lit(variant)).otherwise(script)
    return frame.select(script.alias("language"))["language"]


def guess(texts: pl.Series, chars: int = GUESS_CHARS) -> pl.Series:
    """A whole-column language guess: a code per text of the first `chars` characters, null when a text
    shows none (blank, numbers and symbols, or an unlisted Latin-script language). Cheap enough for every
    conversation of a log, where `detect` is not: a non-Latin script decides the language; Latin-script
    texts are told apart by the common words of `data/language_words.csv`, and one in plain ASCII with
    no word of any listed language (a short "continue", a line of code) is taken for English."""
    words = _words()
    frame = pl.DataFrame({"_text": texts.cast(pl.String).str.slice(0, chars)}).with_row_index("_i")
    ascii_only = pl.col("_text").str.len_bytes() == pl.col("_text").str.len_chars()
    frame = frame.with_columns(_ascii_only=ascii_only)
    other = frame.filter(~pl.col("_ascii_only"))
    frame = frame.join(other.select("_i", _script=_script(other)), on="_i", how="left", maintain_order="left")

    latin = frame.filter(pl.col("_script").is_null())
    english, others, all_words = _alternations()
    clear = latin.filter(pl.col("_ascii_only") & (pl.col("_text").str.count_matches(english) >= ENGLISH_WORDS))
    unsure = latin.join(clear.select("_i"), on="_i", how="anti")
    # a plain-ASCII text needs two words of another language to be called it: one with fewer is English
    # (or nothing, without a letter) whatever the vote, which is dearer than this count by far
    lower = pl.col("_text").str.to_lowercase()
    unvoted = unsure.filter(pl.col("_ascii_only") & (lower.str.count_matches(others) < 2))
    unsure = unsure.join(unvoted.select("_i"), on="_i", how="anti")
    ranks = words.select("language").unique(maintain_order=True).with_row_index("_rank")
    voted = (
        unsure.select("_i", word=lower.str.extract_all(all_words))
        .explode("word")
        .join(words, on="word")
        .group_by("_i", "language").len()
        .join(ranks, on="language")
        .sort("_i", "len", "_rank", descending=[False, True, False])
        .unique("_i", keep="first")
        # one word does not outvote English in plain ASCII ("count users per country" is not Italian)
        .join(unsure.select("_i", "_ascii_only"), on="_i")
        .filter(~pl.col("_ascii_only") | (pl.col("len") >= 2) | (pl.col("language") == "en"))
    )
    found = pl.concat([
        clear.select("_i", language=pl.lit("en")),
        unvoted.filter(pl.col("_text").str.contains("[A-Za-z]")).select("_i", language=pl.lit("en")),
        voted.select("_i", "language"),
        # plain ASCII letters with no listed word: English (chat logs' commonest short turns)
        unsure.join(voted, on="_i", how="anti")
        .filter(pl.col("_ascii_only") & pl.col("_text").str.contains("[A-Za-z]"))
        .select("_i", language=pl.lit("en")),
    ])
    out = frame.join(found, on="_i", how="left", maintain_order="left")
    return out.select(pl.coalesce("_script", "language").alias("language"))["language"]


def codes(languages: pl.Series) -> pl.Series:
    """The languages that logs carry as ISO 639 codes, so that they group with the guessed ones: names
    ("English", as WildChat and LMSYS-Chat-1M write them) and tags ("en-US", "EN", "pt_BR") alike (by
    `langcodes`); a value that is neither ("unknown") is kept as it is. Each distinct value is looked up once."""
    distinct = languages.drop_nulls().unique().to_list()
    changed = {v: c for v in distinct if (c := _code(v)) != v}
    return languages.replace(changed) if changed else languages


@cache
def _code(value: str) -> str:
    import langcodes

    text = value.strip()
    try:
        return langcodes.Language.get(text).language or value  # a tag ("und" names no language)
    except ValueError:
        pass
    try:
        return langcodes.find(text).language or value  # a language's name, in English or its own
    except LookupError:
        return value


def fill_turns(turns: pl.DataFrame) -> pl.DataFrame:
    """TURNS with each missing `language` filled by `guess` of its conversation's first user turn (the
    turns of a conversation with no user turn keep theirs null). Turns that carry a language keep it.
    A conversation is a run of consecutive rows with one id, as TURNS are written."""
    if not turns["language"].is_null().any():
        return turns
    cid = pl.col("conversation_id")
    runs = turns.select(
        run=(cid != cid.shift()).fill_null(True).cum_sum().cast(pl.Int64) - 1,
        first_user=(pl.col("role") == "user") & pl.col("language").is_null(),
        content="content",
    )
    users = runs.filter("first_user")
    firsts = users.filter(pl.col("run") != pl.col("run").shift().fill_null(-1))
    by_run = pl.repeat(None, runs["run"].max() + 1, dtype=pl.String, eager=True)  # type: ignore[operator]
    by_run = by_run.scatter(firsts["run"], guess(firsts["content"]))
    return turns.with_columns(pl.coalesce("language", by_run.gather(runs["run"])).alias("language"))
