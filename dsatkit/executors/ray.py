"""The Ray executor: Ray workers read and mine the input files, this process writes the store.

    dsatkit mine logs/ -o mined/ --executor ray [--ray-address auto]

Flow (Ray Data): `from_items([{index, path, key}])` -> `map_batches(FileMiner)` on an actor pool (each
actor builds the detectors once; `cpus_per_worker` / `gpus_per_worker` reserve what it uses: by default a
GPU when a detector puts one to use, `Stage.gpus`, and the cluster has one). An actor
reads one input file with dsatkit's own reader (formats, quarantine, flat tables: a conversation is
never split, because one reader reads the whole file) and mines each batch with the same stages as the
local executor (`mine_batch`). It writes the file's store tables as uncompressed Arrow IPC part files
under `OUT/.ray-parts/<key>/`, with `done.json` (the file's counts and stage stats), and renames the
directory into place when the file is finished: the directory is the file's completion marker. Only the
file's index travels back. This process takes the finished files in input order (so the store's row
order is the local executor's), streams their parts into the RunWriter, merges the counts, commits the
store and removes the parts.

The cluster is started (or joined) in `start`, in the main thread, before anything is mined (see
`_Cluster`); the workers' side of the run then goes on in a thread of its own. Meanwhile this process
does not wait (`ray.driver_mines`): it mines the input files from the front itself, straight into the
store, as the local executor would, while the workers are given the files from the back; a file is
claimed before it is mined (a claim file made with an atomic link), so the two meet in the middle and
no file is mined twice. On one machine this hides the actors' start-up (~6 s on 2 cores).

Resume: a key is md5(path, size, mtime, the hash of the config's mining sections). A run that was killed
leaves the finished files' directories; the next run with the same inputs and config mines only the
files without one, and reads the others' parts (the files this process mined itself went straight to
the store, and are mined again).

The detectors' cache (cache.duckdb; DuckDB lets one process write a file): the workers read a snapshot
of it, taken at the start of the run (`CACHE_SNAPSHOT`, when a detector of the run is `cached` and the
cache has entries), and write what they add beside their file's parts; this process merges those
entries into the cache when it ingests the file. A worker killed half way through a file loses the
entries of that file (the local executor commits them batch by batch).

A file that repeats conversation ids of an earlier file is mined a second time, in this process, by a
reader that knows the earlier ids (see `RayExecutor._ingest`).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dsatkit.errors import DsatkitError
from dsatkit.logs.normalise import SeenIds

if TYPE_CHECKING:
    from dsatkit.config import MineConfig, RayConfig
    from dsatkit.executors import MineJob
    from dsatkit.logs.files import Found

PARTS_DIR = ".ray-parts"
"""Under the output directory: one directory of part files per finished input file."""
DONE = "done.json"
"""A finished file's counts and stage stats, inside its part directory."""
CLAIMS = ".claims"
"""Under the parts directory: one claim file per input file being mined (by a worker or this process)."""
CACHE_SNAPSHOT = "cache-snapshot.duckdb"
"""Under the parts directory: a copy of the run's cache, which the workers read (when a detector of the
run keeps entries in the cache and it has some)."""
DRIVER = "driver"
"""The owner written in a claim made by this process (a worker writes its pid)."""
MINING_SECTIONS = ("detectors", "read", "fuse", "learned", "embedding", "judge", "stages")
"""The config sections that change what is mined (their hash is part of every file's key)."""
STORE_ORDER = ("turns", "quarantine", "exchange_index", "detections", "verdicts", "dsat_records", "pairs")
"""The tables of a batch, in the order the local executor hands them to the writer."""


def config_hash(config: MineConfig) -> str:
    """md5 of the config's mining sections (not the executor's or the store's settings)."""
    data = config.model_dump(mode="json", include=set(MINING_SECTIONS))
    return hashlib.md5(json.dumps(data, sort_keys=True).encode()).hexdigest()


def file_key(path: str, config_digest: str) -> str:
    """The key of one input file's parts: md5 of its absolute path, size, mtime and the config's hash."""
    st = os.stat(path)
    ident = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{config_digest}"
    return hashlib.md5(ident.encode()).hexdigest()


def claim(path: Path, owner: str) -> bool:
    """Claim a file for `owner` (a file at `path` holding the owner's name), atomically: False when it
    is claimed already. The claim is written under a temp name and linked into place, so a claim is
    never seen half written."""
    tmp = path.with_name(f".{path.name}.{owner}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(owner)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at a `host:port` cluster address: `ray.init`
    would retry in silence for minutes. ("auto" and "ray://" addresses are left to Ray.)"""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise DsatkitError(f"no Ray cluster answers at {address} ({e.strerror or e})",
                           hint="check --ray-address (the head node's GCS address, host:6379 by default), "
                           "or leave it out to start a local cluster") from None


def _join_hint() -> str:
    """What to try when a cluster that listens does not let this process join. `ray start` turns on
    Ray's token authentication when the machine has a token (~/.ray/auth_token), but a driver given an
    explicit address sends none unless RAY_AUTH_MODE=token is set, and is refused (Ray retries
    InvalidAuthToken in silence, then reports a failed connection)."""
    if os.environ.get("RAY_AUTH_MODE") is None:
        return ("if the cluster uses token authentication (`ray start` turns it on when ~/.ray/auth_token "
                "exists), set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN), "
                "or use --ray-address auto on a node of the cluster")
    return "check that the cluster is up (`ray status`), or leave out --ray-address for a local one"


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Ray's info and warnings that say nothing to a dsatkit user ("Token authentication is enabled",
    "Progress bars disabled", "Dataset ... execution finished"): errors only, for the block."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class FileMiner:
    """A Ray actor's work: build the stages once, then mine whole input files into part directories.

    In (per call): a batch of rows {index, path, key}. Out: {index, error} per row; `error` is "" or the
    JSON of a DsatkitError the file raised (its class, message and hint), re-raised by the driver. A file
    the driver has claimed is left to it (returned as done: the driver does not wait for it)."""

    def __init__(self, config_json: str, parts: str, detector_classes: dict[str, type],
                 cache_snapshot: str | None = None, order: list[str] | None = None):
        from dsatkit.cache import WorkerCache
        from dsatkit.config import MineConfig
        from dsatkit.registry import register_detector
        from dsatkit.stages.flow import MineStages

        for name, cls in detector_classes.items():  # what the driver registered (plugins, tests)
            register_detector(name, cls)
        self.config = MineConfig.model_validate_json(config_json)
        self.parts = Path(parts)
        self.cache = WorkerCache(cache_snapshot)
        self.stages = MineStages.from_config(self.config, cache=self.cache)
        self.order = order or []
        """The keys of the run's input files in input order (given when the driver mines beside the
        workers, from the front)."""
        self.position = {key: i for i, key in enumerate(self.order)}
        self.seconds: float | None = None
        """How long this worker took over its last file."""

    def _driver_comes_first(self, key: str) -> bool:
        """Whether the driver, mining the files from the front, will reach this file before this worker
        could have mined it (then it is left to the driver, which would otherwise wait for it at the
        end). The driver's pace is read from the times of its claims; this worker's from its last file."""
        if self.seconds is None or key not in self.position:
            return False
        claims = {c.name: c for c in (self.parts / CLAIMS).iterdir() if c.name in self.position}
        driver = sorted((self.position[name], c.stat().st_mtime) for name, c in claims.items()
                        if c.read_text() == DRIVER)
        if len(driver) < 2:
            return False
        pace = (driver[-1][1] - driver[0][1]) / (len(driver) - 1)  # seconds per file, with its writes
        at, here = driver[-1][0], self.position[key]
        ahead = sum(k not in claims for k in self.order[at + 1:here])  # files the driver mines before this one
        arrives = driver[-1][1] + pace * (1 + ahead)
        return arrives - time.time() < self.seconds

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = []
        for path, key in zip(batch["path"], batch["key"], strict=True):
            try:
                self.mine_file(str(path), str(key))
                errors.append("")
            except DsatkitError as e:
                errors.append(json.dumps({"cls": _class_path(e), "message": str(e), "hint": e.hint}))
        return {"index": batch["index"], "error": np.array(errors, dtype=object)}

    def mine_file(self, path: str, key: str) -> None:
        """Read and mine one input file into `parts/<key>/` (renamed into place when complete)."""
        from dsatkit.logs import LogReader
        from dsatkit.logs.files import Found
        from dsatkit.stages.flow import MineCounts, mine_batch

        final = self.parts / key
        if (final / DONE).exists() or self._driver_comes_first(key):
            return
        claim_path = self.parts / CLAIMS / key
        # a claim by another worker is one that died on this file (Ray gives each file to one actor,
        # and again only when that actor is lost): mine it; a claim by the driver: leave it
        if not claim(claim_path, str(os.getpid())) and claim_path.read_text() == DRIVER:
            return
        tmp = self.parts / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        counts = MineCounts()
        self.stages.take_stats()  # this file's stats only
        t0 = time.perf_counter()
        for b, batch in enumerate(LogReader(Found([path]), self.config.read)):
            counts.add_read(batch.rows_read, batch.conversations, batch.turns, batch.quarantine, batch.source_file)
            mined = mine_batch(batch.turns, self.stages)
            counts.add(mined.counts)
            tables = {"turns": batch.turns, "quarantine": batch.quarantine, **mined.tables}
            for name in STORE_ORDER:
                frame = tables[name]
                if frame.height:
                    frame.write_ipc(tmp / f"{b:06d}.{name}.arrow", compression="uncompressed")
        self.cache.flush(tmp)  # what the detectors added to the cache, for the driver to merge
        stats = self.stages.take_stats()
        done = {
            "path": path,
            "counts": counts.model_dump(mode="json"),
            "stats": {name: {"cls": _class_path(s), "data": s.model_dump(mode="json")} for name, s in stats.items()},
            "labels": {s.name: s.label for s in self.stages.all()},
            "seconds": time.perf_counter() - t0,
        }
        self.seconds = done["seconds"]
        (tmp / DONE).write_text(json.dumps(done))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the directory in place is the completion marker


class _Cluster(threading.Thread):
    """The workers' side of a run, in a thread of its own: mines the files it is given on the workers
    (Ray Data; a file shows it is finished by its part directory), and shuts down a cluster started for
    the run as soon as its work is done (while this process still writes the store).

    `ended` is set when it has nothing left to do; `error` is what stopped it, if anything. The cluster is
    started (or joined) in the main thread, by `init`, before this process mines: with mining under way
    in another thread of this process, the local cluster's raylet never came up (`ray.init` timed out,
    4 times of 4; reading alone did not stop it)."""

    def __init__(self, config: RayConfig):
        super().__init__(name="dsatkit-ray", daemon=True)
        self.config = config
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.work: queue.Queue[tuple[MineJob, Path, list[dict], dict[str, type], float, bool, str | None] | None] = (
            queue.Queue())
        self.started_here = False
        self.cancelled = threading.Event()
        """Set by the driver when no file is left for the workers, or the run failed."""
        self._stopping = threading.Lock()

    def run(self) -> None:
        try:
            work = self.work.get()
            if work is not None and not self.cancelled.is_set():
                self._mine(*work)
        except BaseException as e:  # noqa: BLE001 (handed to the driver, which raises it)
            traceback.clear_frames(e.__traceback__)  # the frames' locals hold Ray Data's objects
            self.error = e
        # what the run left of Ray's objects (cycles of Ray Data's) is freed here, while Ray is up: the
        # driver's thread, writing the store, would otherwise free it during or after the shutdown, and
        # a Ray object freed then ends the process with exit status 1 (core_worker_process.cc: "the core
        # worker has already been shutdown"; seen once in CI, after the run's store was written)
        gc.collect()
        self.ended.set()
        self.stop()

    def stop(self) -> None:
        """Shut down the cluster if it was started for this run (once: the driver's thread stops a run
        that failed while this thread may be ending it)."""
        import ray

        with self._stopping:
            if self.started_here and ray.is_initialized():
                ray.shutdown()

    def init(self) -> None:
        """Start a local cluster (or join `config.address`) unless this process has joined one already."""
        import ray

        if ray.is_initialized():
            return
        cfg = self.config
        # a local cluster's processes inherit this one's environment (configure_process's settings):
        # a runtime_env would make Ray start fresh workers instead of the ones it prestarts
        local = cfg.address is None
        if not local:
            _check_reachable(cfg.address)
        try:
            with _quiet("ray._private.authentication.authentication_token_setup"):
                ray.init(
                    address="local" if local else cfg.address,  # "local": a new cluster, not one `ray start` left
                    num_cpus=cfg.num_cpus if local else None,
                    object_store_memory=cfg.object_store_mb * 2**20 if local and cfg.object_store_mb else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    # no idle Python workers started ahead, one per CPU: the run starts the actors it
                    # uses (on 2 cores, the spare ones cost ~1 s of the start-up, measured)
                    _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False}
                    if local else None,
                )
        except ConnectionError as e:
            raise DsatkitError(f"could not reach the Ray cluster at {cfg.address}: {e}", hint=_join_hint()) from None
        self.started_here = True

    def _mine(self, job: MineJob, parts: Path, items: list[dict], classes: dict[str, type], gpus: float,
              driver_mines: bool, cache_snapshot: str | None) -> None:
        import ray

        cfg = self.config
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        workers = cfg.workers
        if not workers:  # one per CPU (GPU); on a local cluster that the driver mines beside, the driver is one
            resources = ray.cluster_resources()
            slots = int(resources.get("CPU", 1) // cfg.cpus_per_worker)
            if gpus:
                slots = min(slots, int(resources.get("GPU", 0) // gpus))
            workers = max(1, min(len(items), slots - (driver_mines and self.started_here)))
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            FileMiner,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"config_json": job.config.model_dump_json(), "parts": str(parts),
                                   "detector_classes": classes, "cache_snapshot": cache_snapshot,
                                   "order": [item["key"] for item in sorted(items, key=lambda it: it["index"])]
                                   if driver_mines else None},
            num_cpus=cfg.cpus_per_worker,
            num_gpus=gpus or None,
        )
        # no prefetching: a loop left early (a cancelled or failed run) leaves Ray Data's prefetch thread
        # behind, and one with blocks to fetch calls into Ray after the shutdown (ending the process)
        with _quiet("ray.data"):
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                if self.cancelled.is_set():  # the driver mined the rest, or the run failed
                    break
                for error in batch["error"]:
                    if error:
                        err = json.loads(error)
                        raise _load_class(err["cls"])(err["message"], err["hint"])


class RayExecutor:
    """Mine on Ray (see the module docstring): a running cluster (`config.address`) or a local one
    started for the run and shut down after it."""

    def __init__(self, config: RayConfig):
        self.config = config
        self._cluster: _Cluster | None = None
        self._finished = False

    def start(self, found: Found, config: MineConfig) -> None:
        """Start (or join) the cluster, and the thread that will hand it its files."""
        cluster = _Cluster(self.config)
        cluster.init()
        cluster.start()
        self._cluster = cluster

    def close(self) -> None:
        """Wait for the cluster thread; shut down a cluster it started (if the run ended early)."""
        cluster, self._cluster = self._cluster, None
        if cluster is None:
            return
        cluster.cancelled.set()
        cluster.work.put(None)  # for a run that failed before handing over its work
        if not self._finished and cluster.is_alive():
            cluster.stop()  # a failed or interrupted run: its workers stop now, not after their file
        cluster.join(timeout=60)

    def run(self, job: MineJob) -> None:
        from dsatkit.registry import detector_class

        if self._cluster is None:
            self.start(job.found, job.config)
        cfg = self.config
        self._seen = SeenIds()  # the good conversation ids of the files ingested so far
        self._stages = None  # this process's own stages, built when it mines a file
        parts = job.out / PARTS_DIR
        parts.mkdir(exist_ok=True)
        digest = config_hash(job.config)
        files = job.found.files
        keys = [file_key(p, digest) for p in files]
        wanted = set(keys)
        for stale in parts.iterdir():  # other inputs' or configs' parts, unfinished ones, old claims
            if stale.name not in wanted:
                shutil.rmtree(stale, ignore_errors=True)
        (parts / CLAIMS).mkdir()
        todo = [i for i, k in enumerate(keys) if not (parts / k / DONE).exists()]
        pending = set(todo)
        job.resumed = [f for i, f in enumerate(files) if i not in pending]
        # the workers take the files from the back, this process from the front
        items = [{"index": i, "path": files[i], "key": keys[i]} for i in reversed(todo)]
        classes = {n: detector_class(n) for n in job.config.detectors}
        gpus = self._gpus(classes)
        helps = cfg.driver_mines and not gpus
        snapshot = None
        cache = job.cache
        if items and cache is not None and cache.path is not None and any(c.cached for c in classes.values()) \
                and cache.has_entries():
            snapshot = parts / CACHE_SNAPSHOT
            cache.snapshot(snapshot)
        self._cluster.work.put((job, parts, items, classes, gpus, helps, str(snapshot) if snapshot else None)
                               if items else None)
        with job.timer("ray"):
            self._run(job, parts, keys, pending, helps)
        job.after_commit.append(lambda: shutil.rmtree(parts, ignore_errors=True))  # kept until the store is in
        self._finished = True

    def _gpus(self, classes: dict[str, type]) -> float:
        """GPUs per worker: `ray.gpus_per_worker`, or the most one of the run's detectors puts to use
        (`Stage.gpus`) when the cluster has that many, else none."""
        import ray

        if self.config.gpus_per_worker is not None:
            return self.config.gpus_per_worker
        wanted = max((cls.gpus for cls in classes.values()), default=0.0)
        return wanted if wanted and ray.cluster_resources().get("GPU", 0) >= wanted else 0.0

    def _run(self, job: MineJob, parts: Path, keys: list[str], todo: set[int], helps: bool) -> None:
        """Take the files in input order: a finished one's parts go to the store; an unclaimed one this
        process mines itself (when it `helps`); for one a worker has, it waits."""
        from dsatkit.progress import progress

        cluster = self._cluster

        def cluster_ended() -> bool:
            """Whether the cluster has ended (waiting up to 50 ms): its error, if any, is raised here."""
            if not cluster.ended.wait(0.05):
                return False
            if cluster.error is not None:
                raise cluster.error
            return True

        with progress() as bar:
            task = bar.add_task("mining", total=None, unit="conversations")
            for i, key in enumerate(keys):
                if i not in todo:
                    n = self._ingest(job, parts / key)
                elif helps and claim(parts / CLAIMS / key, DRIVER):
                    n = self._mine_here(job, job.found.files[i])
                else:
                    # a finished file shows by its part directory, which is in place before Ray hands
                    # back the file's row (at times seconds later)
                    while not (parts / key / DONE).exists():
                        if cluster_ended() and not (parts / key / DONE).exists():  # never expected
                            raise DsatkitError(f"the Ray run did not finish {job.found.files[i]}",
                                               hint="run again: finished files are not mined twice")
                    n = self._ingest(job, parts / key)
                bar.update(task, advance=n)
        # this process mined what the workers had not started: they need not start (a cluster that is
        # still coming up ends as soon as it is up); either way, its error is the run's
        cluster.cancelled.set()
        while not cluster_ended():
            pass

    def _ingest(self, job: MineJob, part_dir: Path) -> int:
        """Stream one finished file's parts into the store writer, in batch order; merge its counts and
        stats. Returns its conversations (for the progress bar).

        A worker's reader saw its own file only; the local reader quarantines a conversation whose id an
        earlier file had. So the file's ids are checked against those of the files before it: when one
        repeats (rare), the file is mined again here, by a reader that knows the earlier ids, and that
        is what goes to the store (exactly what the local executor stores)."""
        from dsatkit.stages.flow import MineCounts

        done = json.loads((part_dir / DONE).read_text())
        if self._repeats_ids(part_dir):
            return self._mine_here(job, done["path"])
        counts = MineCounts.model_validate(done["counts"])
        with job.timer("store"):
            batches: dict[str, list[tuple[str, Path]]] = {}
            for f in sorted(part_dir.glob("*.arrow")):
                b, name, _ = f.name.split(".")
                batches.setdefault(b, []).append((name, f))
            order = {n: i for i, n in enumerate(STORE_ORDER)}
            for b in sorted(batches):
                tables = sorted(batches[b], key=lambda nf: order[nf[0]])
                job.writer.append_many([(name, pl.read_ipc(f)) for name, f in tables])
        if job.cache is not None:
            job.cache.merge(part_dir)  # the worker's new embeddings and judge answers
        job.counts.add(counts)
        job.add_stats({name: _load_class(s["cls"]).model_validate(s["data"]) for name, s in done["stats"].items()},
                      done["labels"])
        return counts.conversations

    def _repeats_ids(self, part_dir: Path) -> bool:
        """Whether a conversation id of this file's parts was read from an earlier file; if not, its ids
        join those seen."""
        frames = [pl.read_ipc(f, columns=["conversation_id"])
                  for f in sorted(part_dir.glob("*.turns.arrow"))]
        if not frames:
            return False
        ids = pl.concat(frames)["conversation_id"].unique()
        h = SeenIds.hash(ids)
        if self._seen.contains(h).any():
            return True
        self._seen.add(h)
        return False

    def _mine_here(self, job: MineJob, path: str) -> int:
        """Read and mine one input file in this process, with the ids seen before it, into the store."""
        from dsatkit.executors import mine_into_store
        from dsatkit.logs import LogReader
        from dsatkit.logs.files import Found
        from dsatkit.stages.flow import MineCounts, MineStages

        if self._stages is None:
            self._stages = MineStages.from_config(job.config, job.cache)
        counts = MineCounts()
        mine_into_store(job, LogReader(Found([path]), job.config.read, seen=self._seen), self._stages, counts)
        job.counts.add(counts)
        job.add_stats(self._stages.take_stats(), {s.name: s.label for s in self._stages.all()})
        job.driver_files.append(path)
        return counts.conversations
