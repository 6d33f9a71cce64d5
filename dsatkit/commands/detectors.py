"""`dsatkit detectors fit` (train the exemplar classifier) and `dsatkit eval-detectors` (quality report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsatkit.commands.options import (
    ConfigOpt,
    DetectorDirOpt,
    DetectorsOpt,
    EmbeddingModelOpt,
    ThresholdOpt,
    detector_overrides,
)
from dsatkit.progress import results

detectors_app = typer.Typer(
    help="Train embedding detectors from your own labelled feedback turns.", no_args_is_help=True
)


@detectors_app.command("fit")
def fit_command(
    labels: Annotated[
        Path, typer.Argument(help="labelled feedback turns: parquet/jsonl/json/csv (text, category|label)")
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="detector directory to write")],
    model: Annotated[
        str | None,
        typer.Option(help="sentence-transformers model name or path (default all-MiniLM-L6-v2)"),
    ] = None,
    method: Annotated[str, typer.Option(help="logreg | knn")] = "logreg",
    c: Annotated[float, typer.Option("--c", help="logreg inverse regularisation strength")] = 10.0,
    k: Annotated[int, typer.Option(help="neighbours for knn")] = 7,
    device: Annotated[str | None, typer.Option(help="cuda | cpu (default: CUDA when available)")] = None,
    cv: Annotated[int, typer.Option(help="cross-validation folds for the printed estimate (0: skip)")] = 5,
) -> None:
    """Fit the embedding detector's classifier on LABELS; use it with `mine --detector-dir OUT`."""
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
