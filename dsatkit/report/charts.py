"""The report's charts: Vega-Altair specifications built from the frames of dsatkit.report.data.

Each function takes the frame(s) of one section and returns an `alt.Chart` (or a layered /
concatenated one); the HTML embeds their Vega-Lite JSON and renders it with vega-embed, and
vl-convert turns the same JSON into the PNGs. Text from logs (models, languages, file names, topic
names) reaches Vega as data, which draws it as SVG text, never as markup.
"""

from __future__ import annotations

import altair as alt
import polars as pl

WIDTH = 560
"""Width of a full chart in pixels (the page's column)."""
POLARITY_COLOURS = alt.Scale(domain=["dsat", "sat", "neutral"], range=["#d6604d", "#4393c3", "#bababa"])
VERDICT_COLOURS = alt.Scale(domain=["DSAT", "not DSAT"], range=["#d6604d", "#bababa"])
RATE_AXIS = alt.Axis(format="%", title="DSAT rate")


def _bar_height(n: int) -> int:
    return max(60, 22 * n)


def categories(frame: pl.DataFrame) -> alt.Chart:
    """Verdicts per category, DSAT and SAT kinds coloured apart (frame: data.by_category)."""
    return (
        alt.Chart(frame, title="Verdicts by category")
        .mark_bar()
        .encode(
            y=alt.Y("category:N", sort="-x", title=None),
            x=alt.X("n:Q", title="exchanges"),
            color=alt.Color("polarity:N", scale=POLARITY_COLOURS, title="polarity"),
            tooltip=["category", "polarity", alt.Tooltip("n:Q", format=","), alt.Tooltip("share:Q", format=".1%"),
                     "description"],
        )
        .properties(width=WIDTH - 120, height=_bar_height(frame.height))
    )


def rate_by(frame: pl.DataFrame, column: str, overall_rate: float | None) -> alt.LayerChart:
    """DSAT rate per value of `column` with its 95% interval and the overall rate as a rule
    (frame: one of data.rates_by's; bars in the frame's order, the largest groups first)."""
    order = frame["value"].to_list()
    base = alt.Chart(frame).encode(y=alt.Y("value:N", sort=order, title=column.replace("_", " ")))
    tooltip = [
        alt.Tooltip("value:N", title=column), alt.Tooltip("exchanges:Q", format=","),
        alt.Tooltip("dsat:Q", format=","), alt.Tooltip("rate:Q", format=".1%"),
        alt.Tooltip("rate_low:Q", format=".1%", title="95% low"), alt.Tooltip("rate_high:Q", format=".1%", title="95% high"),
    ]
    bars = base.mark_bar(color="#f4a582").encode(x=alt.X("rate:Q", axis=RATE_AXIS), tooltip=tooltip)
    ci = base.mark_rule(color="#67001f").encode(x="rate_low:Q", x2="rate_high:Q", tooltip=tooltip)
    layers = [bars, ci]
    if overall_rate is not None:
        layers.append(
            alt.Chart(pl.DataFrame({"overall": [overall_rate]}))
            .mark_rule(strokeDash=[4, 3], color="#333")
            .encode(x="overall:Q", tooltip=[alt.Tooltip("overall:Q", format=".1%", title="overall DSAT rate")])
        )
    return alt.layer(*layers, title=f"DSAT rate by {column.replace('_', ' ')}").properties(
        width=WIDTH - 200, height=_bar_height(frame.height)
    )


def over_time(frame: pl.DataFrame) -> alt.LayerChart:
    """DSAT rate per time bucket with its 95% band (frame: data.rate_over_time)."""
    unit = frame["unit"][0]
    base = alt.Chart(frame).encode(x=alt.X("bucket:T", title=f"response time (UTC, per {unit})"))
    tooltip = [alt.Tooltip("bucket:T"), alt.Tooltip("exchanges:Q", format=","), alt.Tooltip("dsat:Q", format=","),
               alt.Tooltip("rate:Q", format=".1%")]
    band = base.mark_area(opacity=0.25, color="#d6604d").encode(y=alt.Y("rate_low:Q", axis=RATE_AXIS), y2="rate_high:Q")
    line = base.mark_line(point=True, color="#b2182b").encode(y="rate:Q", tooltip=tooltip)
    return alt.layer(band, line, title="DSAT rate over time").properties(width=WIDTH, height=220)


def topic_map(frame: pl.DataFrame) -> alt.LayerChart:
    """Each topic's size against its DSAT rate with the 95% interval (frame: data.topics)."""
    colour = alt.Color("group_name:N", title="group") if "group_name" in frame.columns else alt.value("#b2182b")
    data = frame.select(
        "topic_id", "name", "size", "dsat", "dsat_rate", "dsat_rate_low", "dsat_rate_high",
        *(["group_name"] if "group_name" in frame.columns else []),
    )
    base = alt.Chart(data).encode(
        x=alt.X("size:Q", scale=alt.Scale(type="log"), title="exchanges in the topic (log)"),
        tooltip=["name", alt.Tooltip("size:Q", format=","), alt.Tooltip("dsat:Q", format=","),
                 alt.Tooltip("dsat_rate:Q", format=".1%"), alt.Tooltip("dsat_rate_low:Q", format=".1%", title="95% low"),
                 alt.Tooltip("dsat_rate_high:Q", format=".1%", title="95% high")],
    )
    ci = base.mark_rule(opacity=0.5).encode(y=alt.Y("dsat_rate_low:Q", axis=RATE_AXIS), y2="dsat_rate_high:Q",
                                            color=colour)
    dots = base.mark_circle(size=70, opacity=0.85).encode(y="dsat_rate:Q", color=colour)
    return alt.layer(ci, dots, title="Topics: size and DSAT rate").properties(width=WIDTH - 140, height=300)


def agreement(frame: pl.DataFrame) -> alt.Chart:
    """How often each set of detectors voted DSAT, split by the fused verdict (frame: data.detector_agreement)."""
    order = frame.group_by("detectors").agg(pl.sum("n")).sort("n", descending=True)["detectors"].to_list()
    return (
        alt.Chart(frame, title="Detectors that voted DSAT, together")
        .mark_bar()
        .encode(
            y=alt.Y("detectors:N", sort=order, title=None),
            x=alt.X("n:Q", title="judged exchanges"),
            color=alt.Color("verdict:N", scale=VERDICT_COLOURS, title="fused verdict"),
            tooltip=["detectors", "verdict", alt.Tooltip("n:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(width=WIDTH - 160, height=_bar_height(len(order)))
    )


def score_histogram(histogram: pl.DataFrame, flagged: pl.DataFrame, threshold: float | None) -> alt.VConcatChart:
    """The fused-score histogram by polarity over the flagged-at-threshold curve, both with the
    threshold as a rule (frames: data.score_histogram, data.flagged_by_threshold)."""
    x = alt.X("bin_start:Q", bin="binned", scale=alt.Scale(domain=[0, 1]), title="fused P(DSAT)")
    bars = (
        alt.Chart(histogram)
        .mark_bar()
        .encode(
            x=x, x2="bin_end:Q", y=alt.Y("n:Q", stack=True, title="judged exchanges"),
            color=alt.Color("polarity:N", scale=POLARITY_COLOURS),
            tooltip=["polarity", alt.Tooltip("bin_start:Q", format=".3f", title="from"),
                     alt.Tooltip("bin_end:Q", format=".3f", title="to"), alt.Tooltip("n:Q", format=",")],
        )
    )
    curve = (
        alt.Chart(flagged)
        .mark_line(interpolate="step-after", color="#b2182b")
        .encode(
            x=alt.X("threshold:Q", scale=alt.Scale(domain=[0, 1]), title="threshold"),
            y=alt.Y("flagged:Q", title="labelled DSAT at this threshold"),
            tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("flagged:Q", format=",")],
        )
    )
    top, bottom = [bars], [curve]
    if threshold is not None:
        rule = (
            alt.Chart(pl.DataFrame({"threshold": [threshold]}))
            .mark_rule(strokeDash=[4, 3], color="#333", size=2)
            .encode(x="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", format=".3f", title="threshold in use")])
        )
        top.append(rule)
        bottom.append(rule)
    return alt.vconcat(
        alt.layer(*top).properties(width=WIDTH, height=200, title="Fused score of judged exchanges"),
        alt.layer(*bottom).properties(width=WIDTH, height=160, title="How the threshold moves the DSAT count"),
    )


def train_rounds(long: pl.DataFrame) -> alt.FacetChart:
    """Per-round training metrics, one small panel each (frame: data.train_metrics_long)."""
    return (
        alt.Chart(long)
        .mark_line(point=True, color="#2166ac")
        .encode(
            x=alt.X("round:O", title="round"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            tooltip=["round", "stage", "metric", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=170, height=120)
        .facet(facet=alt.Facet("metric:N", title=None), columns=3)
        .resolve_scale(y="independent")
        .properties(title="Training rounds")
    )


def pr_curves(curves: pl.DataFrame, points: pl.DataFrame) -> alt.LayerChart:
    """Precision-recall curves of each detector and the fused score, dots at their thresholds
    (frames: data.eval_results' curves and points)."""
    scale = alt.Scale(domain=[0, 1])
    line = alt.Chart(curves).mark_line().encode(
        x=alt.X("recall:Q", scale=scale), y=alt.Y("precision:Q", scale=scale), color=alt.Color("name:N", title=None),
        order=alt.Order("step:Q"),
    )
    dots = alt.Chart(points).mark_point(filled=True, size=80).encode(
        x="recall:Q", y="precision:Q", color="name:N",
        tooltip=["name", alt.Tooltip("precision:Q", format=".3f"), alt.Tooltip("recall:Q", format=".3f"),
                 alt.Tooltip("threshold:Q", format=".3g")],
    )
    return alt.layer(line, dots, title="Detector quality: precision-recall (dots at the thresholds)").properties(
        width=WIDTH - 160, height=320
    )


def confusion(frame: pl.DataFrame) -> alt.FacetChart:
    """Confusion matrix of each detector and the fused verdict (frame: data.eval_results' confusion)."""
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=["DSAT", "not DSAT"]), y=alt.Y("actual:N", sort=["DSAT", "not DSAT"])
    )
    cells = base.mark_rect().encode(color=alt.Color("n:Q", scale=alt.Scale(scheme="blues"), legend=None),
                                    tooltip=["name", "actual", "predicted", alt.Tooltip("n:Q", format=",")])
    text = base.mark_text(fontSize=13).encode(text=alt.Text("n:Q", format=","))
    return (
        alt.layer(cells, text)
        .properties(width=130, height=100)
        .facet(facet=alt.Facet("name:N", title=None), columns=3)
        .resolve_scale(color="independent")
        .properties(title="Confusion matrices (DSAT is the positive class)")
    )
