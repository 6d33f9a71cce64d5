"""`dsatkit train RECIPE`: iterative DRIFT (or SPIN / iterative DPO) rounds over mined pairs.

Runs under `accelerate launch -m dsatkit train RECIPE` unchanged: device placement is TRL's.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import polars as pl
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
        parsed = yaml.safe_load(value)  # so numbers, booleans and lists keep their type
        # `a: b` inside an SQL filter (`lambda m: m.content`) reads as a mapping: only `{...}` is one
        out[key.strip()] = value if isinstance(parsed, dict) and not value.lstrip().startswith("{") else parsed
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
    options = {"rounds": rounds, "output_dir": str(output_dir) if output_dir else None,
               "data.path": str(data) if data else None, "method": method}
    overrides.update({k: v for k, v in options.items() if v is not None})  # an unset option keeps a --set
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

    from dsatkit.trainers.evaluation import read_eval

    evals = read_eval(Path(rec.output_dir))
    judged = evals.filter(pl.col("judge_model").is_not_null())
    table = Table(title=f"{rec.method} rounds -> {rec.output_dir}", title_justify="left")
    columns = ["round", "stage", "pairs", "dropped", "loss", "margin", "acc", "distinct-2", "emb dist", "time"]
    if not evals.is_empty():
        columns += ["win vs rejected", "LC vs previous", "best"] if judged.height else ["impl acc", "impl margin"]
    for col in columns:
        table.add_column(col, justify="left" if col in {"stage", "dropped"} else "right")
    for m in finished:
        dropped = ", ".join(f"{k} {v}" for k, v in m.dropped.items()) or "-"
        row = [
            str(m.round), m.stage + (" (earlier run)" if m.resumed else ""), f"{m.pairs_kept}/{m.prompts}", dropped,
            _f(m.loss), _f(m.reward_margin), _f(m.reward_accuracy), _f(m.distinct_2), _f(m.embedding_distance),
            f"{m.sample_s + m.train_s:.1f}s",
        ]
        mine = evals.filter(pl.col("policy") == f"round-{m.round}")
        if not evals.is_empty() and judged.height:
            vs = {a: r for a, r in zip(mine["against"], mine.iter_rows(named=True), strict=True)}
            row += [_rate(vs.get("rejected"), "win_rate"), _rate(vs.get("previous"), "lc_win_rate"),
                    "*" if mine["best"].any() else ""]
        elif not evals.is_empty():
            row += [_f(mine["implicit_accuracy"].first()), _f(mine["implicit_margin"].first())]
        table.add_row(*row)
    results.print(table)
    if not evals.is_empty():
        print_evaluation(evals)
    results.print(
        f"[dim]final model: {finished[-1].model_path if finished else '(none)'}; "
        f'metrics: dsatkit sql {rec.output_dir} "select * from train_rounds" ({DB_NAME})[/dim]',
        highlight=False,
    )


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def _rate(row: dict | None, key: str) -> str:
    return "" if row is None or row.get(key) is None else f"{row[key]:.2f}"


def print_evaluation(evals: pl.DataFrame) -> None:
    """The `eval_rounds` table as printed by `train` and `eval-rounds`: one line per policy and comparison."""
    from rich import box
    from rich.table import Table

    judged = evals.filter(pl.col("judge_model").is_not_null()).height > 0
    implicit = evals["implicit_accuracy"].null_count() < evals.height
    table = Table(title="evaluation on held-out DSAT prompts (eval_rounds)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cols = ["policy", "vs", "n", "win [95% CI]", "LC", "1st", "agree", "len/other"] if judged \
        else ["policy", "prompts", "len"]
    cols += ["impl acc", "impl margin"] if implicit else []
    cols += ["note"] if judged else ["distinct-2", "note"]
    for col in cols:
        table.add_column(col, justify="left" if col in {"policy", "vs", "note"} else "right",
                         no_wrap=col != "note")
    for r in evals.iter_rows(named=True):
        note = ("best " if r["best"] else "") + ("position bias " if r["position_bias"] else "") + \
            ("" if r["complete"] else f"incomplete: {r['skipped_by_budget']} over budget")
        tail = [_f(r["implicit_accuracy"]), _f(r["implicit_margin"])] if implicit else []
        tail += [note.strip()] if judged else [_f(r["distinct_2"]), note.strip()]
        if judged:
            ci = f"{r['win_rate']:.2f} [{r['win_low']:.2f},{r['win_high']:.2f}]" if r["win_rate"] is not None else ""
            table.add_row(r["policy"], r["against_policy"] or r["against"], f"{r['judged']}/{r['prompts']}", ci,
                          _f(r["lc_win_rate"], "{:.2f}"), _f(r["first_position_rate"], "{:.2f}"),
                          _f(r["order_agreement"], "{:.2f}"),
                          f"{_f(r['mean_length'], '{:.0f}')}/{_f(r['other_mean_length'], '{:.0f}')}", *tail)
        else:
            table.add_row(r["policy"], str(r["prompts"]), _f(r["mean_length"], "{:.0f}"), *tail)
    results.print(table)
    if not judged:
        results.print("[dim]no judge configured: implicit-reward metrics only (beta * log pi/pi_start on held-out "
                      "pairs); set judge: {model, base_url} for win rates[/dim]", highlight=False)
    elif evals["lc_win_rate"].null_count():
        results.print("[dim]LC blank: every verdict went one way, nothing to regress on length[/dim]",
                      highlight=False)


def eval_rounds_command(
    output_dir: Annotated[Path, typer.Argument(help="a `dsatkit train` output directory")],
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a key of the run's recipe: --set judge.model=gpt-4o-mini"),
    ] = None,
) -> None:
    """Evaluate the finished rounds of OUTPUT_DIR on its held-out prompts (those not evaluated yet under the
    same setup; judge answers come from the run's cache), and print the evaluation."""
    from dsatkit.trainers.drift import evaluate_rounds
    from dsatkit.trainers.evaluation import read_eval
    from dsatkit.trainers.recipe import load_recipe

    saved = output_dir / "recipe.yaml"
    if not saved.exists():
        raise ConfigError(f"{output_dir} holds no recipe.yaml: not a `dsatkit train` output",
                          hint="point at the output_dir of a training run")
    overrides = _overrides(sets or [])
    overrides["output_dir"] = str(output_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the saved recipe's translations were reported when it trained
        rec = load_recipe(saved, overrides)
    evaluate_rounds(rec)
    evals = read_eval(output_dir)
    if evals.is_empty():
        results.print("no finished round to evaluate")
        return
    print_evaluation(evals)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `dsatkit` app."""
    app.command("train")(train_command)
    app.command("eval-rounds")(eval_rounds_command)
