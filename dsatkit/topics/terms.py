"""Distinctive terms of each topic: class-based TF-IDF over the requests (offline naming).

In: the distinct request texts, their topic and their weight (how many exchanges share the text).
Out: per topic, its terms best first. A topic's documents are counted as one document (BERTopic's
c-TF-IDF): a term scores by its frequency in the topic times log(1 + A / its frequency over all topics),
A the average number of terms per topic, so words every topic uses sink and the topic's own rise.

Tokenisation is language-aware: words of two letters or more for scripts that separate words with
spaces (Latin, Cyrillic, Greek, Arabic, Hangul, ...), and character bigrams for runs of Chinese
characters and Japanese kana, which have no spaces to split on. Counting is scikit-learn's
CountVectorizer with this analyser.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W\d_{_CJK}]{{2,}}")
_IS_CJK = re.compile(rf"[{_CJK}]")
CJK_STOP_BIGRAMS = frozenset({
    # Chinese function words and request framing
    "什么", "怎么", "为什", "一个", "一下", "可以", "我们", "你们", "他们", "这个", "那个", "如何", "请问", "帮我",
    "是否", "以及", "还是", "或者", "因为", "所以", "如果", "但是", "需要", "告诉", "我的", "你的", "的是", "是什",
    "了吗", "这是", "那是", "有什", "我想", "给我",
    # Japanese endings and particles glued to words
    "です", "ます", "して", "した", "くだ", "ださ", "さい", "つい", "いて", "ある", "いる", "ない",
})
STOP_WORDS = ENGLISH_STOP_WORDS | {"please", "pls", "thanks", "thank", "hi", "hello", "hey"}


def analyze(text: str) -> list[str]:
    """The terms of one text: lower-cased words (stop words dropped) and CJK character bigrams."""
    out: list[str] = []
    for run in _TOKEN.findall(text.lower()):
        if _IS_CJK.match(run):
            out.extend(b for b in (run[i : i + 2] for i in range(len(run) - 1)) if b not in CJK_STOP_BIGRAMS)
        elif run not in STOP_WORDS:
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
