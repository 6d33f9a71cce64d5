"""Where torch models run, and the tokenizer setup every batched generation or scoring needs: the one
home of both (the embedding model, the sampler, the reward-model scorer and the evaluation use them)."""

from __future__ import annotations

from typing import Any


def torch_device(requested: str | None = None) -> str:
    """`requested` when given ("cuda", "cuda:1", "cpu", ...), else CUDA when torch sees a GPU, else the CPU."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def with_pad_token(tokenizer: Any) -> Any:
    """`tokenizer` with a padding token (its end-of-sequence token when it has none), for batches."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
