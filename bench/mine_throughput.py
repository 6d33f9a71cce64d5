"""Throughput of `dsatkit mine` (lexical detector) against a bare DuckDB scan of the same parquet.

    python bench/mine_throughput.py 1000000            # one size
    python bench/mine_throughput.py 100000 1000000     # several sizes, each in fresh processes
    python bench/mine_throughput.py 1000000 --repeat 5 # the median of 5 runs (default 3)
    python bench/mine_throughput.py 1000000 --input jsonl   # the same logs as JSON lines
    python bench/mine_throughput.py 1000000 --input turns   # ... as a flat turn table (parquet)

For each N: generate N synthetic conversations (~5 turns, realistic lengths) as OpenAI-messages
parquet, time a bare DuckDB scan that reads every content string, then the whole `mine` run in a
child process (so peak RSS is the run's own), `--repeat` times (wall times on a shared 2-core VM
vary by +-10%), and print the median run's conversations/s, the highest peak RSS and the ratio.
Targets (2 cores): >= 50,000 conversations/s at N = 1,000,000; peak RSS growing < 1.5x when N grows
10x; wall time within 10x of the bare scan. The targets are for the default input (OpenAI-messages
parquet); `--input jsonl|turns` writes the same conversations in another shape, and the bare scan
reads that file's contents the same way (DuckDB's JSON reader for JSON lines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq

USER = [
    "how do I reverse a list in python",
    "write a short poem about the sea",
    "what is the capital of australia?",
    "explain quantum entanglement to a 10 year old",
    "translate this to french: the meeting is moved to friday",
    "summarize the following text in three bullet points: ",
    "give me a sql query that counts users per country",
    "why does my react component render twice",
]
FEEDBACK = [  # ~20% DSAT, ~20% SAT, ~60% neutral, as in annotated WildChat samples
    "that's wrong, try again", "no, I meant in javascript", "this is not what I asked", "still doesn't work",
    "不对，重新回答", "está mal", "das ist falsch", "too long, I said 3 bullet points",
    "thanks!", "perfect", "great, thanks", "спасибо", "merci beaucoup", "thank you so much", "gracias",
    "that works, thanks",
    "continue", "ok", "next", "go on", "now translate it to spanish", "write it in python",
    "more examples please", "and the second one?", "explain step 3", "make it rhyme", "add comments",
    "what about for 10 people?", "ok now a shorter version for twitter", "give me 5 more", "继续",
    "продолжай", "y en inglés?", "et maintenant en anglais", "weiter", "ok, and how do I deploy it?",
    "can you add error handling?", "now write the tests", "summarize it", "what does line 4 do?",
]
def _vocab(rng: np.random.Generator, size: int = 5000) -> pl.Series:
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    words = {"".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(size)}
    return pl.Series(sorted(words))


def _texts(rng: np.random.Generator, vocab: pl.Series, n: int, lo: int, hi: int) -> pl.Series:
    """n distinct texts of lo..hi random words (so that nothing compresses to a dictionary)."""
    lens = rng.integers(lo, hi, size=n)
    words = vocab.gather(rng.integers(0, len(vocab), size=int(lens.sum())))
    rows = np.repeat(np.arange(n), lens)
    return pl.DataFrame({"r": rows, "w": words}).group_by("r", maintain_order=True).agg(
        pl.col("w").str.join(" ")
    )["w"]


def generate(n: int, path: Path, seed: int = 0, chunk: int = 100_000) -> None:
    """Write n conversations of user/assistant/user/assistant/user turns to parquet.

    Assistant answers are 30-160 random words (~600 bytes), requests a template plus a few words.
    Follow-up user turns are 60% drawn from a list of what users type (real logs repeat "thanks",
    "continue", "wrong" endlessly) and 40% distinct new questions of 3-25 words.
    """
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    writer = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        user = pl.Series(np.array(USER)[rng.integers(0, len(USER), m)]) + " " + _texts(rng, vocab, m, 2, 12)
        fb = np.array(FEEDBACK, dtype=object)[rng.integers(0, len(FEEDBACK), (m, 2))]
        fresh = rng.random((m, 2)) >= 0.6
        for col in (0, 1):
            fb[fresh[:, col], col] = _texts(rng, vocab, int(fresh[:, col].sum()), 3, 25).to_numpy()
        frame = pl.DataFrame({
            "id": pl.Series([f"conv-{i}" for i in range(start, start + m)]),
            "u0": user, "a0": _texts(rng, vocab, m, 30, 160), "u1": fb[:, 0].astype(str),
            "a1": _texts(rng, vocab, m, 30, 160), "u2": fb[:, 1].astype(str), "model": ["gpt-x"] * m,
        })
        frame = frame.select(
            "id", "model",
            messages=pl.concat_list(
                pl.struct(role=pl.lit(r), content=pl.col(c))
                for r, c in (("user", "u0"), ("assistant", "a0"), ("user", "u1"), ("assistant", "a1"),
                             ("user", "u2"))
            ),
        )
        table = frame.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=50_000)
    assert writer is not None
    writer.close()


def convert(source: Path, path: Path, shape: str) -> None:
    """Rewrite the OpenAI-messages parquet `source` as JSON lines or as a flat turn table, by row group."""
    pf = pq.ParquetFile(source)
    with open(path, "wb") if shape == "jsonl" else contextlib.nullcontext() as out:
        writer = None
        for i in range(pf.num_row_groups):
            frame = pl.from_arrow(pf.read_row_group(i))
            assert isinstance(frame, pl.DataFrame)
            if shape == "jsonl":
                frame.write_ndjson(out)
                continue
            flat = frame.explode("messages").select(
                conversation_id="id", turn_index=pl.int_range(pl.len()).over("id"), model="model",
                role=pl.col("messages").struct.field("role"), content=pl.col("messages").struct.field("content"),
            ).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, flat.schema, compression="zstd")
            writer.write_table(flat, row_group_size=250_000)  # the same conversations per group
        if writer is not None:
            writer.close()


SCANS = {
    "parquet": "select sum(length(m.content)) from (select unnest(messages) m from read_parquet('{}'))",
    "turns": "select sum(length(content)) from read_parquet('{}')",
    "jsonl": "select sum(length(m.content)) from (select unnest(messages) m from read_json('{}', "
    "format = 'newline_delimited'))",
}
"""The bare scan of each input shape: read every content string, nothing else."""


def bare_scan(path: Path, shape: str) -> float:
    t0 = time.perf_counter()
    duckdb.sql(SCANS[shape].format(path)).fetchall()
    return time.perf_counter() - t0


_CHILD = """
import json, sys, time
from dsatkit.runtime import configure_process
configure_process()  # as the dsatkit command does, before Polars loads
from dsatkit.config import MineConfig
from dsatkit.pipeline import mine
t0 = time.perf_counter()
r = mine([sys.argv[1]], sys.argv[2], MineConfig(detectors=["lexical"]))
wall = time.perf_counter() - t0
# VmHWM is this process's own peak: ru_maxrss would carry the parent's peak over the exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "rss_mb": hwm / 1024, "conversations": r.summary.conversations,
                  "dsat": r.summary.dsat, "timings": r.summary.timings_s}))
"""


def run(n: int, work: Path, repeat: int, shape: str) -> dict:
    """Scan once (best of 2), then mine `repeat` times into fresh directories; the median run counts."""
    path = work / _name(n, shape)
    scan = min(bare_scan(path, shape) for _ in range(2))
    runs = []
    for i in range(repeat):
        os.sync()  # nothing left over from the previous run is flushed during this one
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(work / f"mined-{n}-{i}")],
                             check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        shutil.rmtree(work / f"mined-{n}-{i}")
    runs.sort(key=lambda r: r["wall"])
    res = dict(runs[len(runs) // 2])
    res.update(n=n, scan=scan, conv_per_s=n / res["wall"], ratio=res["wall"] / scan,
               walls=[r["wall"] for r in runs], rss_max=max(r["rss_mb"] for r in runs))
    return res


def _name(n: int, shape: str) -> str:
    return f"logs-{n}." + {"parquet": "parquet", "turns": "turns.parquet", "jsonl": "jsonl"}[shape]


def main(sizes: list[int], repeat: int, shape: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dsatkit-bench-") as tmp:
        # every input is generated and on disk before anything is timed
        for n in sizes:
            generate(n, Path(tmp) / _name(n, "parquet"))
            if shape != "parquet":
                convert(Path(tmp) / _name(n, "parquet"), Path(tmp) / _name(n, shape), shape)
                (Path(tmp) / _name(n, "parquet")).unlink()
        results = [run(n, Path(tmp), repeat, shape) for n in sizes]
    for r in results:
        spread = ", ".join(f"{w:.1f}" for w in r["walls"])
        print(f"N={r['n']:>9,}  mine {r['wall']:7.2f} s (median of {spread})  {r['conv_per_s']:>9,.0f} conv/s  "
              f"peak RSS {r['rss_max']:7.0f} MB  bare scan {r['scan']:.2f} s  ratio {r['ratio']:.1f}x  "
              f"dsat {r['dsat']:,}")
        print(f"           stages of the median run: {r['timings']}")
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"RSS growth {b['rss_max'] / a['rss_max']:.2f}x for N x{b['n'] / a['n']:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="mine runs per size; the median counts")
    parser.add_argument("--input", choices=sorted(SCANS), default="parquet",
                        help="parquet: OpenAI messages (the targets' input); jsonl: the same as JSON lines; "
                             "turns: a flat turn table (parquet)")
    args = parser.parse_args()
    main(args.sizes, args.repeat, args.input)
