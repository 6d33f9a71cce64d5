"""Adapter overhead of `dsatkit train`: the same pairs, the same DPOConfig, trained two ways.

- adapter: `dsatkit train` (one round, sampler.backend precomputed = the pairs' own chosen), in-process
  through `dsatkit.cli.main`, so it pays for loading pairs via DuckDB, writing round-N/pairs.parquet,
  checkpointing, the train_rounds row and the distinct-2 metric;
- direct: `trl.DPOTrainer(model=PATH, args=DPOConfig(...), ...)`, `train()`, `save_model()`.

Each run is a fresh child process (no warm caches shared between the two); the time counted starts
after `import torch, trl` (paid by both) and ends when the model is saved; wall time and the child's
CPU time (user + sys, steadier on a shared machine) are both reported, medians over the repeats. Runs alternate
(adapter, direct, adapter, ...) so drift in machine load hits both.

    python bench/train_overhead.py [--pairs 400] [--hidden 256] [--layers 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

DPO = {
    "beta": 0.1,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.1,
    "optim": "rmsprop",
    "loss_type": ["sigmoid", "sft"],
    "loss_weights": [1.0, 0.001],
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "max_length": 256,
    "bf16": False,
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "seed": 0,
    "disable_tqdm": True,
}

WORDS = ["the", "answer", "is", "that", "we", "should", "check", "each", "step", "carefully", "and", "explain", "why", "the", "result", "holds", "for", "every", "case", "the", "user", "asked", "about", "including", "edge", "cases", "and", "units"]


def make_data(work: Path, n: int, hidden: int, layers: int) -> tuple[Path, Path]:
    """A tiny-family model and `n` DSAT pairs whose chosen is already filled in (no sampling)."""
    import polars as pl

    from dsatkit.schema import PAIRS, conform
    from dsatkit.trainers.tiny import build_tiny

    model = build_tiny(work / "model", seed=0, hidden_size=hidden, num_layers=layers)

    def text(i: int, k: int, words: list[str] = WORDS) -> str:
        return " ".join(words[(i * 7 + j * k) % len(words)] for j in range(40 + i % 30))

    good, bad = WORDS[::2], WORDS[1::2]  # disjoint vocabularies: no pair is a near-duplicate

    rows = [
        {
            "exchange_id": f"ex-{i:05d}",
            "prompt": [{"role": "user", "content": f"Question {i}: " + text(i, 3)}],
            "chosen": [{"role": "assistant", "content": text(i, 5, good)}],
            "rejected": [{"role": "assistant", "content": text(i, 11, bad)}],
            "feedback": "That's wrong.",
            "origin": "dsat",
        }
        for i in range(n)
    ]
    pairs = work / "pairs.parquet"
    conform(pl.DataFrame(rows), PAIRS).write_parquet(pairs)
    return model, pairs


def run_adapter(model: str, pairs: str, out: str) -> float:
    import torch  # noqa: F401 - imported by both modes before the clock starts
    import trl  # noqa: F401
    import yaml

    recipe = {
        "model": model, "method": "drift", "rounds": 1, "data": {"path": pairs},
        "sampler": {"backend": "precomputed"}, "dpo": DPO, "output_dir": out, "seed": 0,
        "metrics": {"embedding_model": None},
    }
    path = Path(out).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    t0 = time.perf_counter()
    from dsatkit.cli import main

    main(["train", str(path)])
    return time.perf_counter() - t0


def run_direct(model: str, pairs: str, out: str) -> float:
    import torch  # noqa: F401
    import trl  # noqa: F401

    t0 = time.perf_counter()
    import polars as pl
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model)
    ds = Dataset.from_polars(pl.read_parquet(pairs).select("prompt", "chosen", "rejected"))
    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=out, **DPO), train_dataset=ds, processing_class=tok)
    trainer.train()
    trainer.save_model(out + "/model")
    return time.perf_counter() - t0


def child(mode: str, model: str, pairs: str, out: str) -> None:
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    import torch  # noqa: F401 - both modes pay these imports before either clock starts
    import trl  # noqa: F401

    c0 = cpu()
    seconds = (run_adapter if mode == "adapter" else run_direct)(model, pairs, out)
    print("RESULT " + json.dumps({"mode": mode, "seconds": seconds, "cpu": cpu() - c0}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("MODE", "MODEL", "PAIRS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    times: dict[str, list[float]] = {"adapter": [], "direct": []}
    cpu: dict[str, list[float]] = {"adapter": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="dsatkit-bench-") as tmp:
        model, pairs = make_data(Path(tmp), args.pairs, args.hidden, args.layers)
        for rep in range(args.repeats):
            for mode in ("adapter", "direct") if rep % 2 == 0 else ("direct", "adapter"):
                out = f"{tmp}/{mode}-{rep}"
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(model), str(pairs), out],
                    capture_output=True, text=True, cwd=ROOT, check=False,
                )
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                result = json.loads(line[-1][7:])
                times[mode].append(result["seconds"])
                cpu[mode].append(result["cpu"])
                print(f"  {mode:8s} run {rep + 1}: wall {result['seconds']:6.2f} s  cpu {result['cpu']:6.2f} s", flush=True)
    adapter, direct = statistics.median(times["adapter"]), statistics.median(times["direct"])
    steps = -(-args.pairs // DPO["per_device_train_batch_size"])
    print(f"pairs {args.pairs}, model hidden {args.hidden} x {args.layers} layers, {steps} DPO steps, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"dsatkit train (adapter): {adapter:.2f} s   TRL DPOTrainer direct: {direct:.2f} s   "
          f"ratio {adapter / direct:.3f} (overhead {100 * (adapter / direct - 1):+.1f}%, target <= +5%)")
    ca, cd = statistics.median(cpu["adapter"]), statistics.median(cpu["direct"])
    print(f"CPU time (less sensitive to other load on the machine): adapter {ca:.2f} s, direct {cd:.2f} s, "
          f"ratio {ca / cd:.3f} ({100 * (ca / cd - 1):+.1f}%)")


if __name__ == "__main__":
    main()
