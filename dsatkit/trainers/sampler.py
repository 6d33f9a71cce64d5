"""Sample responses from the current policy: vLLM offline (GPU) or batched transformers `generate`.

vLLM runs in a child process per round (`python -m dsatkit.trainers.sampler SPEC.json`): freeing its
GPU memory inside the training process is unreliable. Degenerate samples are dropped and counted by
`drop_degenerate`, vectorised in Polars.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from dsatkit.devices import torch_device, with_pad_token
from dsatkit.errors import TrainError
from dsatkit.progress import progress
from dsatkit.trainers.recipe import SamplerSpec

SAMPLES = pl.Schema({"row": pl.Int64(), "k": pl.Int32(), "text": pl.String(), "truncated": pl.Boolean()})


def sampling_messages(pairs: pl.DataFrame, spec: SamplerSpec, conditioned: bool) -> list[list[dict]]:
    """The chat each prompt is sampled from.

    DRIFT (conditioned): the conversation, the DSAT response, then the user's dissatisfied turn
    followed by the instruction to improve; otherwise the plain conversation (on-policy sample).
    """
    if conditioned:
        feedback = pl.col("feedback").fill_null("").str.strip_chars()
        turn = pl.struct(
            role=pl.lit("user"),
            content=pl.when(feedback == "")
            .then(pl.lit(spec.instruction))
            .otherwise(pl.concat_str([feedback, pl.lit("\n\n" + spec.instruction)])),
        )
        frame = pairs.select(m=pl.concat_list("prompt", "rejected", pl.concat_list(turn)))
    else:
        frame = pairs.select(m=pl.col("prompt"))
    return frame["m"].to_list()


def resolve_backend(spec: SamplerSpec) -> str:
    if spec.backend != "auto":
        return spec.backend
    import torch

    return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"


def sample(
    model_path: str | Path,
    messages: list[list[dict]],
    spec: SamplerSpec,
    *,
    n: int = 1,
    seed: int = 0,
    tokenizer_path: str | Path | None = None,
    chat_template: str | None = None,
) -> pl.DataFrame:
    """`n` samples per chat: a SAMPLES frame (row = index into `messages`, k = sample number)."""
    if not messages:
        return pl.DataFrame(schema=SAMPLES)
    backend = resolve_backend(spec)
    if backend == "vllm":
        return _sample_vllm_child(model_path, messages, spec, n, seed, tokenizer_path, chat_template)
    if backend == "transformers":
        return _sample_transformers(model_path, messages, spec, n, seed, tokenizer_path, chat_template)
    raise TrainError(f"sampler.backend {backend!r} cannot sample", hint="use auto, vllm or transformers")


def _sample_transformers(model_path, messages, spec, n, seed, tokenizer_path, chat_template) -> pl.DataFrame:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path or model_path))
    if chat_template:
        tok.chat_template = chat_template
    tok.padding_side = "left"  # decoder-only batches must be left-padded for generate
    with_pad_token(tok)
    device = torch_device()
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype).to(device).eval()
    texts = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Sort by length so each batch pads little; results are put back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos if eos is not None else tok.eos_token_id])
    torch.manual_seed(seed)
    rows, ks, outs, truncs = [], [], [], []
    with progress() as p, torch.inference_mode():
        task = p.add_task("sampling", total=len(texts), unit="prompts")
        for start in range(0, len(order), spec.batch_size):
            idx = order[start : start + spec.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(
                **enc,
                do_sample=spec.temperature > 0,
                temperature=spec.temperature if spec.temperature > 0 else None,
                top_p=spec.top_p if spec.temperature > 0 else None,
                max_new_tokens=spec.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :].cpu()
            # no end-of-sequence token among the new tokens = cut at max_new_tokens
            truncs += (~torch.isin(new, eos_ids).any(dim=1)).tolist()
            outs += tok.batch_decode(new, skip_special_tokens=True)
            rows += [i for i in idx for _ in range(n)]
            ks += list(range(n)) * len(idx)
            p.advance(task, len(idx))
    del model
    return pl.DataFrame({"row": rows, "k": ks, "text": outs, "truncated": truncs}, schema=SAMPLES).sort("row", "k")


def _sample_vllm_child(model_path, messages, spec, n, seed, tokenizer_path, chat_template) -> pl.DataFrame:
    with tempfile.TemporaryDirectory(prefix="dsatkit-vllm-") as tmp:
        tmpd = Path(tmp)
        pl.DataFrame({"messages": [json.dumps(m) for m in messages]}).write_parquet(tmpd / "in.parquet")
        job = {
            "model": str(model_path),
            "tokenizer": str(tokenizer_path) if tokenizer_path else None,
            "chat_template": chat_template,
            "spec": spec.model_dump(),
            "n": n,
            "seed": seed,
            "input": str(tmpd / "in.parquet"),
            "output": str(tmpd / "out.parquet"),
        }
        (tmpd / "job.json").write_text(json.dumps(job))
        # the child must not inherit the launcher's rank variables, or vLLM joins the training group
        env = {k: v for k, v in os.environ.items() if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}}
        proc = subprocess.run([sys.executable, "-m", "dsatkit.trainers.sampler", str(tmpd / "job.json")], env=env, check=False)
        if proc.returncode != 0 or not (tmpd / "out.parquet").exists():
            raise TrainError(
                f"vLLM sampling of {model_path} failed (exit {proc.returncode})",
                hint="see the vLLM output above; sampler.backend: transformers avoids vLLM",
            )
        return pl.read_parquet(tmpd / "out.parquet").cast(SAMPLES).sort("row", "k")


def _vllm_main(job_path: str) -> None:
    """Child process: one vLLM engine, one `chat` call over every prompt, then exit."""
    from vllm import LLM, SamplingParams

    job = json.loads(Path(job_path).read_text())
    spec = SamplerSpec(**job["spec"])
    messages = [json.loads(m) for m in pl.read_parquet(job["input"])["messages"]]
    llm = LLM(
        model=job["model"],
        tokenizer=job["tokenizer"] or job["model"],
        tensor_parallel_size=spec.tensor_parallel_size,
        gpu_memory_utilization=spec.gpu_memory_utilization,
        seed=job["seed"],
    )
    params = SamplingParams(
        n=job["n"], temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_new_tokens, seed=job["seed"]
    )
    outputs = llm.chat(messages, params, chat_template=job["chat_template"], use_tqdm=False)
    rows, ks, texts, truncs = [], [], [], []
    for i, out in enumerate(outputs):
        for k, c in enumerate(out.outputs):
            rows.append(i)
            ks.append(k)
            texts.append(c.text)
            truncs.append(c.finish_reason == "length")
    pl.DataFrame({"row": rows, "k": ks, "text": texts, "truncated": truncs}, schema=SAMPLES).write_parquet(job["output"])


_WORDS = r"[\p{L}\p{N}_]+"


def word_jaccard(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """Jaccard similarity of the lower-cased word sets of two string columns (1.0 when both are empty)."""
    wa = a.str.to_lowercase().str.extract_all(_WORDS).list.unique()
    wb = b.str.to_lowercase().str.extract_all(_WORDS).list.unique()
    inter = wa.list.set_intersection(wb).list.len()
    union = wa.list.set_union(wb).list.len()
    return pl.when(union == 0).then(1.0).otherwise(inter / union)


def drop_degenerate(
    frame: pl.DataFrame, text: str, against: str, near_duplicate: float
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop rows whose `text` is empty, truncated with no content, or (near-)identical to `against`.

    `frame` needs a boolean `truncated` column. Returns the kept rows and a count per drop reason.
    """
    body = pl.col(text).fill_null("").str.strip_chars()
    reason = (
        pl.when(body == "")
        .then(pl.lit("empty"))
        .when(pl.col("truncated") & ~body.str.contains(r"[\p{L}\p{N}]"))
        .then(pl.lit("truncated"))
        .when(body == pl.col(against).fill_null("").str.strip_chars())
        .then(pl.lit("identical"))
        .when(word_jaccard(body, pl.col(against).fill_null("")) >= near_duplicate)
        .then(pl.lit("near_identical"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    marked = frame.with_columns(_drop=reason)
    counts = dict(marked.filter(pl.col("_drop").is_not_null()).group_by("_drop").len().iter_rows())
    return marked.filter(pl.col("_drop").is_null()).drop("_drop"), counts


if __name__ == "__main__":
    _vllm_main(sys.argv[1])
