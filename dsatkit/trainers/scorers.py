"""Scorers that rank two policy samples for the `idpo` baseline: an LLM judge or a reward model.

A scorer maps (prompts, responses) to one float per response, higher = better. The judge here is
deliberately small and separate from the mining judge: one pointwise 1-10 rating per response.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from dsatkit.errors import ConfigError, EndpointError, first_line
from dsatkit.trainers.recipe import JudgeScorerSpec, ScorerSpec

RATING_PROMPT = (
    "Rate how well the assistant's final response serves the user in the conversation below, from 1 "
    "(useless or wrong) to 10 (excellent: correct, helpful, follows every instruction). "
    'Answer with JSON only: {"rating": <1-10>}.\n\n'
)
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


class Scorer(Protocol):
    def score(self, prompts: list[list[dict]], responses: list[str]) -> np.ndarray: ...


def _transcript(prompt: list[dict], response: str, limit: int = 6000) -> str:
    lines = [f"[{m['role']}]\n{m['content']}" for m in prompt]
    text = "\n\n".join(lines)
    if len(text) > limit:  # keep the start and the end: the ask and the latest turns matter most
        text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
    return f"{text}\n\n[assistant: response to rate]\n{response}"


class JudgeScorer:
    """Pointwise ratings from an OpenAI-compatible endpoint (unparseable answers rate 0 and are counted)."""

    def __init__(self, spec: JudgeScorerSpec):
        import openai

        self.spec = spec
        key = os.environ.get(spec.api_key_env)
        if key is None and spec.base_url is None:
            raise ConfigError(
                f"scorer.judge: ${spec.api_key_env} is not set", hint="export the key or set scorer.judge.base_url"
            )
        self.client = openai.OpenAI(
            base_url=spec.base_url, api_key=key or "not-needed", timeout=spec.timeout_s, max_retries=spec.max_retries
        )
        self.unparsed = 0

    def _one(self, prompt: list[dict], response: str) -> float:
        import openai

        try:
            out = self.client.chat.completions.create(
                model=self.spec.model,
                messages=[{"role": "user", "content": RATING_PROMPT + _transcript(prompt, response)}],
                temperature=0.0,
                max_tokens=32,
            )
        except openai.APIError as e:
            raise EndpointError(f"scorer.judge {self.spec.base_url or 'OpenAI'}: {type(e).__name__}: {e}") from None
        found = _NUMBER.search(out.choices[0].message.content or "")
        if not found:
            self.unparsed += 1
            return 0.0
        return float(found.group(1))

    def score(self, prompts: list[list[dict]], responses: list[str]) -> np.ndarray:
        with ThreadPoolExecutor(self.spec.concurrency) as pool:
            return np.array(list(pool.map(self._one, prompts, responses)), dtype=np.float64)


class RewardModelScorer:
    """A sequence-classification reward model over the chat-templated conversation + response."""

    def __init__(self, path: str, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except OSError as e:
            raise ConfigError(f"scorer.reward_model {path}: {first_line(e)}") from None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.batch_size = batch_size

    def score(self, prompts: list[list[dict]], responses: list[str]) -> np.ndarray:
        import torch

        chats = [[*p, {"role": "assistant", "content": r}] for p, r in zip(prompts, responses, strict=True)]
        texts = self.tok.apply_chat_template(chats, tokenize=False)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                enc = self.tok(
                    texts[s : s + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                    add_special_tokens=False,
                ).to(self.device)
                out.append(self.model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def build_scorer(spec: ScorerSpec) -> Scorer:
    if spec.judge is not None:
        return JudgeScorer(spec.judge)
    assert spec.reward_model is not None
    return RewardModelScorer(spec.reward_model, spec.batch_size)
