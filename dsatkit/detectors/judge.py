"""LLM-judge DSAT detector over any OpenAI-compatible endpoint (OpenAI, Azure, `vllm serve`, ...).

Each exchange is shown to the judge under the versioned rubric (`dsatkit.detectors.rubric`); its JSON
verdict is validated by a pydantic model and becomes one DETECTIONS row. Design choices:

- Retries are ours (the client's are off): 408/409/429/5xx, timeouts, dropped connections and
  malformed bodies are retried with exponential backoff and jitter, honouring Retry-After, so that
  call counts and budgets are exact. 401/403/404 stop the run at once (bad key, URL or model).
- Budget: `max_calls` caps HTTP requests (retries and repairs included); `max_total_tokens` stops
  before a call whose estimated cost (prompt estimate + max_tokens) could exceed it. A stop is clean:
  answers received so far are cached and returned, the rest are counted in `stats.skipped_by_budget`.
- Cache: every answer is committed as it arrives (group commit: the answers that arrive while one
  write is in flight go in the next), keyed by md5(model, rubric version, redact flag, context,
  response, feedback). The endpoint URL is not in the key: the same model gives the same verdicts.
  An answer that is still invalid after the repair attempt is cached as a final failure when
  temperature is 0 (asking again would get the same answer), once the judge has given a valid verdict
  in the run; transport failures are never cached. `INVALID_LIMIT` invalid answers before any valid one
  stop the run (a model that does not follow the rubric).
- Exchanges with identical content are judged once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import openai
import polars as pl
from pydantic import BaseModel

from dsatkit.cache import Cache
from dsatkit.config import JudgeConfig
from dsatkit.detectors import Detector, rubric
from dsatkit.errors import EndpointError
from dsatkit.exchanges import attach_context
from dsatkit.hashing import md5_of
from dsatkit.progress import progress
from dsatkit.redact import redact_exchanges
from dsatkit.schema import DETECTIONS, conform, empty
from dsatkit.stages.base import Frames, StageStats

if TYPE_CHECKING:
    from dsatkit.config import MineConfig

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429}
_FATAL_STATUS = {401, 403, 404}
_MAX_RETRY_AFTER_S = 120.0
_WORKERS_PER_CLIENT = 8
_VERDICT_DTYPE = pl.Struct(
    {"rationale": pl.String, "dsat": pl.Boolean, "category": pl.String, "confidence": pl.Float64}
)


class JudgeStats(StageStats):
    """Counters for the run summary (and the judge stage's batches and rows). Per exchange: judged +
    cache_hits + failures + skipped_by_budget = exchanges given (a duplicate of a judged exchange counts
    as judged)."""

    exchanges: int = 0
    judged: int = 0
    cache_hits: int = 0
    failures: int = 0
    skipped_by_budget: int = 0
    calls: int = 0
    retries: int = 0
    repairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float = 0.0
    budget_exhausted: bool = False
    structured_output: str = ""
    elapsed_s: float = 0.0


class JudgePlan(BaseModel):
    """`JudgeDetector.plan`: what a judge run would cost (a dry run)."""

    exchanges: int
    cached: int
    calls: int
    prompt_tokens: int
    max_completion_tokens: int
    max_cost: float


class _BudgetStop(Exception):
    pass


INVALID_LIMIT = 5
"""Answers that are not a valid verdict, even after the repair, with no valid one yet, that stop the run:
the model (or the endpoint) does not follow the rubric, and judging on would only spend the budget."""
SHOWN_FAILURES = 3
"""Failed exchanges logged one by one; the rest are counted in `JudgeStats.failures`."""


class _Failed(Exception):
    """This exchange gets no verdict; `final` says whether to cache that (a validation failure)."""

    def __init__(self, error: str, *, final: bool, transport: bool = False, answer: str | None = None):
        super().__init__(error)
        self.final, self.transport, self.answer = final, transport, answer


@dataclass
class _Outcome:
    key: str
    verdict: BaseModel | None = None
    error: str | None = None
    skipped: bool = False


class JudgeDetector(Detector):
    """`detect(exchanges) -> DETECTIONS`, one row per exchange that got a valid verdict (cached or fresh).

    As a stage it is the cascade's dear end: `select` picks the exchanges it sees from the cheap
    detectors' verdicts (`judge_on`), and `process` gives them their context (from the batch's turns)
    before asking. Input columns: exchanges.exchange_id, context, response, feedback; turns (for the
    context). Output: detections.

    What it asks is the DSAT rubric; how it calls (cache, budget, retries, repair, concurrency) is `answers`.
    Another question reuses the calling by subclassing and replacing the question's five parts: `version`
    (part of every cache key), `messages_for`, `parse_answer`, `response_format` and `repair_prompt`.
    """

    name = "judge"
    version = rubric.RUBRIC_VERSION
    reads: ClassVar = {"exchanges": ("exchange_id", "context", "response", "feedback")}
    cascade = True
    cached = True
    unit = "exchanges"
    """What one question is about, for the progress line."""
    response_format: dict = rubric.RESPONSE_FORMAT_SCHEMA
    """The strict JSON-schema `response_format` asked for first (JSON mode is the fallback)."""
    repair_prompt: str = rubric.REPAIR_PROMPT
    """Sent once after an answer `parse_answer` rejects; `{error}` is the reason."""

    def __init__(self, config: JudgeConfig, cache: Cache | None = None,
                 uncertain_band: tuple[float, float] = (0.25, 0.75)):
        self.config = config
        self.uncertain_band = uncertain_band  # fused scores the cascade counts as uncertain (judge_on)
        self.cache = cache
        self.stats = JudgeStats()
        self.backoff_base_s = config.backoff_base_s
        self.backoff_max_s = config.backoff_max_s
        # auto tries strict JSON-schema output first and falls back to JSON mode if the endpoint refuses it
        self._mode = "json_object" if config.structured_output == "json_object" else "json_schema"
        self._schema_worked = False
        self._reserved_tokens = 0
        self._consecutive_transport_failures = 0
        self._successes = 0
        self._valid = 0  # answers that were a valid verdict
        self._invalid = 0  # answers that were not, even after the repair
        self._shown = 0  # failures logged one by one (the rest are counted in the stats)
        if not os.environ.get(config.api_key_env) and not config.base_url:
            raise EndpointError(
                f"no API key for the judge: environment variable {config.api_key_env} is not set",
                hint=f"export {config.api_key_env}=..., or point --judge-base-url at a local server",
            )

    @classmethod
    def from_config(cls, config: MineConfig, cache: Cache | None = None) -> JudgeDetector:
        """The judge of `config.judge`, its answers kept in `cache`, its cascade band `config.fuse`'s."""
        if config.judge is None:
            from dsatkit.errors import ConfigError

            raise ConfigError("detector 'judge' needs a judge model", hint="--judge-model or judge: in the config")
        return cls(config.judge, cache=cache, uncertain_band=config.fuse.uncertain_band)

    # the stage -----------------------------------------------------------------------------------
    def select(self, exchanges: pl.DataFrame, verdicts: pl.DataFrame) -> pl.DataFrame:
        """The exchanges with feedback the judge should see, by `judge_on`: all of them, the cheap
        detectors' candidates (fused label), or their uncertain ones (fused score in the band)."""
        with_feedback = exchanges.filter(pl.col("feedback").is_not_null())
        mode = self.config.judge_on
        if mode == "all":
            return with_feedback
        lo, hi = self.uncertain_band
        pick = pl.col("label") if mode == "candidates" else pl.col("score").is_between(lo, hi, closed="left")
        return with_feedback.join(verdicts.filter(pick).select("exchange_id"), on="exchange_id", how="semi")

    def process(self, frames: Frames) -> dict[str, pl.DataFrame]:
        """Judge `frames["exchanges"]`; exchanges built without their context get it here from
        `frames["turns"]`, for these rows only (the judge is the one stage that shows it)."""
        exchanges = frames["exchanges"]
        if "turns" in frames and exchanges.height and exchanges["context"].null_count() == exchanges.height:
            exchanges = attach_context(exchanges, frames["turns"])
        return {"detections": self.detect(exchanges)}

    # public ------------------------------------------------------------------------------------
    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        if exchanges.height == 0:
            return empty(DETECTIONS)
        frame = self._keyed(exchanges)
        verdicts = self.answers(frame).select(
            "key", pl.col("answer").str.json_decode(_VERDICT_DTYPE).struct.unnest()
        )
        out = frame.select("exchange_id", "key").join(verdicts, on="key", how="inner", maintain_order="left")
        out = out.with_columns(
            detector=pl.lit(self.name),
            score=pl.when("dsat").then(0.5 + pl.col("confidence") / 2).otherwise(0.5 - pl.col("confidence") / 2),
            label=pl.col("dsat"),
            detector_version=pl.lit(self.version),
        )
        return conform(out, DETECTIONS)

    def parse_answer(self, content: str | None) -> BaseModel:
        """The judge's answer validated (ValueError when it is not a valid one): here a DSAT verdict."""
        return rubric.parse_verdict(content)

    def answers(self, items: pl.DataFrame) -> pl.DataFrame:
        """Ask the judge about each row of `items` and return `key, answer`: the valid answer (the JSON of
        `parse_answer`'s model) of every distinct key that has one, from the cache or fresh.

        `items` holds a `key` column (the cache key: it must cover the model, `version` and everything
        the question shows, already redacted where it must be) and the columns `messages_for` reads. Rows
        sharing a key are asked once. Calls stop cleanly at the configured budget; `stats` counts per row.
        """
        started = time.perf_counter()
        self.stats.exchanges += items.height
        uniq = items.unique("key", keep="first", maintain_order=True)

        cached = self._cached(uniq["key"])
        todo = uniq.join(cached.select("key"), on="key", how="anti")
        outcomes = self._run_async(todo) if todo.height else []

        fresh = pl.DataFrame(
            [{"key": o.key, "answer": o.verdict.model_dump_json()} for o in outcomes if o.verdict is not None],
            schema={"key": pl.String, "answer": pl.String},
        )
        verdicts = pl.concat([cached.filter("ok").select("key", "answer"), fresh], how="vertical")
        failed = {o.key for o in outcomes if o.error is not None}
        skipped = {o.key for o in outcomes if o.skipped}
        cached_keys = set(cached["key"].to_list())

        # per-row accounting (duplicates share their key's fate)
        per_key = items.group_by("key").len()
        def _n(keys: set[str]) -> int:
            return int(per_key.filter(pl.col("key").is_in(list(keys)))["len"].sum()) if keys else 0
        self.stats.cache_hits += _n(cached_keys)
        self.stats.failures += _n(failed) + _n(set(cached.filter(~pl.col("ok"))["key"].to_list()))
        self.stats.skipped_by_budget += _n(skipped)
        self.stats.judged += _n({o.key for o in outcomes if o.verdict is not None})
        self.stats.elapsed_s += time.perf_counter() - started
        return verdicts

    def cache_keys(self, exchanges: pl.DataFrame) -> pl.Series:
        """The judge-cache key of each exchange (md5 of model, rubric version, redact flag and content)."""
        return self._keyed(exchanges)["key"]

    # keys and cache ----------------------------------------------------------------------------
    def _keyed(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        frame = exchanges.select("exchange_id", "context", "response", "feedback")
        ctx = frame.select(
            pl.col("context")
            .list.eval(pl.concat_str(pl.element().struct.field("role"), pl.element().struct.field("content"),
                                     separator="\x1e"))
            .list.join("\x1d")
            .fill_null("")
        )["context"]
        n = frame.height
        lit = lambda v: pl.Series([v] * n, dtype=pl.String)
        feedback = frame["feedback"].fill_null("\x00none")  # a missing feedback is not an empty one
        key = md5_of(lit(self.config.model), lit(self.version), lit(str(self.config.redact)), ctx,
                     frame["response"], feedback)
        frame = frame.with_columns(key=key)
        if self.config.redact:
            # what leaves the machine is redacted; the key stays on the original content
            frame = redact_exchanges(frame)
        return frame

    def _cached(self, keys: pl.Series) -> pl.DataFrame:
        schema = {"key": pl.String, "answer": pl.String, "ok": pl.Boolean}
        if self.cache is None:
            return pl.DataFrame(schema=schema)
        rows = self.cache.get_judge(keys)
        return rows.select(pl.col("key"), pl.col("answer").cast(pl.String), pl.col("ok").fill_null(False))

    # async run ---------------------------------------------------------------------------------
    def _run_async(self, todo: pl.DataFrame) -> list[_Outcome]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run(todo))
        # called from inside a running loop (a notebook): run ours on a worker thread
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, self._run(todo)).result()

    async def _run(self, todo: pl.DataFrame) -> list[_Outcome]:
        cfg = self.config
        # one row per distinct question that needs a call: building its prompt is per-row by nature
        items = todo.to_dicts()
        outcomes: list[_Outcome] = []
        writer = _CacheWriter(self.cache) if self.cache is not None else None
        n_workers = min(cfg.concurrency, len(items))
        plain_http = (cfg.base_url or "").lower().startswith("http://")
        # one client per _WORKERS_PER_CLIENT workers: httpcore scans its whole pool on every request,
        # which costs more than the request itself at 64 connections in one pool
        clients = [
            openai.AsyncOpenAI(
                base_url=cfg.base_url,
                api_key=os.environ.get(cfg.api_key_env) or "not-needed",
                max_retries=0,
                timeout=cfg.timeout_s,
                # plain http (a local server): skip building a TLS context per client (~25 ms each)
                http_client=openai.DefaultAsyncHttpxClient(verify=False) if plain_http else None,
            )
            for _ in range(math.ceil(n_workers / _WORKERS_PER_CLIENT))
        ]
        pending = iter(items)

        with progress() as bar:
            task = bar.add_task("judge", total=len(items), unit=self.unit)

            async def worker(client: openai.AsyncOpenAI) -> None:
                for item in pending:  # one shared iterator: bounded concurrency without a task per row
                    if self.stats.budget_exhausted:
                        outcomes.append(_Outcome(item["key"], skipped=True))
                        continue
                    outcome, row = await self._judge_one(client, item)
                    if row is not None and writer is not None:
                        writer.put(row)
                    outcomes.append(outcome)
                    if not outcome.skipped:  # the one the budget stopped was not judged
                        bar.advance(task)

            try:
                async with asyncio.TaskGroup() as group:
                    for k in range(n_workers):
                        group.create_task(worker(clients[k % len(clients)]))
            except BaseExceptionGroup as eg:  # re-raise the first real error, not the group
                first: BaseException = eg
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
            finally:
                for c in clients:
                    await c.close()
                if writer is not None:
                    await writer.close()
                self.stats.estimated_cost = (
                    self.stats.prompt_tokens / 1000 * cfg.price_per_1k_input
                    + self.stats.completion_tokens / 1000 * cfg.price_per_1k_output
                )
                self.stats.structured_output = self._mode
        return outcomes

    def messages_for(self, item: dict) -> list[dict]:
        """The chat messages that ask the judge about one exchange (context, response, feedback)."""
        return [
            {"role": "system", "content": rubric.SYSTEM_PROMPT},
            {"role": "user", "content": rubric.user_message(
                item["context"] or [], item["response"] or "", item["feedback"], self.config.context_token_budget)},
        ]

    def plan(self, exchanges: pl.DataFrame) -> JudgePlan:
        """What judging `exchanges` would cost, without calling anything: distinct exchanges, those the
        cache already answers, and for the rest the estimated prompt tokens, the completion-token ceiling
        and the cost at the configured prices."""
        frame = self._keyed(exchanges).unique("key", keep="first", maintain_order=True)
        todo = frame.join(self._cached(frame["key"]).filter("ok").select("key"), on="key", how="anti")
        prompt = sum(rubric.estimate_prompt_tokens(self.messages_for(item)) for item in todo.iter_rows(named=True))
        completion = todo.height * self.config.max_tokens
        cost = prompt / 1000 * self.config.price_per_1k_input + completion / 1000 * self.config.price_per_1k_output
        return JudgePlan(exchanges=frame.height, cached=frame.height - todo.height, calls=todo.height,
                         prompt_tokens=prompt, max_completion_tokens=completion, max_cost=cost)

    async def _judge_one(self, client: openai.AsyncOpenAI, item: dict) -> tuple[_Outcome, dict | None]:
        cfg = self.config
        key = item["key"]
        messages = self.messages_for(item)
        tokens = [0, 0]
        try:
            content = await self._call(client, messages, tokens)
            try:
                verdict = self.parse_answer(content)
            except ValueError as e:
                self.stats.repairs += 1
                repair = self.repair_prompt.format(error=_short(e))
                messages += [{"role": "assistant", "content": content or ""}, {"role": "user", "content": repair}]
                content = await self._call(client, messages, tokens)
                try:
                    verdict = self.parse_answer(content)
                except ValueError as e2:
                    raise _Failed(f"invalid verdict after repair: {_short(e2)}", final=True, answer=content) from None
        except _BudgetStop:
            self.stats.budget_exhausted = True
            return _Outcome(key, skipped=True), None
        except _Failed as f:
            if f.transport:
                self._consecutive_transport_failures += 1
                if self._successes == 0 or self._consecutive_transport_failures >= max(3, cfg.concurrency):
                    where = cfg.base_url or "api.openai.com"
                    if str(f).startswith("HTTP 429"):  # it answers, but refuses this many requests
                        raise EndpointError(f"judge endpoint {where} is rate-limiting: {f}",
                                            "lower --judge-concurrency, or raise judge.max_retries / "
                                            "judge.backoff_max_s") from None
                    raise EndpointError(f"judge endpoint {where} unreachable: {f}") from None
            elif f.final:
                self._invalid += 1
                if self._valid == 0 and self._invalid >= INVALID_LIMIT:
                    raise EndpointError(
                        f"judge model {cfg.model} gave no valid verdict in {self._invalid} answers (last: {_short(f, 160)})",
                        hint="use a model that follows instructions and answers the rubric's JSON; check the "
                             "endpoint serves that model (judge.structured_output: json_schema helps)") from None
            if self._shown < SHOWN_FAILURES:
                self._shown += 1
                more = "; further failures are counted in the run's stats" if self._shown == SHOWN_FAILURES else ""
                log.warning("judge failed on %s: %s%s", key, _short(f), more)
            row = None
            # an invalid answer is the model's final word (cached at temperature 0) once it has shown it can
            # give valid ones: until then, a misconfigured model or endpoint would poison the cache
            if f.final and cfg.temperature == 0 and self._valid:
                row = self._row(key, (f.answer or "")[:2000], ok=False, error=str(f), tokens=tokens)
            return _Outcome(key, error=str(f)), row
        self._consecutive_transport_failures = 0
        self._valid += 1
        return _Outcome(key, verdict=verdict), self._row(key, verdict.model_dump_json(), ok=True, error=None,
                                                         tokens=tokens)

    def _row(self, key: str, answer: str, *, ok: bool, error: str | None, tokens: list[int]) -> dict:
        if not ok:
            answer = json.dumps({"raw": answer})  # the cache column is JSON
        return {"key": key, "model": self.config.model, "rubric_version": self.version, "answer": answer, "ok": ok,
                "error": error, "prompt_tokens": tokens[0], "completion_tokens": tokens[1]}

    async def _call(self, client: openai.AsyncOpenAI, messages: list[dict], tokens: list[int]) -> str | None:
        """One chat completion with retries; returns the answer's content. Adds usage to `tokens`."""
        cfg = self.config
        est = rubric.estimate_prompt_tokens(messages) + cfg.max_tokens
        attempt = 0
        while True:
            if cfg.max_calls is not None and self.stats.calls >= cfg.max_calls:
                raise _BudgetStop
            used = self.stats.prompt_tokens + self.stats.completion_tokens
            if cfg.max_total_tokens is not None and used + self._reserved_tokens + est > cfg.max_total_tokens:
                raise _BudgetStop
            self.stats.calls += 1
            self._reserved_tokens += est
            mode = self._mode
            fmt = self.response_format if mode == "json_schema" else rubric.RESPONSE_FORMAT_JSON
            delay: float | None = None
            try:
                # the client's generic `post` (its documented way to call any endpoint) with a typed
                # result: `chat.completions.create` re-walks the nested request dicts through its
                # TypedDict transform, which halves the requests/s one core can drive
                # the body comes back as text and only the three fields used are read: building the
                # full ChatCompletion model cost ~10% of a core at 250 requests/s
                body = await client.post(
                    "/chat/completions",
                    body={"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                          "max_tokens": cfg.max_tokens, "response_format": fmt},
                    cast_to=str,
                )
                c_content, usage = _completion_fields(body)
            except openai.APIStatusError as e:
                status = e.status_code
                if status in _FATAL_STATUS:
                    raise EndpointError(
                        f"judge endpoint {cfg.base_url or 'api.openai.com'} answered {status} for model "
                        f"{cfg.model!r}: {_short(e.message)}"
                    ) from None
                if status in (400, 422) and mode == "json_schema" and cfg.structured_output == "auto" \
                        and not self._schema_worked:
                    log.warning("endpoint refused JSON-schema output (%s); using JSON mode", status)
                    self._mode = "json_object"
                    continue  # the same attempt again, in JSON mode
                if status not in _RETRY_STATUS and status < 500:
                    raise _Failed(f"endpoint rejected the request ({status}): {_short(e.message)}",
                                  final=False) from None
                delay = _retry_after(e.response.headers)
                error = f"HTTP {status}"
            except openai.APIConnectionError as e:  # includes timeouts and dropped connections
                error = "timeout" if isinstance(e, openai.APITimeoutError) else f"connection error ({_cause(e)})"
            except (ValueError, openai.APIResponseValidationError) as e:  # a 200 with a malformed body
                error = f"malformed response ({_short(e)})"
            else:
                self._successes += 1
                if mode == "json_schema":
                    self._schema_worked = True
                p = usage.get("prompt_tokens")
                p = est - cfg.max_tokens if not isinstance(p, int) else p
                c = usage.get("completion_tokens")
                c = rubric.estimate_tokens(c_content or "") if not isinstance(c, int) else c
                tokens[0] += p
                tokens[1] += c
                self.stats.prompt_tokens += p
                self.stats.completion_tokens += c
                return c_content
            finally:
                self._reserved_tokens -= est
            if attempt >= cfg.max_retries:
                raise _Failed(f"{error} after {attempt + 1} attempts", final=False, transport=True)
            attempt += 1
            self.stats.retries += 1
            if delay is None:
                cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
                delay = cap / 2 + random.uniform(0, cap / 2)  # jitter spreads a burst of retries
            await asyncio.sleep(delay)


class _CacheWriter:
    """Commit answers as they arrive, in the background: the answers that arrive while one write runs
    go together in the next (a single-row DuckDB commit costs ~5 ms; waiting for it would cost each
    request that much latency). A failed write is raised by `close`."""

    def __init__(self, cache: Cache):
        self.cache = cache
        self.pending: list[dict] = []
        self.task: asyncio.Task | None = None
        self.error: BaseException | None = None

    def put(self, row: dict) -> None:
        self.pending.append(row)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                await asyncio.to_thread(self.cache.put_judge_many, batch)
            except Exception as e:  # noqa: BLE001 (keep going: later batches may still land; report at close)
                self.error = self.error or e

    async def close(self) -> None:
        while self.task is not None and not self.task.done():
            await asyncio.shield(self.task)
        if self.error is not None:
            raise self.error


def _completion_fields(body: str) -> tuple[str | None, dict]:
    """(message content, usage) of a chat-completion body; ValueError when it is not one."""
    try:
        data = json.loads(body)
        choices = data["choices"]
        content = choices[0]["message"]["content"] if choices else None
        usage = data.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"not a chat completion: {type(e).__name__} {e}") from None
    if content is not None and not isinstance(content, str):
        raise ValueError("not a chat completion: message content is not text")
    if not isinstance(usage, dict):
        usage = {}
    return content, usage


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), capped; None if absent."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)
    return None


def _short(e: object, n: int = 200) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def _cause(e: BaseException) -> str:
    c = e.__cause__ or e.__context__
    return type(c).__name__ if c is not None else type(e).__name__
