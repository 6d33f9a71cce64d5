"""Did the round help? Evaluation between DRIFT rounds, on held-out DSAT prompts that are never trained on.

For the starting model and every finished round, one answer per held-out prompt (the recipe's sampler
backend, greedy by default, a fixed seed), then:

- with a judge (the recipe's `judge:`, called through the mining judge's client: cache, budget,
  retries, redaction): pairwise comparisons of the policy's answer with the real dissatisfying response
  (`against = rejected`: does the policy now beat what users rejected?) and with the previous round's
  answer (`against = previous`, the starting model for the first round: did this round help?). Every
  pair is judged in both orders (position bias), ties allowed. Reported: the win rate (a prompt scores
  the mean of its two orders, a tie half) with a 95% Wilson interval, a length-controlled win rate
  (`lc_win_rate`), the share of decisive verdicts that picked the first position, whether the two orders
  agreed, and the mean answer lengths;
- the DPO implicit reward of the policy (against the starting model, beta of the recipe) on held-out
  pairs built as round 1 builds its pairs, accuracy and margin: always without a judge, and with one when
  `evaluation.implicit_reward` asks for it; and the diversity of the answers (distinct-2, embedding
  distance).

Results go to `eval_rounds` in `output_dir/train.duckdb`, one row per policy and comparison.
`evaluation.keep: best` marks (never deletes) the best round: `best.json` and the `best` column.

Layout under `output_dir/eval/`: `answers/<policy>.parquet` (written before any judging, so a killed
evaluation resumes with the same answers and the judge cache answers what was already asked),
`heldout_pairs.parquet` and `reference_logps.parquet` (implicit reward), `<policy>.json` (written last:
that policy's evaluation is complete).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from dsatkit.config import StrictModel
from dsatkit.devices import torch_device
from dsatkit.errors import TrainError
from dsatkit.rates import wilson_interval
from dsatkit.schema import frame_schema

if TYPE_CHECKING:
    from dsatkit.trainers.drift import DriftRun, RoundMetrics
    from dsatkit.trainers.questions import PairwiseQuestion

EVAL_TABLE = "eval_rounds"
START = "start"
"""The label of the starting policy (the recipe's `model`, before any round)."""


class EvaluationSpec(StrictModel):
    """`evaluation:` of the recipe: what is measured after every round (and by `dsatkit eval-rounds`)."""

    enabled: bool | None = Field(
        None, description="null = on when data.test_size holds prompts out (the evaluation needs them)"
    )
    max_prompts: int | None = Field(64, gt=0, description="held-out DSAT prompts evaluated (first by exchange id)")
    temperature: float | None = Field(0.0, ge=0, description="0 = greedy; null = the sampler's temperature")
    max_new_tokens: int | None = Field(None, gt=0, description="null = the sampler's max_new_tokens")
    against: list[Literal["rejected", "previous"]] = Field(
        default_factory=lambda: ["rejected", "previous"],
        description="the judge's comparisons: the real dissatisfying response, and the previous round's answer",
    )
    implicit_reward: bool | None = Field(
        None, description="DPO implicit-reward accuracy/margin on held-out pairs; null = only when no judge is set"
    )
    keep: Literal["all", "best"] = Field(
        "all", description="best = mark the best round by LC win rate vs the previous round (nothing is deleted)"
    )


class EvalRow(BaseModel):
    """One row of `eval_rounds`: a policy's answers on the held-out prompts, against one comparison."""

    policy: str = Field(description="start | round-N")
    round: int | None = Field(None, description="the training round; null for the starting policy")
    stage: str = Field(description="start | seed | drift | spin | idpo")
    model_path: str
    against: str = Field(description="rejected | previous")
    against_policy: str | None = Field(None, description="the policy compared with (previous); null for rejected")
    prompts: int = 0
    judged: int = Field(0, description="prompts with a verdict in both orders (what the win rate is over)")
    wins: int = Field(0, description="verdicts (both orders counted) for the policy")
    losses: int = 0
    ties: int = 0
    win_rate: float | None = None
    win_low: float | None = Field(None, description="95% Wilson interval of win_rate")
    win_high: float | None = None
    lc_win_rate: float | None = Field(None, description="length-controlled win rate (at zero length difference)")
    first_position_rate: float | None = Field(None, description="decisive verdicts that picked the answer shown first")
    order_agreement: float | None = Field(None, description="judged prompts whose two orders agree")
    position_bias: bool | None = Field(None, description="first_position_rate differs from 0.5 (binomial p < 0.05)")
    mean_length: float | None = Field(None, description="the policy's mean answer length, in characters")
    other_mean_length: float | None = None
    implicit_accuracy: float | None = None
    implicit_margin: float | None = None
    distinct_2: float | None = None
    embedding_distance: float | None = None
    judge_model: str | None = Field(None, description="null = no judge configured")
    judge_calls: int = 0
    skipped_by_budget: int = 0
    complete: bool = True
    best: bool = False
    finished_at: str = ""


# ---- statistics ------------------------------------------------------------------------------------
def lc_win_rate(length_diff: np.ndarray, outcome: np.ndarray, first: np.ndarray) -> float | None:
    """Length-controlled win rate (after AlpacaEval 2's LC): a logistic regression of the judge's verdict
    (`outcome` 1 = the policy won, 0 = lost, 0.5 = a tie, fitted as two half-weight rows) on the length
    difference (policy minus other) and the position (`first`: the policy's answer was shown first),
    read at zero length difference and no position: sigmoid(intercept).

    The length difference enters as its sign (longer / shorter / equal), the judgments with the policy
    longer and with it shorter weigh the same, and every coefficient, the intercept included, has
    scikit-learn's default L2 penalty (C = 1: a prior at "no advantage"). The intercept is then the mean
    of the log-odds of winning when longer and when shorter, and a judge that always prefers the longer
    answer reads 0.5 exactly (with the magnitude as a covariate the data cannot place that boundary and
    the fit lands anywhere in the gap). None without two outcomes to fit.
    """
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(length_diff, dtype=float)
    y = np.asarray(outcome, dtype=float)
    if d.size == 0:
        return None
    pos = np.where(np.asarray(first, dtype=bool), 1.0, -1.0)
    x = np.column_stack([np.ones_like(d), np.sign(d), pos])
    longer, shorter = d > 0, d < 0
    w = np.ones_like(d)
    if longer.any() and shorter.any():
        w = np.where(longer, d.size / (2 * longer.sum()), np.where(shorter, d.size / (2 * shorter.sum()), 1.0))
    tie = y == 0.5
    xs = np.concatenate([x[~tie], x[tie], x[tie]])
    ys = np.concatenate([y[~tie], np.ones(tie.sum()), np.zeros(tie.sum())])
    ws = np.concatenate([w[~tie], w[tie] / 2, w[tie] / 2])
    if len(np.unique(ys)) < 2:
        return None
    model = LogisticRegression(fit_intercept=False).fit(xs, ys, sample_weight=ws)
    return float(1 / (1 + math.exp(-model.coef_[0][0])))


def win_stats(judgments: pl.DataFrame) -> dict:
    """Win statistics of one comparison from its judgments.

    `judgments`: one row per prompt and order with `exchange_id`, `first` (the policy's answer was shown
    first), `winner` ("A" = the first shown, "B", "tie", or null = no verdict) and `length_diff` (policy
    minus other, characters). Returns the win-rate fields of `EvalRow`.
    """
    from scipy.stats import binomtest

    j = judgments.filter(pl.col("winner").is_not_null()).with_columns(
        score=pl.when(pl.col("winner") == "tie").then(0.5)
        .when((pl.col("winner") == "A") == pl.col("first")).then(1.0)
        .otherwise(0.0)
    )
    per_prompt = j.group_by("exchange_id").agg(n=pl.len(), score=pl.col("score").mean(),
                                               agree=pl.col("score").n_unique() == 1).filter(pl.col("n") == 2)
    n = per_prompt.height
    total = float(per_prompt["score"].sum()) if n else 0.0
    low, high = wilson_interval(total, n)
    decisive = j.filter(pl.col("winner") != "tie")
    firsts = int((decisive["winner"] == "A").sum())
    return {
        "judged": n,
        "wins": int((j["score"] == 1.0).sum()),
        "losses": int((j["score"] == 0.0).sum()),
        "ties": int((j["score"] == 0.5).sum()),
        "win_rate": total / n if n else None,
        "win_low": low,
        "win_high": high,
        "lc_win_rate": lc_win_rate(j["length_diff"].to_numpy(), j["score"].to_numpy(), j["first"].to_numpy())
        if j.height else None,
        "first_position_rate": firsts / decisive.height if decisive.height else None,
        "order_agreement": float(per_prompt["agree"].mean()) if n else None,
        "position_bias": bool(binomtest(firsts, decisive.height, 0.5).pvalue < 0.05) if decisive.height else None,
    }


def judge_comparison(
    question: PairwiseQuestion, prompts: pl.DataFrame, policy: pl.Series, other: pl.Series
) -> pl.DataFrame:
    """Ask `question` about each prompt's two answers in both orders.

    `prompts` holds `exchange_id` and `prompt` (messages); `policy` and `other` are the two answers, row
    for row. Returns one row per prompt and order: exchange_id, first (the policy's answer shown as A),
    winner (A | B | tie | null when no verdict came: budget, failure), length_diff.
    """
    base = prompts.select("exchange_id", "prompt").with_columns(p=policy, o=other)
    both = pl.concat([
        base.with_columns(first=pl.lit(True), a=pl.col("p"), b=pl.col("o")),
        base.with_columns(first=pl.lit(False), a=pl.col("o"), b=pl.col("p")),
    ])
    items = question.keyed(both.select("prompt", "a", "b"))
    answers = question.answers(items).select(
        "key", winner=pl.col("answer").str.json_decode(pl.Struct({"winner": pl.String})).struct.field("winner")
    )
    return (
        both.with_columns(key=items["key"])
        .join(answers, on="key", how="left", maintain_order="left")
        .select("exchange_id", "first", "winner",
                length_diff=pl.col("p").str.len_chars().cast(pl.Int64) - pl.col("o").str.len_chars().cast(pl.Int64))
    )


# ---- implicit reward -------------------------------------------------------------------------------
def sequence_logps(
    model_path: str | Path,
    prompts: list[list[dict]],
    completions: list[str],
    *,
    tokenizer_path: str | Path | None = None,
    chat_template: str | None = None,
    max_length: int = 1024,
    batch_size: int = 8,
) -> np.ndarray:
    """log p(completion | prompt) under the model at `model_path`, one float per pair.

    The prompt goes through the chat template with the generation prompt, the completion is tokenised
    apart and ends with the end-of-sequence token, as TRL's DPO builds its sequences; a pair longer than
    `max_length` loses the start of its prompt first (TRL's `keep_end`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path or model_path))
    if chat_template:
        tok.chat_template = chat_template
    device = torch_device()
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).to(device).eval()
    texts = tok.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
    p_ids = tok(texts, add_special_tokens=False)["input_ids"]
    c_ids = [ids + [tok.eos_token_id] for ids in tok(completions, add_special_tokens=False)["input_ids"]]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[float] = []
    with torch.inference_mode():
        for s in range(0, len(p_ids), batch_size):
            seqs, starts = [], []
            for p, c in zip(p_ids[s : s + batch_size], c_ids[s : s + batch_size], strict=True):
                c = c[:max_length - 1]
                p = p[max(0, len(p) + len(c) - max_length):]
                seqs.append(p + c)
                starts.append(len(p))
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, seq in enumerate(seqs):
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            pos = torch.arange(1, width).unsqueeze(0)
            take = (pos >= torch.tensor(starts).unsqueeze(1)) & (mask[:, 1:] == 1)
            out += (logp.cpu() * take).sum(dim=1).tolist()
    del model
    return np.asarray(out, dtype=np.float64)


# ---- the evaluation of a run -----------------------------------------------------------------------
class Policy(BaseModel):
    label: str
    round: int | None
    stage: str
    model_path: str


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


class RoundEvaluator:
    """Evaluates a `DriftRun`'s policies (the start, then each finished round) that are not done yet."""

    def __init__(self, run: DriftRun):
        self.run = run
        self.recipe = run.recipe
        self.spec: EvaluationSpec = run.recipe.evaluation
        self.dir = run.out / "eval"

    # inputs ----------------------------------------------------------------------------------------
    def prompts(self) -> pl.DataFrame:
        """The held-out DSAT pairs evaluated: `output_dir/test_pairs.parquet`, first `max_prompts` by id."""
        path = self.run.out / "test_pairs.parquet"
        if not path.exists():
            raise TrainError(f"no held-out prompts in {self.run.out} (test_pairs.parquet)",
                             hint="the evaluation needs data.test_size > 0 when the rounds are trained")
        test = pl.read_parquet(path).filter(pl.col("origin") == "dsat").sort("exchange_id")
        if self.spec.max_prompts:
            test = test.head(self.spec.max_prompts)
        if test.is_empty():
            raise TrainError("the held-out split holds no DSAT prompt", hint="raise data.test_size")
        return test

    def policies(self, finished: list[RoundMetrics]) -> list[Policy]:
        """The start, then the finished rounds in order."""
        out = [Policy(label=START, round=None, stage=START, model_path=self.run.base)]
        out += [Policy(label=f"round-{m.round}", round=m.round, stage=m.stage, model_path=m.model_path)
                for m in sorted(finished, key=lambda m: m.round)]
        return out

    def sampler_spec(self):
        """The recipe's sampler with the evaluation's temperature and length (precomputed -> auto)."""
        r, s = self.recipe, self.spec
        return r.sampler.model_copy(update={
            "temperature": r.sampler.temperature if s.temperature is None else s.temperature,
            "max_new_tokens": s.max_new_tokens or r.sampler.max_new_tokens,
            "backend": "auto" if r.sampler.backend == "precomputed" else r.sampler.backend,
        })

    def setup(self) -> dict:
        """What a policy's evaluation depends on besides its weights: a marker written under another setup
        (another judge, no judge, other prompts or sampling) does not count as done."""
        spec = self.sampler_spec()
        judge = self.recipe.judge
        return {
            "judge": None if judge is None else [judge.model, judge.redact, judge.context_token_budget],
            "against": list(self.spec.against), "max_prompts": self.spec.max_prompts,
            "temperature": spec.temperature, "top_p": spec.top_p, "max_new_tokens": spec.max_new_tokens,
            "seed": self.recipe.seed, "implicit": self.implicit(),
        }

    def implicit(self) -> bool:
        s = self.spec
        return s.implicit_reward if s.implicit_reward is not None else self.recipe.judge is None

    def answers(self, policy: Policy, prompts: pl.DataFrame) -> pl.DataFrame:
        """`exchange_id, answer`: the policy's answer to each held-out prompt, generated once per sampling
        setup and kept (`eval/answers/<policy>-<setup>.parquet`)."""
        from dsatkit.hashing import md5_of
        from dsatkit.trainers.sampler import sample

        spec, r = self.sampler_spec(), self.recipe
        tag = md5_of(pl.Series([json.dumps([spec.temperature, spec.top_p, spec.max_new_tokens, r.seed])]))[0][:8]
        path = self.dir / "answers" / f"{policy.label}-{tag}.parquet"
        if path.exists():
            have = pl.read_parquet(path)
            if set(prompts["exchange_id"]) <= set(have["exchange_id"]):
                return prompts.select("exchange_id").join(have, on="exchange_id", how="left", maintain_order="left")
        self.run.log(f"evaluation: answering {prompts.height} held-out prompts with {policy.label}")
        tok = r.tokenizer if (r.tokenizer and policy.model_path == self.run.base) else None
        got = sample(policy.model_path, prompts["prompt"].to_list(), spec, n=1, seed=r.seed, tokenizer_path=tok,
                     chat_template=r.chat_template).sort("row")
        frame = prompts.select("exchange_id").with_columns(answer=got["text"])
        _atomic_parquet(frame, path)
        return frame

    # implicit reward -------------------------------------------------------------------------------
    def heldout_pairs(self, prompts: pl.DataFrame) -> pl.DataFrame:
        """The held-out prompts' pairs as round 1 would build them (a chosen sampled from the start model,
        checked and cleaned; the real DSAT response as rejected), built once."""
        path = self.dir / "heldout_pairs.parquet"
        if path.exists():
            return pl.read_parquet(path)
        pairs, *_ = self.run.round_pairs("drift", self.run.base, prompts, 0, max_prompts=None)
        _atomic_parquet(pairs, path)
        return pairs

    def _logps(self, model_path: str, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        r = self.recipe
        text = lambda c: pairs[c].list.last().struct.field("content").to_list()
        kw = {"tokenizer_path": r.tokenizer if (r.tokenizer and model_path == self.run.base) else None,
              "chat_template": r.chat_template, "max_length": int(r.dpo.get("max_length") or 1024)}
        prompts = pairs["prompt"].to_list()
        return sequence_logps(model_path, prompts, text("chosen"), **kw), sequence_logps(model_path, prompts,
                                                                                           text("rejected"), **kw)

    def implicit_reward(self, policy: Policy, prompts: pl.DataFrame) -> tuple[float | None, float | None]:
        """(accuracy, margin) of beta * log(policy / start) on the held-out pairs; None for the start."""
        if policy.label == START:
            return None, None
        pairs = self.heldout_pairs(prompts)
        if pairs.is_empty():
            return None, None
        ref_path = self.dir / "reference_logps.parquet"
        if ref_path.exists():
            ref = pl.read_parquet(ref_path)
        else:
            rc, rr = self._logps(self.run.base, pairs)
            ref = pl.DataFrame({"exchange_id": pairs["exchange_id"], "chosen": rc, "rejected": rr})
            _atomic_parquet(ref, ref_path)
        pc, pr = self._logps(policy.model_path, pairs)
        beta = float(self.recipe.dpo.get("beta", 0.1))
        margin = beta * ((pc - ref["chosen"].to_numpy()) - (pr - ref["rejected"].to_numpy()))
        return float(np.mean(margin > 0)), float(np.mean(margin))

    # the loop --------------------------------------------------------------------------------------
    def done(self, policy: Policy) -> bool:
        """Whether `policy` was evaluated completely, under the current setup."""
        marker = self.dir / f"{policy.label}.json"
        return marker.exists() and json.loads(marker.read_text()).get("setup") == self.setup()

    def evaluate(self, finished: list[RoundMetrics]) -> list[EvalRow]:
        """Evaluate every policy of the run not evaluated yet; returns the rows written now."""
        judge = self.recipe.judge
        question = None
        if judge is not None:
            from dsatkit.trainers.questions import PairwiseQuestion

            question = PairwiseQuestion(judge, self.run.cache())
        policies = self.policies(finished)
        todo = [i for i, policy in enumerate(policies) if not self.done(policy)]
        written: list[EvalRow] = []
        prompts = self.prompts() if todo else None
        for i in todo:
            policy = policies[i]
            marker = self.dir / f"{policy.label}.json"
            marker.unlink(missing_ok=True)  # another setup's: the rows about to be written replace its rows
            rows = self.evaluate_policy(policy, policies[i - 1] if i else None, prompts, question)
            record_eval(self.run.out, policy.label, rows)
            written += rows
            if all(row.complete for row in rows):  # last: this policy is done
                marker.with_suffix(".tmp").write_text(json.dumps({"setup": self.setup(),
                                                                  "rows": [row.model_dump() for row in rows]}))
                marker.with_suffix(".tmp").replace(marker)
        if written and self.spec.keep == "best":
            mark_best(self.run.out)
        return written

    def evaluate_policy(
        self, policy: Policy, previous: Policy | None, prompts: pl.DataFrame, question: PairwiseQuestion | None
    ) -> list[EvalRow]:
        """The rows of one policy: one per comparison with a judge, else one (implicit reward)."""
        from dsatkit.trainers.drift import distinct_2, embedding_distance

        r, s = self.recipe, self.spec
        answers = self.answers(policy, prompts)["answer"]
        d2 = distinct_2(answers)
        emb = embedding_distance(answers.to_list(), r.metrics.embedding_model) if r.metrics.embedding_model else None
        acc, margin = self.implicit_reward(policy, prompts) if self.implicit() else (None, None)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        common = {"policy": policy.label, "round": policy.round, "stage": policy.stage, "model_path": policy.model_path,
                  "prompts": prompts.height, "mean_length": float(answers.str.len_chars().mean()),
                  "distinct_2": d2, "embedding_distance": emb, "finished_at": now}
        if question is None:
            return [EvalRow(against="rejected", implicit_accuracy=acc, implicit_margin=margin, **common)]
        rows = []
        for against in s.against:
            if against == "previous" and previous is None:
                continue
            if against == "rejected":
                other = prompts["rejected"].list.last().struct.field("content")
                other_label = None
            else:
                assert previous is not None
                other = self.answers(previous, prompts)["answer"]
                other_label = previous.label
            calls, skipped = question.stats.calls, question.stats.skipped_by_budget
            judgments = judge_comparison(question, prompts, answers, other)
            skipped = question.stats.skipped_by_budget - skipped
            rows.append(EvalRow(
                against=against, against_policy=other_label, other_mean_length=float(other.str.len_chars().mean()),
                judge_model=question.config.model, judge_calls=question.stats.calls - calls,
                skipped_by_budget=skipped, complete=skipped == 0,
                implicit_accuracy=acc if against == "rejected" else None,
                implicit_margin=margin if against == "rejected" else None,
                **win_stats(judgments), **common,
            ))
            if question.stats.budget_exhausted:
                self.run.log(f"evaluation: the judge's budget ran out during {policy.label} vs {against}; "
                              "re-run `dsatkit eval-rounds` with a larger budget to finish (answers are cached)")
        return rows


# ---- the table -------------------------------------------------------------------------------------
EVAL_SCHEMA = frame_schema(EvalRow)


def record_eval(out_dir: Path, policy: str, rows: list[EvalRow]) -> None:
    """Replace `policy`'s rows of `eval_rounds` in `out_dir/train.duckdb` with `rows`."""
    from dsatkit.trainers.drift import DB_NAME

    frame = pl.DataFrame([row.model_dump() for row in rows], schema=EVAL_SCHEMA)  # noqa: F841 (read by DuckDB)
    con = duckdb.connect(str(out_dir / DB_NAME))
    try:
        con.execute(f"create table if not exists {EVAL_TABLE} as select * from frame limit 0")
        con.execute(f"delete from {EVAL_TABLE} where policy = ?", [policy])
        con.execute(f"insert into {EVAL_TABLE} by name select * from frame")
    finally:
        con.close()


def read_eval(out_dir: Path) -> pl.DataFrame:
    """`eval_rounds` of a training output, the start first, then by round (empty when there is none)."""
    from dsatkit.trainers.drift import DB_NAME

    path = out_dir / DB_NAME
    if not path.exists():
        return pl.DataFrame(schema=EVAL_SCHEMA)
    con = duckdb.connect(str(path), read_only=True)
    try:
        if not con.sql(f"select * from duckdb_tables() where table_name = '{EVAL_TABLE}'").fetchall():
            return pl.DataFrame(schema=EVAL_SCHEMA)
        return con.sql(f"select * from {EVAL_TABLE} order by round nulls first, against desc").pl()
    finally:
        con.close()


def best_policy(rows: pl.DataFrame) -> str | None:
    """The best policy by LC win rate vs the previous round: the last of the unbroken run of rounds each
    of which beat the one before it (LC win rate > 0.5; the raw win rate where LC cannot be fitted). The
    start when the first round did not help; None without judged comparisons with the previous round."""
    prev = rows.filter((pl.col("against") == "previous") & (pl.col("judged") > 0)).sort("round")
    if prev.is_empty():
        return None
    best = START
    for policy, against_policy, lc, raw in prev.select("policy", "against_policy", "lc_win_rate", "win_rate").rows():
        score = lc if lc is not None else raw
        if against_policy != best or score is None or score <= 0.5:
            break
        best = policy
    return best


def mark_best(out_dir: Path) -> str | None:
    """Mark the best policy (`best_policy`): the `best` column of `eval_rounds` and `out_dir/best.json`.
    Nothing is deleted."""
    from dsatkit.trainers.drift import DB_NAME

    rows = read_eval(out_dir)
    best = best_policy(rows)
    con = duckdb.connect(str(out_dir / DB_NAME))
    try:
        con.execute(f"update {EVAL_TABLE} set best = (policy = ?)", [best or ""])
    finally:
        con.close()
    if best is not None:
        model = rows.filter(pl.col("policy") == best)["model_path"][0]
        (out_dir / "best.json").write_text(json.dumps({
            "policy": best, "model_path": model,
            "rule": "the last round of the unbroken run of rounds that each beat the previous one (LC win rate > 0.5)",
        }, indent=2))
    return best
