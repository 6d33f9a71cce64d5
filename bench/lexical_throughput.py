"""Lexical detector figures.

    python bench/lexical_throughput.py [N]              # turns/s on N synthetic exchanges (default 2M, 40% distinct)
    python bench/lexical_throughput.py --eval FILE...   # precision/recall/F1 on labelled jsonl/csv

Throughput: 60% of N exchanges repeat a mix of short and long, DSAT, SAT and neutral feedback (1 in 13
null), 40% are distinct new questions; `LexicalDetector.detect` is timed with cue compilation excluded. Eval files have `feedback` and `label`
(bool, or "dsat"/"sat"/...) columns, optionally `request`, `response` and `category`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl

from dsatkit.detectors.lexical import LexicalDetector
from dsatkit.schema import EXCHANGES, conform

MIX = [
    "that's wrong, the capital is Canberra", "thanks!", "continue", "still doesn't work, I get the same error",
    "write a cover letter for a junior data analyst position at a bank, keep it under 200 words",
    "不对，应该是北京", "спасибо, отлично", "no es lo que pedí", "c'est faux", "danke",
    "Here is my code:\n```python\nfor i in range(10):\n    print(i)\n```\nwhy is it wrong?",
    "Explain the difference between TCP and UDP in simple terms. " * 8, None,
]


def main(n: int = 2_000_000, fresh: float = 0.4) -> None:
    """Time `detect` on n exchanges: `fresh` of them distinct new questions, the rest repeating MIX.

    The detector matches each distinct feedback text once, so the distinct share decides the cost;
    both rates are printed.
    """
    rng = np.random.default_rng(0)
    words = np.array(["how", "what", "why", "can", "you", "the", "a", "to", "of", "in", "my", "is", "it", "write", "make", "code", "list", "data", "error", "python", "email", "story", "explain", "table", "date", "help", "file", "name", "page", "user", "list", "api"])
    n_fresh = int(n * fresh)
    lens = rng.integers(3, 25, n_fresh)
    fresh_texts = (
        pl.DataFrame({"r": np.repeat(np.arange(n_fresh), lens), "w": words[rng.integers(0, len(words), lens.sum())]})
        .group_by("r", maintain_order=True)
        .agg(pl.col("w").str.join(" "))
        .with_columns(pl.col("w") + " #" + pl.col("r").cast(pl.String))["w"]  # distinct
    )
    repeated = pl.Series((MIX * (n // len(MIX) + 1))[: n - n_fresh], dtype=pl.String)
    fb = pl.concat([repeated, fresh_texts]).sample(fraction=1.0, shuffle=True, seed=0)
    ex = conform(pl.DataFrame({"exchange_id": [str(i) for i in range(n)], "feedback": fb,
                               "request": ["what is the capital of australia?"] * n, "response": ["x"] * n}),
                 EXCHANGES)
    det = LexicalDetector()
    det.groups  # noqa: B018  (compile once, outside the timing)
    t = time.perf_counter()
    out = det.detect(ex)
    dt = time.perf_counter() - t
    distinct = fb.n_unique()
    print(f"{n:,} exchanges ({distinct:,} distinct feedback texts) in {dt:.2f} s = {n / dt:,.0f} turns/s, "
          f"{distinct / dt:,.0f} distinct texts/s; DSAT {out['label'].mean():.1%}")


def evaluate(path: str) -> None:
    data = pl.read_ndjson(path) if path.endswith("jsonl") else pl.read_csv(path)
    if data["label"].dtype == pl.String:
        data = data.with_columns(label=pl.col("label") == "dsat")
    ex = conform(data.with_row_index("exchange_id").with_columns(pl.col("exchange_id").cast(pl.String),
                                                                  response=pl.lit("")), EXCHANGES)
    out = LexicalDetector().detect(ex).with_columns(gold=data["label"], gold_cat=data.get_column("category", default=None),
                                                    feedback=data["feedback"])
    tp = (out["label"] & out["gold"]).sum()
    p, r = tp / max(out["label"].sum(), 1), tp / max(out["gold"].sum(), 1)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    cat = out.filter(pl.col("label") & pl.col("gold") & pl.col("gold_cat").is_not_null())
    cat_acc = (cat["category"] == cat["gold_cat"]).mean() if cat.height else float("nan")
    print(f"{path}: n={out.height} dsat={out['gold'].sum()} P={p:.3f} R={r:.3f} F1={f1:.3f} "
          f"category-accuracy(on TP)={cat_acc:.3f}")
    for row in out.filter(pl.col("label") != pl.col("gold")).iter_rows(named=True):
        print(f"  {'FP' if row['label'] else 'FN'} {row['score']:.2f} {row['category']!s:18} {row['feedback'][:70]!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--eval":
        for f in sys.argv[2:]:
            evaluate(f)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
