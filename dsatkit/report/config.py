"""What `dsatkit report` shows and how much of it: one pydantic model, every field documented."""

from __future__ import annotations

from pydantic import Field

from dsatkit.config import StrictModel


class ReportConfig(StrictModel):
    """Options of one report (`dsatkit report` flags map onto these fields; unknown keys are errors)."""

    examples_per_topic: int = Field(
        3, ge=0, le=20, description="DSAT examples shown under each topic (the ones nearest its centre)"
    )
    max_topics: int = Field(200, gt=0, description="topics in the table (the largest first)")
    max_groups: int = Field(
        20, gt=0, description="bars per 'DSAT rate by language / model / source file' chart; the rest is '(other)'"
    )
    text_chars: int = Field(
        600, ge=40, description="longer request and feedback texts are cut here, with a marker saying how much is left"
    )
    response_head_chars: int = Field(400, ge=40, description="characters of the response shown (its head)")
    redact: bool = Field(
        False, description="mask e-mails, phones, API keys and IPs in every log text shown (the judge's redaction)"
    )
    histogram_bins: int = Field(40, ge=5, le=200, description="bins of the fused-score histogram over [0, 1]")
    max_curve_points: int = Field(
        400, ge=10, description="points kept per precision-recall curve (evenly spaced along it)"
    )
    png: bool = Field(True, description="also write every chart as charts/<name>.png")
    png_scale: float = Field(2.0, gt=0, le=4, description="PNG pixels per chart pixel")
