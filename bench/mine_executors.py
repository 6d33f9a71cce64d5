"""Throughput of `dsatkit mine` (lexical detector) with the local executor and with the Ray executor.

    python bench/mine_executors.py                       # 1M conversations in 8 parquet shards, 3 rounds
    python bench/mine_executors.py 200000 --shards 4 --repeat 1
    python bench/mine_executors.py 1000000 --workers 1   # Ray workers (default: one per CPU)

Generates N conversations with bench/mine_throughput.py's generator, as `--shards` OpenAI-messages parquet
files (distinct conversation ids), then mines them, each run in a fresh child process, with:
- the local executor;
- the Ray executor as it runs by default: it starts a local cluster inside the run (that start-up is
  part of its time), the driver mines input files from the front while Ray starts and the workers
  take them from the back;
- the same on a running cluster (`--ray-address`): one started apart by `ray start --head` (token
  authentication on, as Ray sets it up), before the run and not timed, as a cluster is used; so this
  run measures the executor's own overhead, without Ray's start-up;
- the Ray executor with its workers only (`ray.driver_mines: false`), on a cluster it starts.
`--repeat` rounds of the four, interleaved (a change in the machine's load hits every kind alike);
prints the median conversations/s of each, how many files the driver mined, the ratios to local
(target on one 2-core machine: Ray >= 0.6x local), the stages' seconds and the machine's load average
before and after.

Where Ray's time goes on this 2-core VM (1M conversations, 8 shards; traced run by run): `ray.init`
blocks ~2-3.5 s (the cluster must be up before this process mines: with mining under way in another
thread, the local raylet did not come up, 4 times of 4); the first actor is up ~6 s later, having
imported dsatkit on cores that the driver is using; a worker then mines a 125k-conversation file in
~4-5 s where the driver takes ~1.6 s, and the driver ingests a worker's parts at ~1.2 s per file. So on
one small machine the workers add about what starting them costs, and the driver mines 7 of the 8
files; the workers-only run shows the executor's overhead when the workers do everything. Measured
(3 interleaved rounds, local median 10.86 s): Ray 0.66x (rounds 0.59, 0.66, 0.68), on a running
cluster 0.72x (0.69, 0.72, 0.75), workers only 0.41x; a second bench run: Ray 0.64x (0.62, 0.66,
0.64), running cluster 0.71x (0.66, 0.77, 0.73), workers only 0.41x. (The previous stop's single runs: 0.58-0.66x.)

Scale-out. The unit of Ray work is one input file: a worker reads it with dsatkit's reader (so a
conversation is never split) in batches of `read.batch_rows` conversations (default 50k), mines each
batch and writes its tables as Arrow part files. A worker's memory therefore follows the batch, not the
file (the local executor, reader + miner + writer over 50k-conversation batches, peaks at ~1 GB RSS on
1M generated conversations); lower `batch_rows` for long conversations. The driver reads finished
parts and writes the store (one DuckDB writer, ~8 CPU-s per 1M conversations), so the cheap
lexical/learned detectors gain little from more nodes; the embedding detector on GPUs and the judge are
what a cluster is for. A 10-node run needs the input files and the output directory on storage that
every node and the driver reach (NFS, a shared volume: parts and claims are written by workers and read
by the driver), dsatkit and its detectors' packages on every node (a detector registered in the
driver's code is shipped to the workers by reference: its module must import there), at least as many
input files as workers (a file is never split: shards of 0.5-2M conversations), `--ray-address auto`
from a node of the cluster, and `ray.gpus_per_worker` for a GPU detector (the driver then leaves the
mining to the workers).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl

_CHILD = """
import json, sys, time
from dsatkit.runtime import configure_process
configure_process()  # as the dsatkit command does, before Polars loads
from dsatkit.config import MineConfig
from dsatkit.pipeline import mine
executor, out, workers, driver_mines, address, *paths = sys.argv[1:]
ray = {"workers": int(workers)} if int(workers) else {}
ray["driver_mines"] = driver_mines == "1"
if address != "-":
    ray["address"] = address
t0 = time.perf_counter()
r = mine(paths, out, MineConfig(detectors=["lexical"], executor=executor, ray=ray))
wall = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "rss_mb": hwm / 1024, "conversations": r.summary.conversations,
                  "dsat": r.summary.dsat, "timings": r.summary.timings_s, "driver_files": len(r.summary.driver_files)}))
"""


def _generator():
    spec = importlib.util.spec_from_file_location("mine_throughput", Path(__file__).with_name("mine_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def write_shards(n: int, shards: int, work: Path) -> list[Path]:
    """`shards` parquet files of n/shards conversations, ids made distinct per shard."""
    generate = _generator()
    paths = []
    for i in range(shards):
        raw = work / f"raw-{i}.parquet"
        generate(n // shards, raw, seed=i)
        path = work / f"shard-{i}.parquet"
        pl.read_parquet(raw).with_columns(pl.format("s{}-{}", pl.lit(i), pl.col("id")).alias("id")).write_parquet(
            path, compression="zstd", row_group_size=50_000)
        raw.unlink()
        paths.append(path)
    return paths


@contextlib.contextmanager
def running_cluster(cpus: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray cluster started apart from any run, as `ray start --head` starts one (in a temporary directory
    of its own, with token authentication and a token of its own), for as long as the block runs; yields
    its address and the environment that a process joining it needs. Stopped by ending its processes
    (`ray stop` would end every Ray cluster of the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={root}"],
                   check=True, capture_output=True, timeout=180, env=env)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        _end_processes(root)
        shutil.rmtree(root, ignore_errors=True)


def _end_processes(root: str) -> None:
    """SIGKILL the processes whose command line names `root`, and every process under them."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    doomed = set()
    for pid in parent:
        with contextlib.suppress(OSError):
            if root.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                doomed.add(pid)
    grew = True
    while grew:
        below = {pid for pid, ppid in parent.items() if ppid in doomed} - doomed
        doomed |= below
        grew = bool(below)
    for pid in doomed:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def run(executor: str, paths: list[Path], out: Path, workers: int, driver_mines: bool = True,
        cluster: tuple[str, dict[str, str]] | None = None) -> dict:
    """One `mine` in a fresh child process (on `cluster`, an address and its environment, when given)."""
    os.sync()
    done = subprocess.run([sys.executable, "-c", _CHILD, executor, str(out), str(workers), str(int(driver_mines)),
                           cluster[0] if cluster else "-", *map(str, paths)],
                          check=True, capture_output=True, text=True, env=cluster[1] if cluster else None)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


RUNS = {  # name -> (executor, the driver mines too, on a cluster started apart from the run)
    "local": ("local", True, False),
    "ray": ("ray", True, False),
    "ray, running cluster": ("ray", True, True),
    "ray, workers only": ("ray", False, False),
}


def main(n: int, shards: int, workers: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dsatkit-bench-") as tmp:
        paths = write_shards(n, shards, Path(tmp))
        load_before = os.getloadavg()
        t0 = time.time()
        results: dict[str, list[dict]] = {name: [] for name in RUNS}
        for _ in range(repeat):  # interleaved, so that a change in the machine's load hits every kind alike
            for name, (executor, driver_mines, apart) in RUNS.items():
                out = Path(tmp) / "mined"
                if apart:
                    with running_cluster(os.cpu_count() or 1) as cluster:
                        results[name].append(run(executor, paths, out, workers, driver_mines, cluster))
                else:
                    results[name].append(run(executor, paths, out, workers, driver_mines))
        load_after = os.getloadavg()
    walls = {name: statistics.median(r["wall"] for r in runs) for name, runs in results.items()}
    for name, runs in results.items():
        r = runs[-1]
        assert all(x["dsat"] == results["local"][0]["dsat"] and x["conversations"] == n for x in runs), name
        each = ", ".join(f"{x['wall']:.2f}" for x in runs)
        print(f"{name}: {n:,} conversations in {walls[name]:.2f} s (median of {each}) = {n / walls[name]:,.0f} conv/s  "
              f"peak RSS (driver) {r['rss_mb']:.0f} MB  dsat {r['dsat']:,}"
              + (f"  files mined by the driver: {[x['driver_files'] for x in runs]} of {shards}" if name != "local" else ""))
        print(f"    stages (last run): {r['timings']}")
    for name in RUNS:
        if name != "local":
            ratios = ", ".join(f"{a['wall'] / b['wall']:.2f}" for a, b in zip(results["local"], results[name]))
            print(f"{name} / local throughput: {walls['local'] / walls[name]:.2f}x (medians; run by run: {ratios})"
                  + (" (target >= 0.6x)" if name == "ray" else ""))
    print(f"{shards} shards, {os.cpu_count()} CPUs, {workers or 'default'} Ray workers, {repeat} rounds")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} ({time.time() - t0:.0f} s of runs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, nargs="?", default=1_000_000, help="conversations (default 1M)")
    parser.add_argument("--shards", type=int, default=8, help="input parquet files (default 8)")
    parser.add_argument("--workers", type=int, default=0, help="Ray mining workers (default: one per CPU)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every run, interleaved; medians (default 3)")
    args = parser.parse_args()
    main(args.n, args.shards, args.workers, args.repeat)
