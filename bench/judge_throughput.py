"""Judge throughput against a local OpenAI-compatible server with a fixed latency, and cascade savings.

    python bench/judge_throughput.py [--latency 0.2] [--levels 1 8 32 64] [--per-worker 40]

Part 1 starts `tests/openai_server.py` in its own process (so the server does not share the client's
interpreter) answering every request after `--latency` seconds, and runs `JudgeDetector.detect` on
fresh exchanges at each concurrency, with a real DuckDB cache. Ideal requests/s = concurrency / latency;
the target is >= 0.9 of ideal up to 64.

Part 2 counts the judge calls the cascade makes on a synthetic fixture (`--judge-on all` vs
`candidates` vs `uncertain`) through `dsatkit.pipeline.run_detectors` with the lexical detector.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DSATKIT_QUIET", "1")

from dsatkit.cache import Cache
from dsatkit.config import JudgeConfig, MineConfig
from dsatkit.detectors.judge import JudgeDetector
from dsatkit.schema import EXCHANGES, conform

VERDICT = json.dumps({"rationale": "the user corrects the answer", "dsat": True, "category": "factual_error",
                      "confidence": 0.9})


def exchanges(n: int, tag: str, feedbacks: list[str | None] | None = None) -> pl.DataFrame:
    feedbacks = feedbacks or ["no, that's wrong"] * n
    return conform(pl.DataFrame({
        "exchange_id": [f"{tag}-{i}" for i in range(n)],
        "conversation_id": [f"{tag}-{i}" for i in range(n)],
        "response_turn": [1] * n,
        "context": [[{"role": "user", "content": f"[{tag}] question {i}: how do I sort a list in Python?"}]
                    for i in range(n)],
        "response": [f"Use sorted(xs) ({i})." for i in range(n)],
        "feedback": feedbacks,
    }), EXCHANGES)


def throughput(latency: float, levels: list[int], per_worker: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--latency", str(latency), "--content", VERDICT],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        print(f"server {url}, latency {latency * 1000:.0f} ms (separate process)")
        print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'ideal':>8} {'ratio':>6}")
        with tempfile.TemporaryDirectory() as tmp:
            cache = Cache(Path(tmp) / "cache.duckdb")
            for c in levels:
                n = c * per_worker
                det = JudgeDetector(JudgeConfig(model="bench", base_url=url, concurrency=c), cache)
                ex = exchanges(n, f"c{c}")
                t0 = time.perf_counter()
                out = det.detect(ex)
                dt = time.perf_counter() - t0
                assert out.height == n and det.stats.calls == n, det.stats
                rate, ideal = n / dt, c / latency
                print(f"{c:>11} {n:>8} {dt:>8.2f} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>6.2f}")
            cached = cache.con.sql("select count(*) from judge_cache").fetchall()[0][0]
            print(f"judge_cache rows written: {cached}")
    finally:
        proc.terminate()
        proc.wait()


FEEDBACK = [
    "no, that's wrong", "that is not what I asked", "thanks, that works!", "perfect, thank you",
    "you ignored my instruction to use bullet points", "ok", "now translate it into French",
    "this doesn't work, I get an error", "great explanation", "can you make it shorter?",
    "I said Python 3, not Python 2", "cool", None, "why is the sky blue?", "useless answer",
    "got it, makes sense now", "wrong again, try harder", "what about lists of tuples?",
]


def cascade(n: int) -> None:
    try:
        import dsatkit.detectors.lexical  # noqa: F401
    except ImportError:
        print("cascade: dsatkit.detectors.lexical is not available yet; skipped")
        return
    from dsatkit.pipeline import run_detectors
    from tests.openai_server import OpenAIServer

    ex = exchanges(n, "fx", [FEEDBACK[i % len(FEEDBACK)] for i in range(n)])
    print(f"\ncascade on {n} exchanges ({ex['feedback'].is_not_null().sum()} with feedback), detectors lexical+judge")
    with OpenAIServer(lambda req: VERDICT) as srv:
        calls = {}
        for mode in ("all", "candidates", "uncertain"):
            srv.clear()
            cfg = MineConfig(detectors=["lexical", "judge"],
                             judge=JudgeConfig(model="bench", base_url=srv.url, judge_on=mode, concurrency=32))
            run_detectors(ex, cfg, None)
            calls[mode] = len(srv.requests)
    for mode, k in calls.items():
        saved = calls["all"] - k
        print(f"  --judge-on {mode:<10} {k:>5} calls  (saves {saved}, {saved / max(calls['all'], 1):.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--per-worker", type=int, default=40, help="requests per unit of concurrency")
    ap.add_argument("--cascade-size", type=int, default=360)
    args = ap.parse_args()
    throughput(args.latency, args.levels, args.per_worker)
    cascade(args.cascade_size)


if __name__ == "__main__":
    main()
