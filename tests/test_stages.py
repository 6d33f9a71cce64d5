"""Stages: a detector from outside the package joins `mine` with one registration; stages check their
input; stats add up; process-wide settings are set at start-up only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from pydantic import BaseModel, ConfigDict, Field

from dsatkit.config import MineConfig
from dsatkit.detectors import Detector, register_detector
from dsatkit.detectors.lexical import LexicalDetector
from dsatkit.errors import ConfigError
from dsatkit.pipeline import mine
from dsatkit.schema import DETECTIONS, conform
from dsatkit.stages import StageError, StageStats
from dsatkit.stages.flow import MineStages, mine_batch


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_chars: int = Field(4, description="shorter feedback is never a shout")


class ShoutDetector(Detector):
    """DSAT when the user's feedback is written in capitals."""

    name = "shout"
    version = "1"
    Config = ShoutConfig

    def __init__(self, config: ShoutConfig | None = None):
        self.config = config or ShoutConfig()

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        fb = pl.col("feedback")
        shout = (fb.str.len_chars() >= self.config.min_chars) & (fb == fb.str.to_uppercase()) & fb.str.contains("[A-Z]")
        out = exchanges.filter(fb.is_not_null()).select(
            "exchange_id", detector=pl.lit(self.name), score=pl.when(shout).then(0.9).otherwise(0.1), label=shout,
            category=pl.when(shout).then(pl.lit("negative_feedback")), detector_version=pl.lit(self.version))
        return conform(out, DETECTIONS)


register_detector("shout", ShoutDetector)

CONVERSATIONS = {
    "loud": ["what is 2+2?", "5", "WRONG!!", "4", "ok"],
    "short": ["hi", "hello", "NO", "sorry"],
    "calm": ["name a fruit", "apple", "thanks"],
}


def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs.jsonl"
    with path.open("w") as f:
        for cid, texts in CONVERSATIONS.items():
            roles = ["user", "assistant"] * 3
            f.write(json.dumps({"id": cid, "messages": [{"role": r, "content": t} for r, t in zip(roles, texts)]}) + "\n")
    return path


def test_a_detector_registered_from_outside_runs_in_mine_with_its_own_config_section(tmp_path):
    cfg = MineConfig(detectors=["shout"], stages={"shout": {"min_chars": 3}})
    result = mine([logs(tmp_path)], tmp_path / "out", cfg)
    detections = result.table("detections")
    assert set(detections["detector"]) == {"shout"} and detections.height == 4  # every exchange with feedback
    dsat = result.dsat
    assert dsat["feedback"].to_list() == ["WRONG!!"]  # "NO" is shorter than min_chars
    assert dsat["category"].to_list() == ["negative_feedback"]
    assert result.summary.detectors["shout"]["rows_in"] == result.summary.exchanges
    wider = mine([logs(tmp_path)], tmp_path / "out2", MineConfig(detectors=["shout"], stages={"shout": {"min_chars": 2}}))
    assert sorted(wider.dsat["feedback"].to_list()) == ["NO", "WRONG!!"]


def test_the_cli_takes_a_registered_detector(tmp_path, capsys):
    from dsatkit.cli import main

    main(["mine", str(logs(tmp_path)), "-o", str(tmp_path / "out"), "--detectors", "lexical,shout"])
    assert "shout" in capsys.readouterr().out
    result = mine([logs(tmp_path)], tmp_path / "again", MineConfig(detectors=["lexical", "shout"]))
    assert set(result.table("detections")["detector"]) == {"lexical", "shout"}


def test_a_stage_config_section_rejects_unknown_keys_and_names(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.shout: min_char: unknown key"):
        mine([logs(tmp_path)], tmp_path / "out", MineConfig(detectors=["shout"], stages={"shout": {"min_char": 3}}))
    with pytest.raises(ConfigError, match="unknown detector 'shoot'; known: .*shout"):
        MineConfig.load(None, detectors=["shoot"])
    with pytest.raises(ConfigError, match="detector 'lexical' takes no settings there"):
        mine([logs(tmp_path)], tmp_path / "out", MineConfig(detectors=["lexical"], stages={"lexical": {"x": 1}}))


def test_a_stage_names_the_columns_its_input_lacks():
    frames = {"exchanges": pl.DataFrame({"exchange_id": ["x"], "response": ["r"]})}
    with pytest.raises(StageError, match=r"stage 'lexical' reads exchanges\.feedback, which its input lacks"):
        LexicalDetector()(frames)
    with pytest.raises(StageError, match="frame 'exchanges'"):
        LexicalDetector()({})


def test_stage_stats_count_batches_and_rows_and_merge():
    from dsatkit.exchanges import build_exchanges

    turns = pl.DataFrame({
        "conversation_id": ["a"] * 3 + ["b"] * 2, "turn_index": [0, 1, 2, 0, 1],
        "role": ["user", "assistant", "user", "user", "assistant"],
        "content": ["q", "answer", "that's wrong", "q2", "a2"],
    })
    stages = MineStages.from_config(MineConfig(detectors=["lexical"]))
    mined = mine_batch(turns, stages)
    assert mined.tables["exchange_index"].height == build_exchanges(turns).height == 2
    assert mined.counts.exchanges == 2 and mined.counts.with_feedback == 1 and mined.counts.dsat == 1
    taken = stages.take_stats()
    assert (taken["lexical"].batches, taken["lexical"].rows_in, taken["lexical"].rows_out) == (1, 2, 2)
    assert stages.take_stats()["lexical"].batches == 0  # taken: fresh ones in their place
    total = StageStats()
    total.merge(taken["lexical"])
    total.merge(taken["lexical"])
    assert total.rows_in == 4 and total.seconds == pytest.approx(2 * taken["lexical"].seconds)


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "HF_HUB_OFFLINE")} | env
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=environ)
    return done.stdout.strip()


def test_process_settings_are_set_at_start_up_not_on_import():
    # Polars writes its own defaults on import and appends a setting found in the environment (jemalloc
    # takes the last value of a key)
    imported = _run("import os, dsatkit.pipeline; print(os.environ.get('_RJEM_MALLOC_CONF'))")
    assert "10000" not in imported
    started = "import os; from dsatkit.runtime import configure_process; configure_process(); import polars; " \
              "print(os.environ['_RJEM_MALLOC_CONF'])"
    assert _run(started).endswith(",dirty_decay_ms:10000,muzzy_decay_ms:0")
    assert _run(started, _RJEM_MALLOC_CONF="narenas:1").endswith(",narenas:1")  # a user's setting wins


def test_loading_the_shipped_embedding_model_leaves_the_hub_settings_alone():
    code = ("import os; from dsatkit.detectors.embedding import load_model; m = load_model('all-MiniLM-L6-v2', 'cpu'); "
            "print(m.get_sentence_embedding_dimension(), os.environ.get('HF_HUB_OFFLINE'))")
    assert _run(code) == "384 None"
