"""Scorers that rank two policy samples for the `idpo` baseline: an LLM judge or a reward model.

A scorer maps (prompts, responses) to one float per response, higher = better. The judge asks one
pointwise 1-10 rating per response, through the mining judge's client (the endpoint settings are a
`JudgeConfig`, as everywhere).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import polars as pl

from dsatkit.cache import Cache
from dsatkit.config import JudgeConfig
from dsatkit.devices import torch_device, with_pad_token
from dsatkit.errors import ConfigError, first_line
from dsatkit.schema import MESSAGE_DTYPE
from dsatkit.trainers.recipe import ScorerSpec


class Scorer(Protocol):
    def score(self, prompts: list[list[dict]], responses: list[str]) -> np.ndarray: ...


class JudgeScorer:
    """Pointwise 1-10 ratings from an LLM judge (`questions.RatingQuestion` on the mining judge's client:
    cache, budget, retries, repair, redaction); a response the judge gave no valid rating for scores 0
    and is counted in `unparsed`."""

    def __init__(self, config: JudgeConfig, cache: Cache | None = None):
        from dsatkit.trainers.questions import RatingQuestion

        self.question = RatingQuestion(config, cache)
        self.unparsed = 0

    def score(self, prompts: list[list[dict]], responses: list[str]) -> np.ndarray:
        frame = pl.DataFrame({"prompt": prompts, "sample": responses},
                             schema={"prompt": pl.List(MESSAGE_DTYPE), "sample": pl.String})
        items = self.question.keyed(frame)
        answers = self.question.answers(items).select(
            "key", rating=pl.col("answer").str.json_decode(pl.Struct({"rating": pl.Float64})).struct.field("rating"))
        rated = items.select("key").join(answers, on="key", how="left", maintain_order="left")["rating"]
        self.unparsed += int(rated.null_count())
        return rated.fill_null(0.0).to_numpy().astype(np.float64)


class RewardModelScorer:
    """A sequence-classification reward model over the chat-templated conversation + response."""

    def __init__(self, path: str, batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except OSError as e:
            raise ConfigError(f"scorer.reward_model {path}: {first_line(e)}") from None
        self.device = torch_device()
        self.model.to(self.device).eval()
        with_pad_token(self.tok)
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


def build_scorer(spec: ScorerSpec, cache: Cache | None = None) -> Scorer:
    """The scorer a recipe's `scorer:` names (the judge's answers cached in `cache`)."""
    if spec.judge is not None:
        return JudgeScorer(spec.judge, cache)
    assert spec.reward_model is not None
    return RewardModelScorer(spec.reward_model, spec.batch_size)
