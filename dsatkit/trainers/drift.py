"""The round loop: (seed stage), then per round sample -> pair -> one TRL DPO pass -> checkpoint.

Layout of `output_dir`:
    base-model/            the built-in tiny model, when the recipe asks for `builtin:tiny`
                           (`builtin:smollm2-135m` lives in a cache shared by runs: trainers/builtin.py)
    round-N/pairs.parquet  the round's training pairs (prompt, chosen, rejected + provenance)
    round-N/model/         the policy after round N = the start (and reference) of round N+1
    round-N/metrics.json   written last: its presence marks the round finished
    train.duckdb           table `train_rounds`, one row per finished round (`dsatkit sql output_dir`)

Round 0 is the seed stage when enabled. Each round trains from the previous round's saved model and
TRL reloads the reference model from that same path, so the reference of round N is its start
(`reference: initial` hands TRL the run's first policy instead, the same for every round). Device
placement is left to TRL/accelerate, so `accelerate launch -m dsatkit train recipe.yaml` works: the main
process samples and writes the pairs, every process trains.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, Field

from dsatkit.cache import Cache
from dsatkit.detectors.embedding import load_model
from dsatkit.devices import with_pad_token
from dsatkit.errors import TrainError, first_line
from dsatkit.progress import console
from dsatkit.schema import MESSAGE_DTYPE, PAIRS, conform
from dsatkit.trainers.builtin import BUILTIN_MODELS, materialize
from dsatkit.trainers.clean import clean_samples, request_of
from dsatkit.trainers.data import load_pairs, split_test
from dsatkit.trainers.recipe import Recipe
from dsatkit.trainers.sampler import drop_degenerate, sample, sampling_messages

TABLE = "train_rounds"
DB_NAME = "train.duckdb"
CACHE_NAME = "cache.duckdb"
"""The judge's answers (evaluation comparisons, sample checks) in `output_dir`, committed as they arrive."""


class RoundMetrics(BaseModel):
    """One finished round; a row of `train_rounds` and the content of `round-N/metrics.json`."""

    round: int
    stage: str = Field(description="seed | drift | spin | idpo")
    start_model: str
    reference_model: str | None = None
    reference_fingerprint: float | None = Field(None, description="sum of the reference's weights")
    model_path: str
    prompts: int = Field(0, description="prompts the round started from")
    pairs_kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    cleaned: dict[str, int] = Field(
        default_factory=dict, description="kept samples changed or left unchecked by sampler.clean "
        "(preamble_stripped, judge_unchecked)"
    )
    loss: float | None = None
    reward_margin: float | None = None
    reward_accuracy: float | None = None
    train_steps: int = 0
    distinct_2: float | None = None
    embedding_distance: float | None = None
    sample_s: float = 0.0
    train_s: float = 0.0
    finished_at: str = ""
    resumed: bool = Field(False, exclude=True, description="finished by an earlier run")


def _text(col: str) -> pl.Expr:
    """The content of the last message of a message-list column."""
    return pl.col(col).list.last().struct.field("content")


def _messages(text: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(role=pl.lit("assistant"), content=text)).cast(pl.List(MESSAGE_DTYPE))


# ---- diversity -------------------------------------------------------------------------------------
def distinct_2(texts: pl.Series) -> float | None:
    """Distinct word bigrams / all word bigrams over the samples (vectorised)."""
    words = (
        pl.DataFrame({"t": texts})
        .with_row_index("i")
        .select("i", w=pl.col("t").str.to_lowercase().str.extract_all(r"[\p{L}\p{N}_]+"))
        .explode("w")
        .drop_nulls("w")
        .with_columns(nxt=pl.col("w").shift(-1).over("i"))
        .drop_nulls("nxt")
    )
    if words.is_empty():
        return None
    return words.select(pl.struct("w", "nxt").n_unique()).item() / words.height


def embedding_distance(texts: list[str], model: str) -> float | None:
    """Mean pairwise cosine distance of the samples' embeddings (O(n) from the sum of unit vectors)."""
    n = len(texts)
    if n < 2:
        return None
    emb = load_model(model, "cpu").encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    s = emb.sum(axis=0)
    mean_sim = (float(s @ s) - n) / (n * (n - 1))
    return 1.0 - mean_sim


# ---- the loop --------------------------------------------------------------------------------------
class DriftRun:
    def __init__(self, recipe: Recipe):
        from accelerate import PartialState

        self.recipe = recipe
        self.out = Path(recipe.output_dir)
        self.state = PartialState()
        self.main = self.state.is_main_process
        self._scorer = None
        self._cache: Cache | None = None

    def log(self, msg: str) -> None:
        if self.main:
            console.print(msg, highlight=False)

    # data ------------------------------------------------------------------------------------------
    def base_model(self) -> str:
        """The starting policy's path or hub name; a `builtin:` model is built (main process) on first use."""
        r = self.recipe
        if r.model in BUILTIN_MODELS:
            if self.main:
                materialize(r.model, self.out, r.seed)
            self.state.wait_for_everyone()
            return str(materialize(r.model, self.out, r.seed))  # built: only finds the directory now
        return r.model

    def load_data(self) -> pl.DataFrame:
        r = self.recipe
        pairs = load_pairs(r.data.path, r.data.where)
        train, test = split_test(pairs, r.data.test_size)
        if self.main and not test.is_empty():
            test.write_parquet(self.out / "test_pairs.parquet")
        return train

    def prompts(self, pairs: pl.DataFrame, max_prompts: int | None) -> pl.DataFrame:
        """The DSAT pairs a round samples for: at most `max_prompts`, first by exchange id."""
        dsat = pairs.filter(pl.col("origin") == "dsat").sort("exchange_id")
        return dsat.head(max_prompts) if max_prompts else dsat

    # pairs of one round ---------------------------------------------------------------------------
    def _with_sample(self, policy: str, frame: pl.DataFrame, conditioned: bool, round_no: int) -> pl.DataFrame:
        """`frame` with one policy sample per row (`sample`, `truncated`)."""
        s = self._sample(policy, frame, conditioned, 1, round_no)
        return frame.with_row_index("row").join(s.rename({"text": "sample"}), on="row").drop("row", "k")

    def cache(self) -> Cache:
        """The run's judge cache (`output_dir/cache.duckdb`), opened on first use; closed by `close`."""
        if self._cache is None:
            self._cache = Cache(self.out / CACHE_NAME)
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _clean(self, cand: pl.DataFrame, dropped: dict[str, int], cleaned: dict[str, int]) -> pl.DataFrame:
        """`cand` with each sample checked against its original prompt (`sampler.clean`), counting why."""
        spec = self.recipe.sampler.clean
        if not spec.enabled:
            return cand
        kept, d, n_stripped = clean_samples(cand, "sample", request_of(pl.col("prompt")), spec)
        dropped.update(d)
        if n_stripped:
            cleaned["preamble_stripped"] = n_stripped
        if spec.ask_judge and kept.height:
            from dsatkit.trainers.questions import FitQuestion

            assert self.recipe.judge is not None
            question = FitQuestion(self.recipe.judge, self.cache())
            items = question.keyed(kept.select("prompt", "sample"))
            verdicts = question.answers(items).select(
                "key", ok=pl.col("answer").str.json_decode(pl.Struct({"answers_prompt": pl.Boolean}))
                .struct.field("answers_prompt"))
            marked = kept.with_columns(_key=items["key"]).join(verdicts.rename({"key": "_key"}), on="_key",
                                                               how="left", maintain_order="left")
            no, unchecked = int((~marked["ok"]).sum()), int(marked["ok"].is_null().sum())
            if no:
                dropped["judge_not_an_answer"] = no
            if unchecked:
                cleaned["judge_unchecked"] = unchecked
            kept = marked.filter(pl.col("ok").fill_null(True)).drop("_key", "ok")
        return kept

    def _keep_distinct(self, cand: pl.DataFrame, other: str, dropped: dict[str, int]) -> pl.DataFrame:
        """Drop degenerate samples (empty, cut off, a copy of the `other` side), counting why."""
        cand = cand.with_columns(_other=_text(other))
        kept, d = drop_degenerate(cand, "sample", "_other", self.recipe.sampler.near_duplicate)
        dropped.update(d)
        return kept.drop("_other")

    def _sample(self, policy: str, frame: pl.DataFrame, conditioned: bool, n: int, round_no: int) -> pl.DataFrame:
        r = self.recipe
        msgs = sampling_messages(frame, r.sampler, conditioned)
        # the same seed every round: a change in the samples is then the policy's doing
        tok = r.tokenizer if (r.tokenizer and policy == self.base) else None  # later rounds save their own
        return sample(policy, msgs, r.sampler, n=n, seed=r.seed, tokenizer_path=tok, chat_template=r.chat_template)

    def round_pairs(
        self, stage: str, policy: str, pairs: pl.DataFrame, round_no: int, max_prompts: int | None | bool = True
    ) -> tuple[pl.DataFrame, dict, int, dict]:
        """(pairs, dropped counts, prompt count, cleaned counts) for one round of `stage`, over at most
        `max_prompts` DSAT prompts (True: the recipe's data.max_pairs)."""
        r = self.recipe
        cleaned: dict[str, int] = {}
        if stage == "seed":
            seed = pairs.filter((pl.col("origin") == "seed") & pl.col("chosen").is_not_null())
            if seed.is_empty():
                raise TrainError("seed_stage is enabled but the data has no seed (natural DSAT->SAT) pairs",
                                 hint="set seed_stage.enabled: false, or mine logs with SAT follow-ups")
            return seed, {}, seed.height, cleaned
        dsat = self.prompts(pairs, r.data.max_pairs if max_prompts is True else max_prompts)
        if dsat.is_empty():
            raise TrainError(f"no DSAT pairs in {r.data.path}" + (f" matching {r.data.where!r}" if r.data.where else ""),
                             hint="check data.path and data.where")
        dropped: dict[str, int] = {}
        if stage == "drift":
            if r.sampler.backend == "precomputed":
                have = dsat.filter(pl.col("chosen").is_not_null())
                if dsat.height - have.height:
                    dropped["no_chosen"] = dsat.height - have.height
                cand = have.with_columns(sample=_text("chosen"), truncated=pl.lit(False))
            else:
                cand = self._with_sample(policy, dsat, r.sampler.condition_on_feedback, round_no)
                cand = self._clean(cand, dropped, cleaned)
            kept = self._keep_distinct(cand, "rejected", dropped)
            out = kept.with_columns(chosen=_messages(pl.col("sample")))
        elif stage == "spin":
            sat = pairs.filter((pl.col("origin") == "seed") & pl.col("chosen").is_not_null())
            with_sat = dsat.drop("chosen").join(sat.select("exchange_id", "chosen").unique("exchange_id"),
                                                on="exchange_id", how="inner")
            if dsat.height - with_sat.height:
                dropped["no_sat_response"] = dsat.height - with_sat.height
                self.log(f"spin: skipped {dsat.height - with_sat.height} DSAT prompts with no natural SAT response")
            if with_sat.is_empty():
                raise TrainError("method spin needs natural SAT responses (seed pairs) and the data has none",
                                 hint="use method: drift, or mine logs where users confirm a revision")
            cand = self._with_sample(policy, with_sat, False, round_no)
            kept = self._keep_distinct(cand, "chosen", dropped)
            out = kept.with_columns(rejected=_messages(pl.col("sample")))
        elif stage == "idpo":
            s = self._sample(policy, dsat, False, 2, round_no)
            wide = (
                s.pivot(on="k", index="row", values=["text", "truncated"])
                .rename({"text_0": "a", "text_1": "b", "truncated_0": "truncated", "truncated_1": "tb"})
            )
            # a degenerate first sample or two near-identical samples make no pair
            kept, d = drop_degenerate(wide, "a", "b", r.sampler.near_duplicate)
            kept, d2 = drop_degenerate(kept.with_columns(truncated=pl.col("tb")), "b", "a", r.sampler.near_duplicate)
            for key, v in d2.items():
                d[key] = d.get(key, 0) + v
            dropped.update(d)
            rows = dsat.with_row_index("row").join(kept, on="row")
            prompts = rows["prompt"].to_list()
            scorer = self.scorer()
            sa = scorer.score(prompts, rows["a"].to_list())
            sb = scorer.score(prompts, rows["b"].to_list())
            rows = rows.with_columns(sa=pl.Series(sa), sb=pl.Series(sb))
            ties = rows.filter(pl.col("sa") == pl.col("sb")).height
            if ties:
                dropped["tied"] = ties
            rows = rows.filter(pl.col("sa") != pl.col("sb"))
            a_wins = pl.col("sa") > pl.col("sb")
            out = rows.with_columns(
                chosen=_messages(pl.when(a_wins).then(pl.col("a")).otherwise(pl.col("b"))),
                rejected=_messages(pl.when(a_wins).then(pl.col("b")).otherwise(pl.col("a"))),
            )
        else:  # pragma: no cover - the recipe's Literal rules this out
            raise TrainError(f"unknown method {stage!r}")
        return conform(out, PAIRS), dropped, dsat.height, cleaned

    def scorer(self):
        if self._scorer is None:
            from dsatkit.trainers.scorers import build_scorer

            assert self.recipe.scorer is not None
            self._scorer = build_scorer(self.recipe.scorer, self.cache())
        return self._scorer

    # one DPO pass ---------------------------------------------------------------------------------
    def train(self, start: str, pairs: pl.DataFrame, rdir: Path, epochs: float | None) -> dict[str, Any]:
        from datasets import Dataset
        from transformers import AutoTokenizer
        from trl import DPOTrainer

        r = self.recipe
        tok = AutoTokenizer.from_pretrained(r.tokenizer if (r.tokenizer and start == self.base) else start)
        if r.chat_template:
            tok.chat_template = r.chat_template
        with_pad_token(tok)
        ds = Dataset.from_polars(pairs.select("prompt", "chosen", "rejected"))
        args = r.dpo_config(rdir / "trainer", **({"num_train_epochs": epochs} if epochs else {}))
        peft_config = None
        if r.lora is not None:
            from peft import LoraConfig

            peft_config = LoraConfig(**r.lora)
        try:
            fixed_ref = self.reference_model(start, args)
            trainer = DPOTrainer(model=start, ref_model=fixed_ref, args=args, train_dataset=ds, processing_class=tok,
                                 peft_config=peft_config)
        except (OSError, ValueError) as e:
            raise TrainError(f"cannot start DPO from {start}: {first_line(e)}") from None
        result = trainer.train()
        model_dir = rdir / "model"
        if peft_config is not None:
            # merge so the next round (and vLLM) loads a plain model; TRL then adds a fresh adapter
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            if self.main:
                merged.save_pretrained(model_dir)
            if fixed_ref is None:  # LoRA: reference = the adapter-disabled start
                ref_name, fingerprint = start, None
            else:
                ref_name, fingerprint = self.base, _fingerprint(trainer.ref_model)
        else:
            trainer.save_model(str(model_dir))
            ref_model = trainer.ref_model
            ref_name = self.base if fixed_ref is not None else (
                getattr(getattr(ref_model, "config", None), "_name_or_path", None) or start)
            fingerprint = _fingerprint(ref_model)
        if self.main:
            tok.save_pretrained(model_dir)
        logs = trainer.state.log_history

        def mean(key: str) -> float | None:
            vals = [h[key] for h in logs if key in h]
            return float(np.mean(vals)) if vals else None

        shutil.rmtree(rdir / "trainer", ignore_errors=True) if self.main else None
        return {
            "reference_model": str(ref_name),
            "reference_fingerprint": fingerprint,
            "loss": float(result.training_loss) if result.training_loss is not None else mean("loss"),
            "reward_margin": mean("rewards/margins"),
            "reward_accuracy": mean("rewards/accuracies"),
            "train_steps": int(trainer.state.global_step),
        }

    def reference_model(self, start: str, args: Any) -> Any:
        """The reference to hand `DPOTrainer`: None lets TRL take the round's start (its own path, or the
        adapter-disabled start with LoRA); with `reference: initial`, the run's first policy, loaded as TRL
        loads a policy from a path (`model_init_kwargs`)."""
        if self.recipe.reference != "initial" or start == self.base:
            return None
        from trl.trainer.utils import create_model_from_path

        return create_model_from_path(self.base, **dict(args.model_init_kwargs or {}))

    # the loop -------------------------------------------------------------------------------------
    def run(self, rounds: int | None = None) -> list[RoundMetrics]:
        r = self.recipe
        rounds = r.rounds if rounds is None else rounds
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False))
        self.state.wait_for_everyone()
        pairs = self.load_data()  # before any model is built: a bad data path fails fast
        self.base = self.base_model()
        stages = ([(0, "seed")] if r.seed_stage.enabled else []) + [(n, r.method) for n in range(1, rounds + 1)]
        done: list[RoundMetrics] = []
        start = self.base
        for round_no, stage in stages:
            rdir = self.out / f"round-{round_no}"
            finished = self.finished_round(round_no)
            if finished is not None:
                finished.resumed = True
                done.append(finished)
                start = finished.model_path
                self.log(f"round {round_no} ({stage}) already finished: skipping")
            else:
                if self.main and rdir.exists():
                    self.log(f"round {round_no} ({stage}) was left half-written: redoing it from its start")
                    shutil.rmtree(rdir)
                self.state.wait_for_everyone()
                m = self.one_round(round_no, stage, start, pairs, rdir)
                done.append(m)
                start = m.model_path
            if r.evaluates:
                self.evaluate(done)
        return done

    def finished_round(self, round_no: int) -> RoundMetrics | None:
        """Round `round_no`'s metrics when it finished (its metrics.json and model are there), else None."""
        rdir = self.out / f"round-{round_no}"
        if (rdir / "metrics.json").exists() and (rdir / "model").exists():
            return RoundMetrics.model_validate_json((rdir / "metrics.json").read_text())
        return None

    def evaluate(self, finished: list[RoundMetrics]) -> list:
        """Evaluate the start and the `finished` rounds not evaluated yet (main process; the others wait)."""
        from dsatkit.trainers.evaluation import RoundEvaluator

        rows = RoundEvaluator(self).evaluate(finished) if self.main else []
        self.state.wait_for_everyone()
        return rows

    def one_round(self, round_no: int, stage: str, start: str, pairs: pl.DataFrame, rdir: Path) -> RoundMetrics:
        r = self.recipe
        self.log(f"[bold]round {round_no}[/bold] ({stage}) from {start}")
        t0 = time.perf_counter()
        dropped: dict[str, int] = {}
        n_prompts = 0
        if self.main:
            rdir.mkdir(parents=True, exist_ok=True)
            round_pairs, dropped, n_prompts, cleaned = self.round_pairs(stage, start, pairs, round_no)
            round_pairs.write_parquet(rdir / "pairs.parquet")
            (rdir / "sampling.json").write_text(json.dumps({"dropped": dropped, "prompts": n_prompts,
                                                            "cleaned": cleaned}))
        self.state.wait_for_everyone()
        round_pairs = pl.read_parquet(rdir / "pairs.parquet")
        info = json.loads((rdir / "sampling.json").read_text())
        dropped, n_prompts, cleaned = info["dropped"], info["prompts"], info["cleaned"]
        sample_s = time.perf_counter() - t0
        if round_pairs.is_empty():
            raise TrainError(
                f"round {round_no}: every sample was dropped ({', '.join(f'{k} {v}' for k, v in dropped.items())})",
                hint="raise sampler.max_new_tokens or temperature, or check the model's chat template",
            )
        t1 = time.perf_counter()
        info = self.train(start, round_pairs, rdir, r.seed_stage.epochs if stage == "seed" else None)
        train_s = time.perf_counter() - t1
        d2 = emb = None
        if stage != "seed" and self.main:
            sampled = round_pairs.select(_text("rejected" if stage == "spin" else "chosen"))[:, 0]
            sampled = sampled.head(r.metrics.max_samples)
            d2 = distinct_2(sampled)
            if r.metrics.embedding_model:
                emb = embedding_distance(sampled.to_list(), r.metrics.embedding_model)
        m = RoundMetrics(
            round=round_no,
            stage=stage,
            start_model=start,
            model_path=str(rdir / "model"),
            prompts=n_prompts,
            pairs_kept=round_pairs.height,
            dropped=dropped,
            cleaned=cleaned,
            distinct_2=d2,
            embedding_distance=emb,
            sample_s=round(sample_s, 3),
            train_s=round(train_s, 3),
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **info,
        )
        if self.main:
            record_round(self.out, m)
            tmp = rdir / "metrics.json.tmp"
            tmp.write_text(m.model_dump_json(indent=2))
            tmp.replace(rdir / "metrics.json")  # last, atomically: the round is finished
        self.state.wait_for_everyone()
        return m


def _fingerprint(model: Any) -> float | None:
    """Sum of every weight (accumulated in float64): cheap evidence of which weights a model holds, LoRA-merged
    layers included (an embedding-only sum cannot tell a LoRA round's model from its start)."""
    import torch

    try:
        params = [p.detach() for p in model.parameters()]
        if not params or any(p.numel() == 0 for p in params):  # ZeRO-3 shards read as empty
            return None
        return float(sum(p.sum(dtype=torch.float64) for p in params))
    except Exception:  # noqa: BLE001 - a fingerprint is informative only
        return None


def fingerprint_of(path: str | Path) -> float | None:
    """The fingerprint of a saved model, to compare with a round's `reference_fingerprint`."""
    from transformers import AutoModelForCausalLM

    return _fingerprint(AutoModelForCausalLM.from_pretrained(str(path)))


TRAIN_ROUNDS = pl.Schema(
    {
        "round": pl.Int64(), "stage": pl.String(), "start_model": pl.String(), "reference_model": pl.String(),
        "reference_fingerprint": pl.Float64(), "model_path": pl.String(), "prompts": pl.Int64(),
        "pairs_kept": pl.Int64(), "dropped": pl.String(), "cleaned": pl.String(), "loss": pl.Float64(),
        "reward_margin": pl.Float64(),
        "reward_accuracy": pl.Float64(), "train_steps": pl.Int64(), "distinct_2": pl.Float64(),
        "embedding_distance": pl.Float64(), "sample_s": pl.Float64(), "train_s": pl.Float64(),
        "finished_at": pl.String(),
    }
)


def record_round(out_dir: Path, m: RoundMetrics) -> None:
    """Upsert the round's row into `train_rounds` of `out_dir/train.duckdb`."""
    row = m.model_dump()
    row["dropped"], row["cleaned"] = json.dumps(row["dropped"]), json.dumps(row["cleaned"])
    frame = pl.DataFrame([row], schema=TRAIN_ROUNDS)  # noqa: F841 - read by DuckDB below
    con = duckdb.connect(str(out_dir / DB_NAME))
    try:
        con.execute(f"create table if not exists {TABLE} as select * from frame limit 0")
        for name in TRAIN_ROUNDS:  # a table written by an older dsatkit: add what it lacks
            con.execute(f'alter table {TABLE} add column if not exists "{name}" {_duck_type(TRAIN_ROUNDS[name])}')
        con.execute(f"delete from {TABLE} where round = ?", [m.round])
        con.execute(f"insert into {TABLE} by name select * from frame")
    finally:
        con.close()


def _duck_type(dtype: pl.DataType) -> str:
    return {pl.Int64: "bigint", pl.Float64: "double", pl.String: "varchar", pl.Boolean: "boolean"}[dtype.base_type()]


def evaluate_rounds(recipe: Recipe) -> list:
    """Evaluate the finished rounds of `recipe.output_dir` that are not evaluated yet (`dsatkit
    eval-rounds`); returns the `EvalRow`s written now."""
    drift_run = DriftRun(recipe)
    try:
        drift_run.base = drift_run.base_model()
        finished = []
        for rdir in sorted(drift_run.out.glob("round-*"), key=lambda p: int(p.name.split("-")[1])):
            m = drift_run.finished_round(int(rdir.name.split("-")[1]))
            if m is not None:
                finished.append(m)
        return drift_run.evaluate(finished)
    finally:
        drift_run.close()


def run(recipe: Recipe, rounds: int | None = None) -> list[RoundMetrics]:
    """Run (or resume) the recipe's rounds; returns every round's metrics, finished earlier or now."""
    drift_run = DriftRun(recipe)
    try:
        return drift_run.run(rounds)
    finally:
        drift_run.close()
