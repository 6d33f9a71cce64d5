"""`dsatkit train RECIPE`: iterative DRIFT (or SPIN / iterative DPO) rounds over mined pairs.

Runs under `accelerate launch -m dsatkit train RECIPE` unchanged: device placement is TRL's.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape

from dsatkit.errors import ConfigError
from dsatkit.progress import console, results


def _overrides(sets: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set sampler.temperature=1.0")
        out[key.strip()] = yaml.safe_load(value)  # so numbers, booleans and lists keep their type
    return out


def train_command(
    recipe: Annotated[Path, typer.Argument(help="a recipe YAML (see recipes/tiny-cpu.yaml)")],
    rounds: Annotated[int | None, typer.Option("--rounds", "-n", help="override the recipe's rounds")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="override output_dir")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="override data.path (mined dir or parquet)")] = None,
    method: Annotated[str | None, typer.Option("--method", help="drift | spin | idpo")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override any recipe key: --set dpo.learning_rate=1e-6")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="validate the recipe and print it; train nothing")] = False,
) -> None:
    """Run the recipe's rounds, resuming after the last finished one; print a per-round summary."""
    from dsatkit.trainers.recipe import load_recipe

    overrides = _overrides(sets or [])
    overrides.update(
        {"rounds": rounds, "output_dir": str(output_dir) if output_dir else None,
         "data.path": str(data) if data else None, "method": method}
    )
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        rec = load_recipe(recipe, overrides)
    for note in notes:  # the recipe loader's translations and CPU fallbacks: one line each
        if "dsatkit" in note.filename:
            console.print(f"[yellow]note:[/yellow] {escape(str(note.message))}", highlight=False, soft_wrap=True)
    if check:
        typer.echo(yaml.safe_dump(rec.model_dump(mode="json"), sort_keys=False), nl=False)
        return
    from dsatkit.trainers.drift import DB_NAME, run

    finished = run(rec)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from rich.table import Table

    def f(v: float | None, fmt: str = "{:.3f}") -> str:
        return "" if v is None else fmt.format(v)

    table = Table(title=f"{rec.method} rounds -> {rec.output_dir}", title_justify="left")
    for col in ("round", "stage", "pairs", "dropped", "loss", "margin", "acc", "distinct-2", "emb dist", "time"):
        table.add_column(col, justify="left" if col in {"stage", "dropped"} else "right")
    for m in finished:
        dropped = ", ".join(f"{k} {v}" for k, v in m.dropped.items()) or "-"
        table.add_row(
            str(m.round), m.stage + (" (earlier run)" if m.resumed else ""), f"{m.pairs_kept}/{m.prompts}", dropped,
            f(m.loss), f(m.reward_margin), f(m.reward_accuracy), f(m.distinct_2), f(m.embedding_distance),
            f"{m.sample_s + m.train_s:.1f}s",
        )
    results.print(table)
    results.print(
        f"[dim]final model: {finished[-1].model_path if finished else '(none)'}; "
        f'metrics: dsatkit sql {rec.output_dir} "select * from train_rounds" ({DB_NAME})[/dim]',
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `dsatkit` app."""
    app.command("train")(train_command)
