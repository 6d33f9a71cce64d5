"""CLI options shared by the commands that run detectors (`mine`, `eval-detectors`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (MineConfig)")]
FormatOpt = Annotated[str | None, typer.Option("--format", help="auto|openai|sharegpt|wildchat|lmsys|turns")]
DetectorsOpt = Annotated[
    str | None,
    typer.Option("--detectors", help="comma list of registered detectors: learned, lexical, embedding, judge, or a "
                 "plugin's (default learned)"),
]
ThresholdOpt = Annotated[float | None, typer.Option(help="fused score at which an exchange is DSAT")]
EmbeddingModelOpt = Annotated[str | None, typer.Option(help="sentence-transformers model name or path")]
DetectorDirOpt = Annotated[
    Path | None,
    typer.Option(help="a detector from `dsatkit detectors fit` / `distill` (learned, or an embedding classifier)"),
]


def detector_overrides(
    fmt: str | None,
    detectors: str | None,
    threshold: float | None,
    embedding_model: str | None,
    detector_dir: Path | None,
) -> dict[str, object]:
    """The dotted MineConfig overrides of the shared options (None = keep the config's value)."""
    overrides: dict[str, object] = {
        "read.format": fmt,
        "fuse.threshold": threshold,
        "embedding.model": embedding_model,
    }
    if detector_dir is not None:
        from dsatkit.detectors.directory import detector_kind

        # the config section the directory belongs to: a learned detector, else an exemplar classifier
        section = "learned" if detector_kind(detector_dir) == "learned" else "embedding"
        overrides[f"{section}.detector_dir"] = str(detector_dir)
    if detectors is not None:
        overrides["detectors"] = [d.strip() for d in detectors.split(",") if d.strip()]
    return overrides


def check_named_detectors(cfg, detector_dir: Path | None = None, judge_model: str | None = None) -> None:
    """A detector directory or a judge model given on the command line is used by the run: one the
    run's detectors leave out would be ignored in silence, so it is an error."""
    from dsatkit.errors import ConfigError

    # the section `detector_overrides` put the directory in names its detector
    section = "learned" if detector_dir and cfg.learned.detector_dir == Path(detector_dir) else "embedding"
    wanted = [(f"--detector-dir {detector_dir}", section)] if detector_dir else []
    wanted += [(f"--judge-model {judge_model}", "judge")] if judge_model else []
    for option, name in wanted:
        if name not in cfg.detectors:
            runs = ",".join(cfg.detectors)
            raise ConfigError(f"{option} is for the {name} detector, which this run does not use (detectors: {runs})",
                              f"add it: --detectors {runs},{name}")
