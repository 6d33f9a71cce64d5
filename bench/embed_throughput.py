"""Throughput of the embedding detector stage: dedup, the cache, and overhead over raw `model.encode`.

    HF_HUB_OFFLINE=1 python bench/embed_throughput.py [--turns 50000] [--unique 4000]

1. raw vs stage, on exchanges whose texts are all distinct: texts/s of `EmbeddingDetector.detect`
   (cold, fresh cache) against `model.encode` of exactly the texts the stage encoded, same process,
   same model, same batch size (target: stage >= 0.9x raw).
2. dedup, on --turns exchanges with a realistic repetition profile (a few hundred very frequent short
   feedback turns carry most of the mass, plus a long tail; requests repeat too, as in public logs):
   the stage's cold time against encoding every text without dedup (measured on a random sample of
   the same texts, scaled to the total).
3. warm cache: the same --turns exchanges again with a new detector on the same cache file
   (target: >= 50x faster than cold).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsatkit.cache import Cache
from dsatkit.detectors.embedding import EmbeddingDetector, load_model

FREQUENT = [
    "continue",
    "thanks",
    "thank you",
    "ok",
    "next",
    "go on",
    "more",
    "yes",
    "no",
    "that's wrong",
    "not what I asked",
    "try again",
    "shorter please",
    "in english",
    "translate to english",
    "why?",
    "继续",
    "谢谢",
    "продолжай",
    "спасибо",
    "gracias",
    "sigue",
    "merci",
    "weiter",
    "danke",
    "obrigado",
]
WORDS = [
    "python",
    "sql",
    "poem",
    "story",
    "email",
    "recipe",
    "travel",
    "budget",
    "essay",
    "summary",
    "code",
    "bug",
    "error",
    "test",
    "loop",
    "list",
    "array",
    "function",
    "class",
    "server",
    "database",
    "query",
    "graph",
    "model",
    "price",
    "weather",
    "history",
    "music",
    "film",
    "book",
    "chapter",
    "character",
    "plot",
    "scene",
    "dialogue",
    "marketing",
    "plan",
    "diet",
    "workout",
    "sleep",
    "garden",
    "dog",
    "cat",
    "car",
]
TEMPLATES = [
    "can you make the {0} about {1} shorter",
    "that's not right, the {0} should handle {1}",
    "now rewrite the {0} with {1}",
    "why does the {0} fail on {1}",
    "add {1} to the {0} please",
    "I meant the {0} for {1}, not this",
    "explain the {0} part about {1} again",
    "what about {1} in the {0}",
]


def phrases(rng: np.random.Generator, n: int, seed_words: int = 3) -> list[str]:
    """n distinct-ish short turns from templates and random words (cheap to make, realistic length)."""
    w = rng.choice(WORDS, size=(n, seed_words))
    t = rng.integers(0, len(TEMPLATES), n)
    return [TEMPLATES[k].format(a, f"{b} {c}") + f" #{i}" for i, (k, (a, b, c)) in enumerate(zip(t, w))]


def distinct_exchanges(rng: np.random.Generator, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "exchange_id": [f"u{i}" for i in range(n)],
            "request": [
                f"please write a {a} about {b} and {c} ({i})"
                for i, (a, b, c) in enumerate(rng.choice(WORDS, (n, 3)))
            ],
            "response": [f"Here is the {a} you asked for ({i})." for i, a in enumerate(rng.choice(WORDS, n))],
            "feedback": phrases(rng, n),
        }
    )


def repeated_exchanges(rng: np.random.Generator, n: int, tail: int, requests: int) -> pl.DataFrame:
    """Zipf-like: FREQUENT + 300 more frequent turns take ~70% of the mass, a long tail the rest."""
    head = (
        FREQUENT
        + [f"ok next {w}" for w in WORDS]
        + [f"{a} {b} please" for a in ("more", "less") for b in WORDS[:130]]
    )
    head = head[:300]
    tail_pool = phrases(rng, tail)
    from_head = rng.random(n) < 0.7
    ranks = np.minimum(rng.zipf(1.3, n) - 1, len(head) - 1)
    fb = np.where(
        from_head,
        np.array(head, dtype=object)[ranks],
        np.array(tail_pool, dtype=object)[rng.integers(0, tail, n)],
    )
    req_pool = distinct_exchanges(rng, requests)
    pick = rng.integers(0, requests, n)
    return pl.DataFrame(
        {
            "exchange_id": [f"r{i}" for i in range(n)],
            "request": req_pool["request"].gather(pick),
            "response": req_pool["response"].gather(pick),
            "feedback": pl.Series(fb.tolist(), dtype=pl.String),
        }
    )


def capture(det: EmbeddingDetector) -> list[pl.Series]:
    """Record the texts the stage sends to the model (to feed the raw baseline exactly those)."""
    seen: list[pl.Series] = []
    encode = det.embedder._encode

    def spy(texts: pl.Series, description: str):
        seen.append(texts)
        return encode(texts, description)

    det.embedder._encode = spy
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=50_000)
    ap.add_argument("--unique", type=int, default=4_000, help="exchanges of the raw-vs-stage comparison")
    ap.add_argument("--tail", type=int, default=8_000, help="distinct long-tail feedback turns")
    ap.add_argument("--requests", type=int, default=3_000, help="distinct requests of the repeated profile")
    ap.add_argument("--sample", type=int, default=4_000, help="texts encoded to estimate no-dedup cost")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    import torch

    print(f"torch threads {torch.get_num_threads()}, device cpu")
    model = load_model("all-MiniLM-L6-v2")
    model.encode(["warm up"] * 64, batch_size=64)
    EmbeddingDetector().prepare()  # the shipped classifier is fitted once per process, outside the timings

    # 1. raw vs stage on distinct texts; alternated and best-of-2 each, so neither side pays for a
    # neighbour's CPU burst (the stage runs on a fresh cache file every time: cold)
    ex = distinct_exchanges(rng, args.unique)
    stage_runs, raw_runs = [], []
    for i in range(2):
        cache = Cache(tmp / f"distinct{i}.duckdb")
        det = EmbeddingDetector(cache=cache)
        det._refusal_vectors()
        seen = capture(det)
        t0 = time.perf_counter()
        det.detect(ex)
        stage_runs.append(time.perf_counter() - t0)
        cache.close()
        texts = pl.concat(seen).to_list()
        t0 = time.perf_counter()
        model.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
        raw_runs.append(time.perf_counter() - t0)
    stage_s, raw_s, n = min(stage_runs), min(raw_runs), len(texts)
    print(f"\n[1] distinct: {args.unique:,} exchanges -> {n:,} unique texts encoded by the stage (best of 2)")
    print(f"    raw model.encode : {n / raw_s:8.0f} texts/s ({raw_s:.1f} s)")
    print(f"    detector stage   : {n / stage_s:8.0f} texts/s ({stage_s:.1f} s, all of detect())")
    print(f"    stage / raw      : {raw_s / stage_s:.2f}x  (target >= 0.9x)")

    # 2. dedup on the repeated profile
    ex = repeated_exchanges(rng, args.turns, args.tail, args.requests)
    n_fb = ex["feedback"].n_unique()
    cache = Cache(tmp / "repeated.duckdb")
    det = EmbeddingDetector(cache=cache)
    det._refusal_vectors()
    before = det.stats.encoded
    t0 = time.perf_counter()
    cold = det.detect(ex)
    cold_s = time.perf_counter() - t0
    encoded = det.stats.encoded - before
    cache.close()
    # without dedup every feedback + request (+ the same gated responses) would go through the model
    total = 2 * ex.height + (
        encoded - ex.select(pl.concat_list("feedback", "request").explode().n_unique()).item()
    )
    sample = pl.concat([ex["feedback"], ex["request"]]).sample(args.sample, seed=0).to_list()
    t0 = time.perf_counter()
    model.encode(sample, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
    per_text = (time.perf_counter() - t0) / len(sample)
    nodedup_s = per_text * total
    print(
        f"\n[2] repeated: {ex.height:,} exchanges, {n_fb:,} unique feedback turns, "
        f"{ex['request'].n_unique():,} unique requests; the stage encoded {encoded:,} texts"
    )
    print(f"    cold stage       : {cold_s:.1f} s ({ex.height / cold_s:,.0f} exchanges/s)")
    print(
        f"    without dedup    : ~{nodedup_s:.0f} s ({total:,} texts at the raw rate of a {args.sample:,}-text sample)"
    )
    print(f"    dedup speed-up   : {nodedup_s / cold_s:.1f}x")

    # 3. warm cache: a new detector (as in a new run) on the same cache file
    cache = Cache(tmp / "repeated.duckdb")
    det = EmbeddingDetector(cache=cache)
    det._refusal_vectors()
    t0 = time.perf_counter()
    warm = det.detect(ex)
    warm_s = time.perf_counter() - t0
    cache.close()
    assert det.stats.encoded == 0, det.stats
    assert np.allclose(warm["score"].to_numpy(), cold["score"].to_numpy(), atol=1e-6)
    print(
        f"\n[3] warm cache     : {warm_s:.2f} s, encoded {det.stats.encoded} texts, "
        f"{cold_s / warm_s:.0f}x faster than cold (target >= 50x)"
    )


if __name__ == "__main__":
    main()
