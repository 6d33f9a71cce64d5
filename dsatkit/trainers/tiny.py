"""A tiny randomly initialised chat model built locally (no hub): for CPU tests and the "try it" recipe.

A 2-layer, hidden-64 Qwen2 (head_dim 32, so vLLM can load it on a GPU) with a 512-token byte-level
BPE tokenizer trained on a few sentences by `tokenizers`, and a ChatML chat template.
"""

from __future__ import annotations

from pathlib import Path

TINY = "builtin:tiny"
"""The recipe's `model:` value that selects this model."""

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "You are a helpful assistant. Please answer the question clearly and correctly.",
    "That's wrong, the capital of Australia is Canberra, not Sydney.",
    "Thanks, that works perfectly! Great answer.",
    "Write a Python function that reverses a string and explain how it works.",
    "No, that is not what I asked. I wanted the answer in French.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
    "Sure! Here is an improved response that addresses your concern.",
]


def build_tiny(
    out_dir: str | Path, seed: int = 0, vocab_size: int = 512, hidden_size: int = 64, num_layers: int = 2
) -> Path:
    """Write the tiny model + tokenizer to `out_dir` (idempotent: an existing build is kept).

    `hidden_size` (a multiple of 32) and `num_layers` make a bigger random model for benchmarks.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _CORPUS * 4,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML,
        model_max_length=2048,
    )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 32,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def build_tiny_reward(out_dir: str | Path, seed: int = 1) -> Path:
    """A tiny randomly initialised reward model (1-label Qwen2 classifier) sharing the tiny tokenizer."""
    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    with __import__("tempfile").TemporaryDirectory() as tmp:
        lm = build_tiny(tmp)
        config = AutoConfig.from_pretrained(lm, num_labels=1)
        tok = AutoTokenizer.from_pretrained(lm)
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out
