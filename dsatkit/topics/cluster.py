"""Topics from request embeddings: scikit-learn k-means, k chosen by silhouette, and a second level.

In: the unit vectors of the distinct requests and their weights (exchanges per text). Out: a topic per
distinct request, its cosine distance to the topic's centre, the centres, and a group per topic.
Everything is seeded: the same vectors, weights and seed give the same topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from dsatkit.topics.config import TopicsConfig

MAX_CANDIDATES = 12
"""How many k (spread geometrically over 2..max_topics) auto compares."""
MAX_GROUPS = 8
THREADS = 1
"""BLAS/OpenMP threads of the clustering. k-means on a few thousand points is too small to gain from
threads, and OpenMP's spinning threads collapse when the cores are shared (measured on the 2-core VM
with other jobs running: KMeans k=40 on 4,000 x 384 7.2 s with 2 threads, 0.66 s with 1; MiniBatchKMeans
over 80,000 points 20.9 s vs 3.3 s)."""


@dataclass
class Clustering:
    """Topics of the distinct requests, topic 0 the largest."""

    labels: np.ndarray
    """topic of each distinct request (int32)"""
    distance: np.ndarray
    """cosine distance of each distinct request to its topic's centre"""
    centres: np.ndarray
    """(topics, dim) unit vectors: the weighted mean direction of each topic's requests"""
    sizes: np.ndarray
    """exchanges per topic"""
    silhouettes: dict[int, float] = field(default_factory=dict)
    """k -> silhouette on the sample (auto only)"""
    dissolved: int = 0
    """clusters smaller than min_topic_size merged into their neighbours"""


def candidate_ks(n_distinct: int, n_total: int, config: TopicsConfig) -> list[int]:
    """The k that auto compares: 2..max_topics, at most one topic per min_topic_size exchanges."""
    hi = min(config.max_topics, n_total // config.min_topic_size, n_distinct)
    if hi < 2:
        return []
    return sorted({int(k) for k in np.round(np.geomspace(2, hi, num=min(hi - 1, MAX_CANDIDATES)))})


def choose_k(vectors: np.ndarray, weights: np.ndarray, config: TopicsConfig, on_step=None) -> tuple[int, dict[int, float], np.ndarray | None]:
    """(k, silhouette per candidate, the chosen k-means centres on the sample) for n_topics = auto.

    A sample of distinct requests, drawn with probability proportional to their weight, is clustered
    at each candidate k; the k with the best silhouette wins (ties: the smaller k). `on_step()` is
    called after each candidate (progress).
    """
    ks = candidate_ks(len(vectors), int(weights.sum()), config)
    if not ks:
        return 1, {}, None
    rng = np.random.default_rng(config.seed)
    m = min(len(vectors), config.sample_size)
    sample = vectors[np.sort(rng.choice(len(vectors), size=m, replace=False, p=weights / weights.sum()))]
    scores: dict[int, float] = {}
    centres: dict[int, np.ndarray] = {}
    points = len(np.unique(sample, axis=0))
    for k in ks:
        if k < points:
            km = KMeans(n_clusters=k, n_init=2, random_state=config.seed).fit(sample)
            if len(np.unique(km.labels_)) > 1:
                scores[k] = float(silhouette_score(sample, km.labels_))
                centres[k] = km.cluster_centers_
        if on_step is not None:
            on_step()
    if not scores:
        return 1, {}, None
    best = max(scores, key=lambda k: (round(scores[k], 6), -k))
    return best, scores, centres[best]


def _normalise(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


def _mean_directions(vectors: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    member = sp.csr_matrix((weights, (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    return _normalise(np.asarray(member @ vectors, dtype=np.float32))


def cluster(vectors: np.ndarray, weights: np.ndarray, config: TopicsConfig, on_step=None) -> Clustering:
    """Topics of the distinct requests (see Clustering): k from `config.n_topics` or `choose_k`,
    MiniBatchKMeans over every distinct request weighted by its exchanges, clusters smaller than
    min_topic_size dissolved into the nearest remaining topic, topics numbered by size."""
    with threadpool_limits(THREADS):
        return _cluster(vectors, weights, config, on_step)


def _cluster(vectors: np.ndarray, weights: np.ndarray, config: TopicsConfig, on_step=None) -> Clustering:
    weights = weights.astype(np.float64)
    scores: dict[int, float] = {}
    init: np.ndarray | str = "k-means++"
    if config.n_topics == "auto":
        k, scores, sample_centres = choose_k(vectors, weights, config, on_step)
        if sample_centres is not None:
            init = sample_centres
    else:
        k = min(config.n_topics, len(vectors))
    if k <= 1:
        labels = np.zeros(len(vectors), dtype=np.int32)
    else:
        km = MiniBatchKMeans(
            n_clusters=k, init=init, n_init=1 if isinstance(init, np.ndarray) else 3,
            random_state=config.seed, batch_size=4096,
        ).fit(vectors, sample_weight=weights)
        labels = km.labels_.astype(np.int32)
    k = max(k, 1)
    sizes = np.bincount(labels, weights=weights, minlength=k)
    keep = sizes >= config.min_topic_size
    if not keep.any():
        keep[np.argmax(sizes)] = True
    dissolved = int((~keep & (sizes > 0)).sum())
    centres = _mean_directions(vectors, weights, labels, k)
    if not keep.all():  # the requests of too-small clusters go to the nearest kept centre
        kept = np.flatnonzero(keep)
        moved = ~keep[labels]
        labels[moved] = kept[np.argmax(vectors[moved] @ centres[kept].T, axis=1)]
    # number the topics by size, largest first (ties: the older number)
    sizes = np.bincount(labels, weights=weights, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    order = order[sizes[order] > 0]
    renumber = np.full(k, -1, dtype=np.int32)
    renumber[order] = np.arange(len(order), dtype=np.int32)
    labels = renumber[labels]
    centres = _mean_directions(vectors, weights, labels, len(order))
    distance = 1.0 - np.einsum("ij,ij->i", vectors, centres[labels])
    return Clustering(labels, np.clip(distance, 0.0, 2.0), centres, sizes[order].astype(np.int64), scores, dissolved)


def group(centres: np.ndarray, sizes: np.ndarray, config: TopicsConfig) -> np.ndarray:
    """The group of each topic (0 the largest group): k-means of the topic centres weighted by size,
    when there are group_min_topics topics or more; else each topic is its own group."""
    k = len(centres)
    if k < config.group_min_topics:
        return np.arange(k, dtype=np.int32)
    n = config.groups if isinstance(config.groups, int) else int(np.clip(round(np.sqrt(k)), 2, MAX_GROUPS))
    n = min(n, k)
    with threadpool_limits(THREADS):
        labels = KMeans(n_clusters=n, n_init=4, random_state=config.seed).fit(centres, sample_weight=sizes).labels_
    totals = np.bincount(labels, weights=sizes, minlength=n)
    order = np.lexsort((np.arange(n), -totals))
    renumber = np.empty(n, dtype=np.int32)
    renumber[order] = np.arange(n, dtype=np.int32)
    return renumber[labels]
