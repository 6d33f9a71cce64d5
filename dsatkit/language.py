"""Cheap offline language identification of user turns (py3langid: a naive Bayes model over byte
n-grams that ships inside its wheel), for logs that carry no language and for sampling by language.

In: a text column. Out: an ISO 639-1 code per text, from `LANGUAGES` (the languages chat logs hold
most; restricting the model to them keeps short English turns from being called Afrikaans or Latin).
Texts are cut to their first `CHARS` characters: the language shows early, and the cost is per byte.
"""

from __future__ import annotations

from functools import cache

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
