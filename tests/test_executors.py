"""The executors: the local one and the Ray one store the same tables, and a killed Ray run resumes.

Ray tests share one local Ray cluster (2 CPUs), started once for the module; the executor joins it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from dsatkit.config import MineConfig
from dsatkit.detectors import Detector, register_detector
from dsatkit.executors.ray import CLAIMS, DONE, DRIVER, PARTS_DIR, FileMiner, claim
from dsatkit.pipeline import MineResult, mine
from dsatkit.schema import DETECTIONS, conform

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray: pip install 'dsatkit[ray]'")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "logs"
TABLES = ("turns", "exchange_index", "detections", "verdicts", "dsat_records", "pairs", "quarantine",
          "exchanges", "dsat")
"""The stored tables and the two views over them."""
VIEWS = ("exchanges", "dsat")


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        # one logical GPU: Ray hands it out as it would a real one (CUDA_VISIBLE_DEVICES, get_gpu_ids)
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()


def bench(name: str):
    """The module of the bench script `bench/<name>.py` (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(n: int, path: Path, seed: int) -> Path:
    """n conversations as OpenAI-messages parquet, by bench/mine_throughput.py's generator."""
    bench("mine_throughput").generate(n, path, seed=seed)
    return path


def shards(tmp_path: Path, n: int, files: int) -> list[Path]:
    """`files` parquet shards of n/files conversations each (distinct ids: each shard renamed apart)."""
    out = []
    for i in range(files):
        raw = generate(n // files, tmp_path / f"raw-{i}.parquet", seed=i)
        frame = pl.read_parquet(raw).with_columns(pl.format("s{}-{}", pl.lit(i), pl.col("id")).alias("id"))
        path = tmp_path / f"shard-{i}.parquet"
        frame.write_parquet(path)
        raw.unlink()
        out.append(path)
    return out


def assert_same_store(a, b) -> None:
    """Every table of two runs holds the same rows in the same order (both executors write the input
    files' batches in input order), and so every view the same rows; their summaries agree."""
    assert_same_tables(a, b)
    skip = {"run_id", "timings_s", "detectors", "resumed_files", "driver_files"}
    assert a.summary.model_dump(exclude=skip) == b.summary.model_dump(exclude=skip)


def assert_same_tables(a, b) -> None:
    for name in TABLES:
        left, right = a.table(name), b.table(name)
        if name in VIEWS:  # a join: its row order is DuckDB's, run to run
            left, right = left.sort("exchange_id"), right.sort("exchange_id")
        assert left.height == right.height, name
        assert left.equals(right), name


def config(executor: str, **kw) -> MineConfig:
    return MineConfig(detectors=["lexical"], executor=executor, **kw)


@pytest.mark.parametrize("driver_mines", [False, True], ids=["workers-only", "driver-too"])
def test_the_fixture_corpus_gives_the_same_tables_with_either_executor(tmp_path, ray_cluster, driver_mines):
    """27 files in every format, damaged ones, and the same conversations in many files (the later
    copies are quarantined as duplicates, by whichever executor): mined by the Ray workers only, or by
    the driver too (from the front, while the workers take the files from the back)."""
    read = {"skip_bad_files": True}
    local = mine([FIXTURES], tmp_path / "local", config("local", read=read))
    distributed = mine([FIXTURES], tmp_path / "ray", config("ray", read=read, ray={"driver_mines": driver_mines}))
    if not driver_mines:  # the files whose ids repeat an earlier file's are mined again by the driver
        assert 0 < len(distributed.summary.driver_files) < 27
    assert local.summary.quarantine_reasons["duplicate conversation_id"] > 0
    assert local.summary.files == 27 and local.summary.exchanges > 0
    assert_same_store(local, distributed)
    assert not (tmp_path / "ray" / PARTS_DIR).exists()  # the parts go once the store is in


def test_the_ray_executor_says_which_input_file_failed(tmp_path, ray_cluster):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "not a list"\n')
    from dsatkit.errors import InputError

    with pytest.raises(InputError, match="bad.jsonl"):
        mine([FIXTURES / "openai.jsonl", bad], tmp_path / "out", config("ray"))
    assert not (tmp_path / "out" / "dsat.duckdb").exists()


_KILLED_DRIVER = """
import sys
from dsatkit.config import MineConfig
from dsatkit.pipeline import mine
mine(sys.argv[1:-1], sys.argv[-1], MineConfig(detectors=["lexical"], executor="ray",
     ray={"num_cpus": 2, "workers": 1, "object_store_mb": 128, "driver_mines": False}))
"""


def test_a_killed_ray_run_resumes_without_mining_the_finished_files_again(tmp_path, ray_cluster):
    files = shards(tmp_path, 30_000, 6)
    out = tmp_path / "mined"
    parts = out / PARTS_DIR
    child = subprocess.Popen([sys.executable, "-c", _KILLED_DRIVER, *map(str, files), str(out)],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(parts.glob(f"*/{DONE}"))) < 2:
            assert child.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)  # the driver only: its workers are left to die on their own
        child.wait()
    finally:
        time.sleep(3)  # a worker that was writing a file may still rename it into place
        try:
            os.killpg(child.pid, signal.SIGKILL)  # what is left of the cluster the driver started
        except ProcessLookupError:
            pass
    finished = {json.loads(d.read_text())["path"] for d in parts.glob(f"*/{DONE}")}
    assert 2 <= len(finished) < len(files)
    assert not (out / "dsat.duckdb").exists()

    resumed = mine(files, out, config("ray"))  # the driver mines beside the workers, as by default
    assert sorted(resumed.summary.resumed_files) == sorted(finished)
    assert not set(resumed.summary.driver_files) & finished
    assert resumed.summary.conversations == 30_000
    assert_same_store(mine(files, tmp_path / "local", config("local")), resumed)


@pytest.mark.slow
def test_200k_generated_conversations_give_the_same_tables_with_either_executor(tmp_path, ray_cluster):
    files = shards(tmp_path, 200_000, 4)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 200_000
    local = mine(files, tmp_path / "local", config("local"))
    distributed = mine(files, tmp_path / "ray", config("ray", ray={"driver_mines": False}))
    assert distributed.summary.driver_files == []  # all mined by the workers
    assert local.summary.conversations == 200_000 and local.summary.dsat > 0
    assert_same_store(local, distributed)


def test_the_cli_takes_the_executor(tmp_path, ray_cluster):
    out = tmp_path / "mined"
    code = textwrap.dedent(f"""
        from dsatkit.cli import main
        main(["mine", {str(FIXTURES / "openai.jsonl")!r}, "-o", {str(out)!r}, "--detectors", "lexical",
              "--executor", "ray"])
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = mine([FIXTURES / "openai.jsonl"], tmp_path / "local", config("local"))
    from dsatkit.store import connect

    con = connect(out)
    try:
        run = con.sql("select config from runs").fetchall()[-1][0]
        assert json.loads(run)["executor"] == "ray"
        assert con.sql("select count(*) from exchanges").fetchall()[0][0] == runs.summary.exchanges
    finally:
        con.close()


class GpuProbeConfig(BaseModel):
    record_dir: str


class GpuProbe(Detector):
    """Registered in this test module only: writes, per process it runs in, the GPUs Ray gave that
    process; detects nothing."""

    name = "gpu_probe"
    version = "1"
    Config = GpuProbeConfig
    gpus = 1.0

    def __init__(self, config: GpuProbeConfig):
        self.config = config

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        Path(self.config.record_dir, f"{os.getpid()}.json").write_text(json.dumps({
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))
        return conform(exchanges.filter(pl.col("feedback").is_not_null()).select(
            "exchange_id", detector=pl.lit(self.name), score=pl.lit(0.0), label=pl.lit(False),
            category=pl.lit(None, pl.String), detector_version=pl.lit(self.version)), DETECTIONS)


register_detector("gpu_probe", GpuProbe)


def test_a_gpu_worker_gets_its_gpu_and_a_detector_registered_in_code_runs_on_it(tmp_path, ray_cluster):
    """A detector that puts a GPU to use (`gpus = 1`) gets one reserved per worker (here the cluster's
    one logical GPU): the worker sees it as CUDA would, and the driver leaves the mining to the workers.
    The detector class was registered in this module, not in dsatkit: the workers get it from the driver.
    `ray.gpus_per_worker: 0` turns the reservation off."""
    files = shards(tmp_path, 2_000, 2)

    def probing(executor: str, name: str = "") -> MineConfig:
        records = tmp_path / f"records-{name or executor}"
        records.mkdir()
        return MineConfig(detectors=["lexical", "gpu_probe"], executor=executor, ray=ray_settings,
                          stages={"gpu_probe": {"record_dir": str(records)}})

    ray_settings = {}
    done = mine(files, tmp_path / "ray", probing("ray"))
    assert done.summary.driver_files == []
    seen = {f.stem: json.loads(f.read_text()) for f in (tmp_path / "records-ray").glob("*.json")}
    assert seen and str(os.getpid()) not in seen
    assert all(s == {"gpu_ids": ["0"], "cuda_visible_devices": "0"} for s in seen.values())
    assert_same_store(mine(files, tmp_path / "local", probing("local")), done)

    ray_settings = {"gpus_per_worker": 0, "driver_mines": False}
    mine(files, tmp_path / "ray-cpu", probing("ray", "ray-cpu"))
    seen = [json.loads(f.read_text()) for f in (tmp_path / "records-ray-cpu").glob("*.json")]
    assert seen and all(s["gpu_ids"] == [] for s in seen)


def test_a_file_the_driver_claimed_is_left_to_it_and_a_dead_workers_claim_is_taken_over(tmp_path):
    """The claim protocol, without Ray: a worker skips a file the driver claimed, and mines a file that
    a worker lost on the way had claimed (Ray gives that file to another worker)."""
    parts = tmp_path / PARTS_DIR
    (parts / CLAIMS).mkdir(parents=True)
    miner = FileMiner(config("ray").model_dump_json(), str(parts), {})
    assert claim(parts / CLAIMS / "a", DRIVER) and not claim(parts / CLAIMS / "a", "123")
    miner.mine_file(str(FIXTURES / "openai.jsonl"), "a")
    assert not (parts / "a").exists()
    assert claim(parts / CLAIMS / "b", "999999")  # a worker that died on it
    miner.mine_file(str(FIXTURES / "openai.jsonl"), "b")
    done = json.loads((parts / "b" / DONE).read_text())
    assert done["counts"]["conversations"] > 0 and list((parts / "b").glob("*.turns.arrow"))


def test_mine_joins_a_cluster_that_ray_start_started(tmp_path):
    """How a cluster is used: `ray start --head` once, with token authentication (Ray turns it on when
    the machine has a token), then `dsatkit mine --executor ray --ray-address HOST:PORT`. Without
    RAY_AUTH_MODE=token the driver sends no token and is refused: one line says what to set."""
    local = mine([FIXTURES], tmp_path / "local", config("local", read={"skip_bad_files": True}))

    def cli(address: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        code = textwrap.dedent(f"""
            from dsatkit.cli import main
            main(["mine", {str(FIXTURES)!r}, "-o", {str(out)!r}, "--detectors", "lexical", "--skip-bad-files",
                  "--executor", "ray", "--ray-address", {address!r}])
        """)
        return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                              env=env)

    with bench("mine_executors").running_cluster(2) as (address, env):
        done = cli(address, tmp_path / "ray", env)
        assert done.returncode == 0, done.stderr[-2000:]
        without_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        refused = cli(address, tmp_path / "refused", without_token)
    assert_same_tables(local, MineResult(tmp_path / "ray", local.summary))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"could not reach the Ray cluster at {address}" in error[0]
    assert "RAY_AUTH_MODE=token" in refused.stderr


def test_a_cluster_address_where_nothing_listens_fails_at_once_in_one_line(tmp_path):
    """Ray itself would retry in silence for minutes."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = textwrap.dedent(f"""
        from dsatkit.cli import main
        main(["mine", {str(FIXTURES / "openai.jsonl")!r}, "-o", {str(tmp_path / "out")!r}, "--detectors", "lexical",
              "--executor", "ray", "--ray-address", "127.0.0.1:{port}"])
    """)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"error: no Ray cluster answers at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "dsat.duckdb").exists()


def test_ray_workers_read_the_cache_and_what_they_encode_reaches_it(tmp_path, ray_cluster):
    """The workers read a snapshot of cache.duckdb and hand back what they add: a second run over the
    same logs encodes nothing."""
    files = shards(tmp_path, 400, 2)
    cfg = MineConfig(detectors=["embedding"], executor="ray", ray={"driver_mines": False, "workers": 1})
    out = tmp_path / "mined"
    first = mine(files, out, cfg).summary.detectors["embedding"]
    assert first["encoded"] > 0
    from dsatkit.cache import Cache

    cache = Cache(out / "cache.duckdb")
    try:
        # (a text of both files is encoded once per file: a worker keeps no more than its file's entries)
        assert 0 < cache.con.execute("select count(*) from embedding_cache").fetchall()[0][0] <= first["encoded"]
    finally:
        cache.close()
    second = mine(files, out, cfg).summary.detectors["embedding"]
    assert second["encoded"] == 0 and second["cache_hits"] > 0


def test_a_worker_leaves_a_file_the_driver_will_reach_first(tmp_path):
    """The driver mines from the front at the pace its claims show (here a file a second); a worker
    that needs longer than the driver's arrival leaves the file to it, and takes it otherwise."""
    parts = tmp_path / PARTS_DIR
    (parts / CLAIMS).mkdir(parents=True)
    order = ["a", "b", "c", "d"]
    miner = FileMiner(config("ray").model_dump_json(), str(parts), {}, order=order)
    now = time.time()
    for i, key in enumerate(["a", "b"]):  # claimed 2 s and 1 s ago: it is on "b", and reaches "d" in ~2 s
        assert claim(parts / CLAIMS / key, DRIVER)
        os.utime(parts / CLAIMS / key, (now - 2 + i, now - 2 + i))
    miner.seconds = 10.0  # this worker's last file took 10 s
    miner.mine_file(str(FIXTURES / "openai.jsonl"), "d")
    assert not (parts / "d").exists() and not (parts / CLAIMS / "d").exists()
    miner.seconds = 0.5
    miner.mine_file(str(FIXTURES / "openai.jsonl"), "d")
    assert (parts / "d" / DONE).exists()
