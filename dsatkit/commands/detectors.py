"""`dsatkit detectors fit` / `distill` (train a detector on labels, or on an LLM judge's labels of your logs) and
`dsatkit eval-detectors` (quality report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsatkit.commands.options import (
    ConfigOpt,
    DetectorDirOpt,
    DetectorsOpt,
    EmbeddingModelOpt,
    FormatOpt,
    ThresholdOpt,
    check_named_detectors,
    detector_overrides,
)
from dsatkit.progress import results

detectors_app = typer.Typer(
    help="Train the learned DSAT detector on your own labelled exchanges (or distil an LLM judge into it).",
    no_args_is_help=True,
)


@detectors_app.command("fit")
def fit_command(
    labels: Annotated[
        Path,
        typer.Argument(help="labelled exchanges: parquet/jsonl/json/csv with feedback, label (dsat|sat|neutral), "
                       "optional request, response, category, conversation_id"),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="detector directory to write")],
    kind: Annotated[
        str,
        typer.Option(help="learned | exemplar (the embedding detector's classifier) | auto: learned for labelled "
                     "exchanges (a response column, or labelled logs), exemplar for bare turns (a text column)"),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="seed of the cross-validation folds (learned)")] = 0,
    model: Annotated[
        str | None,
        typer.Option(help="exemplar: sentence-transformers model name or path (default all-MiniLM-L6-v2)"),
    ] = None,
    method: Annotated[str, typer.Option(help="exemplar: logreg | knn")] = "logreg",
    c: Annotated[float, typer.Option("--c", help="exemplar: logreg inverse regularisation strength")] = 10.0,
    k: Annotated[int, typer.Option(help="exemplar: neighbours for knn")] = 7,
    device: Annotated[str | None, typer.Option(help="exemplar: cuda | cpu (default: CUDA when available)")] = None,
    cv: Annotated[int, typer.Option(help="cross-validation folds (learned: >= 2; exemplar: 0 skips)")] = 5,
) -> None:
    """Fit a detector on LABELS; use it with `mine --detector-dir OUT` (and `eval-detectors --detector-dir`)."""
    if kind == "auto":
        kind = _kind_of_labels(labels)
    if kind == "learned":
        _fit_learned(labels, out, seed, cv)
    elif kind == "exemplar":
        _fit_exemplar(labels, out, model, method, c, k, device, cv)
    else:
        raise typer.BadParameter(f"unknown kind {kind!r}: use learned or exemplar", param_hint="--kind")


def _kind_of_labels(labels: Path) -> str:
    """exemplar for a table of bare labelled turns (a `text` column and no `response`), else learned."""
    import polars as pl

    from dsatkit.tables import table_columns

    try:
        cols = set(table_columns(labels))
    except (KeyError, pl.exceptions.PolarsError, OSError):
        cols = set()  # the reader of the chosen kind reports what is wrong with the file
    return "exemplar" if "text" in cols and "response" not in cols else "learned"


def _fit_learned(labels: Path, out: Path, seed: int, folds: int) -> None:
    from dsatkit.detectors.learned import fit, read_labelled

    frame = read_labelled(labels)
    model = fit(frame, folds=max(folds, 2), seed=seed, progress=results.print)
    model.info["source"] = {"labels": str(labels)}
    model.save(out)
    results.print(model.describe(), soft_wrap=True)
    results.print(f"wrote {out}/  (use: dsatkit mine LOGS --detector-dir {out})", soft_wrap=True)


def _fit_exemplar(labels: Path, out: Path, model: str | None, method: str, c: float, k: int,
                  device: str | None, cv: int) -> None:
    from dsatkit.detectors.classifier import cross_validate, fit, read_labels
    from dsatkit.detectors.embedding import DEFAULT_MODEL, Embedder

    rows = read_labels(labels)
    embedder = Embedder(model or DEFAULT_MODEL, device)
    clf = fit(
        rows["text"],
        rows["category"],
        lambda t: embedder.embed(t, "embedding labels"),
        model=embedder.key,
        method=method,
        k=k,
        c=c,
    )
    if cv:
        clf.info["cross_validation"] = cross_validate(clf, folds=cv, c=c)
    clf.info["source"] = str(labels)
    clf.save(out)
    counts = ", ".join(f"{name} {n}" for name, n in clf.info["class_counts"].items())
    results.print(f"fitted {method} on {clf.info['n_examples']} turns ({counts}) with {embedder.key}")
    scores = clf.info.get("cross_validation")
    if scores:
        results.print(
            f"{scores['folds']}-fold CV: DSAT precision {scores['dsat_precision']:.3f} recall "
            f"{scores['dsat_recall']:.3f} F1 {scores['dsat_f1']:.3f}; category accuracy {scores['category_accuracy']:.3f}"
        )
    results.print(f"wrote {out}/  (use: dsatkit mine LOGS --detector-dir {out})")


@detectors_app.command("distill")
def distill_command(
    paths: Annotated[list[str], typer.Argument(help="log files, quoted globs or directories (any format mine reads)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="detector directory to write (its judge cache lives there)")],
    judge_model: Annotated[str | None, typer.Option(help="model name at the judge endpoint")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL")] = None,
    n: Annotated[int, typer.Option("--n", help="exchanges to sample and have the judge label")] = 2000,
    seed: Annotated[int, typer.Option(help="seed of the sample and the cross-validation folds")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the calls, tokens and cost; call nothing")] = False,
    judge_max_calls: Annotated[int | None, typer.Option(help="stop judging after this many calls")] = None,
    judge_concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    redact: Annotated[bool | None, typer.Option("--redact", help="mask e-mails, phones, keys, IPs first")] = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = None,
    detector_dir: DetectorDirOpt = None,
) -> None:
    """Label a sample of your logs with an LLM judge and fit the learned detector on it (SPUR-style)."""
    from dsatkit.config import MineConfig
    from dsatkit.detectors.distill import distill

    overrides = detector_overrides(fmt, None, None, None, detector_dir)
    overrides.update({"judge.model": judge_model, "judge.base_url": judge_base_url, "judge.max_calls": judge_max_calls,
                      "judge.concurrency": judge_concurrency, "judge.redact": redact})
    cfg = MineConfig.load(config, **overrides)
    summary, model = distill(paths, out, cfg, n=n, seed=seed, dry_run=dry_run, progress=results.print)
    plan = summary.plan
    results.print(
        f"{summary.exchanges:,} exchanges with feedback; sampled {summary.sampled:,} (stratified by the current "
        f"detector's score); judge plan: {plan.calls:,} calls ({plan.cached:,} cached), ~{plan.prompt_tokens:,} "
        f"prompt tokens, <= {plan.max_completion_tokens:,} completion tokens, <= ${plan.max_cost:,.2f} at the "
        f"configured prices")
    if model is None:
        return
    results.print(f"judge labelled {summary.judged:,} ({summary.labels}); {summary.unlabelled:,} left unlabelled "
                  "(failures or budget)")
    results.print(model.describe() + " (against the judge's labels)", soft_wrap=True)
    results.print(f"wrote {out}/  (use: dsatkit mine LOGS --detector-dir {out})", soft_wrap=True)


def eval_command(
    labels: Annotated[
        list[Path], typer.Argument(help="labelled exchanges (see docs/detectors.md for the schema)")
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="report directory")] = Path("report"),
    config: ConfigOpt = None,
    detectors: DetectorsOpt = None,
    threshold: ThresholdOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="log format of LABELS when not a flat table")] = None,
    embedding_model: EmbeddingModelOpt = None,
    detector_dir: DetectorDirOpt = None,
) -> None:
    """Precision, recall, F1 and confusion of each detector and the fused verdict on labelled exchanges."""
    from dsatkit.cache import Cache
    from dsatkit.config import MineConfig
    from dsatkit.evaluate import evaluate, load_labelled, print_report, write_report

    overrides = detector_overrides(fmt, detectors, threshold, embedding_model, detector_dir)
    cfg = MineConfig.load(config, **overrides)
    check_named_detectors(cfg, detector_dir)
    labelled = load_labelled(labels, cfg.read)
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(
        out / "cache.duckdb"
    )  # a re-run of the report (new threshold, new detector) re-encodes nothing
    try:
        report, table = evaluate(labelled, cfg, cache)
    finally:
        cache.close()
    paths = write_report(report, table, out)
    print_report(report, results)
    results.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `dsatkit` app."""
    app.add_typer(detectors_app, name="detectors")
    app.command("eval-detectors")(eval_command)
