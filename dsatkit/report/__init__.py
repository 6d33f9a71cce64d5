"""`dsatkit report`: a mined store (and a training output, and eval-detectors results) -> one
self-contained HTML page with charts, plus the charts as PNGs.

    from dsatkit.report import build_report
    build_report("mined/", "report/")        # report/index.html, report/charts/*.png

`data` queries the store into small frames (one function per section), `charts` draws them with
Vega-Altair, `html` assembles the page from a Jinja2 template; `ReportConfig` says how much to show.
"""

from dsatkit.report.config import ReportConfig
from dsatkit.report.html import Report, build_report

__all__ = ["Report", "ReportConfig", "build_report"]
