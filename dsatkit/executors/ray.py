"""The Ray executor: Ray workers read and mine the input files, this process writes the store.

    dsatkit mine logs/ -o mined/ --executor ray [--ray-address auto]

Flow (Ray Data): `from_items([{index, path, key}])` -> `map_batches(FileMiner)` on an actor pool (each
actor builds the detectors once; `cpus_per_worker` / `gpus_per_worker` reserve what it uses). An actor
reads one input file with dsatkit's own reader (formats, quarantine, flat tables: a conversation is
never split, because one reader reads the whole file) and mines each batch with the same stages as the
local executor (`mine_batch`). It writes the file's store tables as uncompressed Arrow IPC part files
under `OUT/.ray-parts/<key>/`, with `done.json` (the file's counts and stage stats), and renames the
directory into place when the file is finished: the directory is the file's completion marker. Only the
file's index travels back. This process takes the finished files in input order (so the store's row
order is the local executor's), streams their parts into the RunWriter, merges the counts, commits the
store and removes the parts.

Resume: a key is md5(path, size, mtime, the hash of the config's mining sections). A run that was killed
leaves the finished files' directories; the next run with the same inputs and config mines only the
files without one, and reads the others' parts.

What it does not do (yet): the detectors' persistent cache (cache.duckdb) is not used by the workers
(DuckDB lets one process write a file), so the embedding and judge detectors recompute across runs
under Ray. A file that repeats conversation ids of an earlier file is mined a second time, in this
process, by a reader that knows the earlier ids (see `RayExecutor._ingest`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import time
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


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class FileMiner:
    """A Ray actor's work: build the stages once, then mine whole input files into part directories.

    In (per call): a batch of rows {index, path, key}. Out: {index, error} per row; `error` is "" or the
    JSON of a DsatkitError the file raised (its class, message and hint), re-raised by the driver."""

    def __init__(self, config_json: str, parts: str, detector_classes: dict[str, type]):
        from dsatkit.config import MineConfig
        from dsatkit.registry import register_detector
        from dsatkit.stages.flow import MineStages

        for name, cls in detector_classes.items():  # what the driver registered (plugins, tests)
            register_detector(name, cls)
        self.config = MineConfig.model_validate_json(config_json)
        self.parts = Path(parts)
        self.stages = MineStages.from_config(self.config, cache=None)

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
        if (final / DONE).exists():
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
        stats = self.stages.take_stats()
        done = {
            "path": path,
            "counts": counts.model_dump(mode="json"),
            "stats": {name: {"cls": _class_path(s), "data": s.model_dump(mode="json")} for name, s in stats.items()},
            "labels": {s.name: s.label for s in self.stages.all()},
            "seconds": time.perf_counter() - t0,
        }
        (tmp / DONE).write_text(json.dumps(done))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the directory in place is the completion marker


class RayExecutor:
    """Mine on Ray (see the module docstring): a running cluster (`config.address`) or a local one
    started for the run and shut down after it."""

    def __init__(self, config: RayConfig):
        self.config = config
        self.mined_files: list[str] = []
        """The input files the workers mined in this run (not taken from a previous run's parts)."""
        self.remined: list[str] = []
        """The input files mined again in this process because they repeat an earlier file's ids."""

    def start(self, found: Found, config: MineConfig) -> None:
        """Nothing to start early: the cluster starts in `run`."""

    def close(self) -> None:
        """Nothing to close: `run` shuts down a cluster it started."""

    def run(self, job: MineJob) -> None:
        import ray

        from dsatkit.registry import detector_class

        cfg = self.config
        self._seen = SeenIds()  # the good conversation ids of the files ingested so far
        self._stages = None  # this process's own stages, built if a file has to be mined here
        parts = job.out / PARTS_DIR
        parts.mkdir(exist_ok=True)
        digest = config_hash(job.config)
        files = job.found.files
        keys = [file_key(p, digest) for p in files]
        for stale in parts.iterdir():  # other inputs' or configs' parts, and unfinished ones
            if stale.name not in set(keys):
                shutil.rmtree(stale, ignore_errors=True)
        todo = [i for i, k in enumerate(keys) if not (parts / k / DONE).exists()]
        self.mined_files = [files[i] for i in todo]
        job.resumed = [f for i, f in enumerate(files) if i not in set(todo)]

        started_here = not ray.is_initialized()
        if started_here:
            # a local cluster's processes inherit this one's environment (configure_process's settings):
            # a runtime_env would make Ray start fresh workers instead of the ones it prestarts
            local = cfg.address is None
            ray.init(
                address=cfg.address,
                num_cpus=cfg.num_cpus if local else None,
                object_store_memory=cfg.object_store_mb * 2**20 if local and cfg.object_store_mb else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        try:
            with job.timer("ray"):
                self._run(job, parts, keys, todo, {n: detector_class(n) for n in job.config.detectors})
        finally:
            if started_here:
                ray.shutdown()
        job.after_commit.append(lambda: shutil.rmtree(parts, ignore_errors=True))  # kept until the store is in

    def _run(self, job: MineJob, parts: Path, keys: list[str], todo: list[int], classes: dict[str, type]) -> None:
        import ray

        from dsatkit.progress import progress

        cfg = self.config
        finished: set[int] = set(range(len(keys))) - set(todo)
        with progress() as bar:
            task = bar.add_task("mining", total=None, unit="conversations")
            next_index = 0

            def ingest_ready() -> None:
                nonlocal next_index
                while next_index < len(keys) and next_index in finished:
                    bar.update(task, advance=self._ingest(job, parts / keys[next_index]))
                    next_index += 1

            ingest_ready()
            if todo:
                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = False
                ctx.print_on_execution_start = False
                workers = cfg.workers or max(1, min(len(todo), int(ray.cluster_resources().get("CPU", 1) // cfg.cpus_per_worker)))
                items = [{"index": i, "path": job.found.files[i], "key": keys[i]} for i in todo]
                ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                    FileMiner,
                    batch_size=1,
                    compute=ray.data.ActorPoolStrategy(size=workers),
                    fn_constructor_kwargs={
                        "config_json": job.config.model_dump_json(), "parts": str(parts), "detector_classes": classes,
                    },
                    num_cpus=cfg.cpus_per_worker,
                    num_gpus=cfg.gpus_per_worker or None,
                )
                for row in ds.iter_rows():
                    if row["error"]:
                        err = json.loads(row["error"])
                        raise _load_class(err["cls"])(err["message"], err["hint"])
                    finished.add(int(row["index"]))
                    ingest_ready()
            if next_index < len(keys):  # a worker returned without finishing a file: never expected
                raise DsatkitError(f"the Ray run did not finish {job.found.files[next_index]}",
                                   hint="run again: finished files are not mined twice")

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
        from dsatkit.logs import LogReader
        from dsatkit.logs.files import Found
        from dsatkit.stages.flow import MineCounts, MineStages, mine_batch

        if self._stages is None:
            self._stages = MineStages.from_config(job.config, cache=None)
        counts = MineCounts()
        for batch in LogReader(Found([path]), job.config.read, seen=self._seen):
            counts.add_read(batch.rows_read, batch.conversations, batch.turns, batch.quarantine, batch.source_file)
            with job.timer("store"):
                job.writer.append_many([("turns", batch.turns), ("quarantine", batch.quarantine)])
            mined = mine_batch(batch.turns, self._stages)
            counts.add(mined.counts)
            with job.timer("store"):
                job.writer.append_many([(name, mined.tables[name]) for name in STORE_ORDER[2:]])
        job.counts.add(counts)
        job.add_stats(self._stages.take_stats(), {s.name: s.label for s in self._stages.all()})
        self.remined.append(path)
        return counts.conversations
