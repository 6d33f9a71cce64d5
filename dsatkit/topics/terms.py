"""Distinctive terms of each topic: class-based TF-IDF over the requests (offline naming).

In: the distinct request texts, their topic and their weight (how many exchanges share the text).
Out: per topic, its terms best first. A topic's documents are counted as one document (BERTopic's
c-TF-IDF): a term scores by its frequency in the topic times log(1 + A / its frequency over all topics),
A the average number of terms per topic, so words every topic uses sink and the topic's own rise.

Tokenisation is language-aware: words of two letters or more for scripts that separate words with
spaces (Latin, Cyrillic, Greek, Arabic, Hangul, ...). Chinese and Japanese have no spaces: runs of Han
characters are cut at common function characters (的, 了, 是, 个, ...) and the pieces become character
bigrams (爬虫, 程序); katakana runs (loanwords) are kept whole; hiragana runs (Japanese particles and
endings) are dropped. Counting is scikit-learn's CountVectorizer with this analyser.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KATAKANA = "\u30a0-\u30ff"
_HIRAGANA = "\u3040-\u309f"
_TOKEN = re.compile(
    rf"(?P<han>[{_HAN}]+)|(?P<hira>[{_HIRAGANA}]+)|[{_KATAKANA}]{{2,}}|[^\W\d_{_HAN}{_KATAKANA}{_HIRAGANA}]{{2,}}"
)
HAN_FUNCTION_CHARS = "的了是在吗么呢吧和与及或也都就还又把被给让对从到个这那我你他她它们有要会能可怎什为请帮"\
    "嗎麼與還對從給讓個這們會為請幫"  # the same in traditional characters
"""Chinese function characters at which a Han run is cut before it is split into bigrams (so that
爬虫的程序 gives 爬虫 and 程序, not 虫的 and 的程)."""
_HAN_CUT = re.compile(f"[{HAN_FUNCTION_CHARS}]+")
STOP_WORDS = ENGLISH_STOP_WORDS | {"please", "pls", "thanks", "thank", "hi", "hello", "hey"}


def analyze(text: str) -> list[str]:
    """The terms of one text: lower-cased words (stop words dropped), Han character bigrams, katakana words."""
    out: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        run = match.group()
        if match.group("han"):
            for piece in _HAN_CUT.split(run):
                out.extend(piece[i : i + 2] for i in range(len(piece) - 1))
        elif not match.group("hira") and run not in STOP_WORDS:  # hiragana: particles and endings
            out.append(run)
    return out


def class_counts(texts: list[str], classes: np.ndarray, weights: np.ndarray, n_classes: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(n_classes x vocabulary) term counts, each text counted `weight` times in its class, and the vocabulary."""
    vectorizer = CountVectorizer(analyzer=analyze, min_df=1)
    try:
        doc_terms = vectorizer.fit_transform(texts)
    except ValueError:  # no text holds a term (all empty, digits or stop words)
        return sp.csr_matrix((n_classes, 0)), np.array([], dtype=object)
    membership = sp.csr_matrix(
        (weights.astype(np.float64), (classes, np.arange(len(texts)))), shape=(n_classes, len(texts))
    )
    return (membership @ doc_terms).tocsr(), vectorizer.get_feature_names_out()


def top_terms(counts: sp.csr_matrix, vocabulary: np.ndarray, n: int) -> list[list[str]]:
    """The `n` best terms of each class by c-TF-IDF, best first (fewer when a class has fewer terms)."""
    if counts.shape[1] == 0:
        return [[] for _ in range(counts.shape[0])]
    dense = counts.toarray()
    per_class = dense.sum(axis=1, keepdims=True)
    tf = np.divide(dense, per_class, out=np.zeros_like(dense), where=per_class > 0)
    average = dense.sum() / max(int((per_class > 0).sum()), 1)
    idf = np.log1p(average / np.maximum(dense.sum(axis=0), 1e-12))
    score = tf * idf
    # a stable sort: equal scores keep the vocabulary's (alphabetical) order, whatever the platform
    order = np.argsort(-score, axis=1, kind="stable")[:, :n]
    return [[str(vocabulary[j]) for j in row if score[i, j] > 0] for i, row in enumerate(order)]
