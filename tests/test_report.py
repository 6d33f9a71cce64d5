"""`dsatkit report`: a real mined store (plus topic tables) -> index.html + PNGs, opened in a real
headless Chromium from file://."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dsatkit.config import MineConfig
from dsatkit.errors import StoreError
from dsatkit.evaluate import evaluate, load_labelled, write_report
from dsatkit.pipeline import mine
from dsatkit.report import ReportConfig, build_report, data
from dsatkit.report.data import ReportInputError
from dsatkit.trainers.drift import RoundMetrics, record_round

PWN = "<script>window.__pwned=1</script>"
CLOSER = "</script><b>not bold</b>"
EVIL_MODEL = "</script><script>window.__pwned=2</script>"
"""A model name from the logs: it reaches the charts' JSON data."""

THEMES = {
    # theme -> (request, response, DSAT feedback, SAT feedback); DSAT share rises across themes
    "python": ("How do I reverse a list in Python?", "Use reversed(x) or x[::-1].",
               "That's wrong, it does not work, I asked for in place", "Thanks, perfect!"),
    "cooking": ("Give me a recipe for banana bread", "Mash three bananas, mix with flour and sugar, bake.",
                "No, that's not what I asked, I need it without sugar", "Thank you, that looks great"),
    "travel": ("Plan a weekend in Lisbon", "Day one: Alfama and the castle; day two: Belem.",
               "This is useless, you ignored my budget", "Great, thanks a lot!"),
}
DSAT_EVERY = {"python": 2, "cooking": 3, "travel": 5}
"""Every n-th conversation of a theme gets DSAT feedback; the others SAT or a neutral follow-up."""
START = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)


def write_logs(directory: Path) -> list[Path]:
    """Two OpenAI-format jsonl files of 60 conversations (three themes, two models, two languages,
    timestamps over ten days), one line malformed; one DSAT exchange carries a <script> in every text."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [directory / "week1.jsonl", directory / "week2.jsonl"]
    lines: list[list[str]] = [[], []]
    i = 0
    for theme, (request, response, bad, good) in THEMES.items():
        for k in range(20):
            feedback = bad if k % DSAT_EVERY[theme] == 0 else good if k % 2 else "ok, and what about next week?"
            messages = [{"role": "user", "content": f"{request} (case {k})"},
                        {"role": "assistant", "content": response},
                        {"role": "user", "content": feedback}]
            model = "gpt-4o" if k % 3 else "llama-3-8b"
            if theme == "python" and k == 0:  # escaping: texts and a model name holding markup
                messages = [{"role": "user", "content": f"{request} {PWN}"},
                            {"role": "assistant", "content": f"{response} {CLOSER} " + "long " * 400},
                            {"role": "user", "content": f"{bad} {PWN}"}]
                model = EVIL_MODEL
            row = {"id": f"{theme}-{k}", "model": model, "language": "English" if k % 4 else "French",
                   "timestamp": (START + dt.timedelta(hours=4 * i)).isoformat(), "messages": messages}
            lines[k % 2].append(json.dumps(row))
            i += 1
    lines[1].append("{not json")
    for path, rows in zip(files, lines):
        path.write_text("\n".join(rows) + "\n")
    return files


def add_topic_tables(store: Path) -> pl.DataFrame:
    """topics.duckdb as `dsatkit topics` writes it: one topic per theme (the conversation id's prefix)."""
    con = duckdb.connect(str(store / "topics.duckdb"))
    con.execute(f"attach '{store / 'dsat.duckdb'}' as s (read_only)")
    con.execute("""
        create table exchange_topics as
        select e.exchange_id,
               (case split_part(e.conversation_id, '-', 1) when 'python' then 0 when 'cooking' then 1 else 2 end)::integer topic_id,
               (case when e.conversation_id = 'python-0' then 0.0 else 0.5 end)::double distance
        from s.exchange_index e
    """)
    con.execute("""
        create table topics as
        with t as (
          select x.topic_id, count(*)::integer size, count(*) filter (where v.polarity = 'dsat')::integer dsat,
                 count(*) filter (where v.polarity = 'sat')::integer sat
          from exchange_topics x left join s.verdicts v using (exchange_id) group by 1)
        select topic_id,
               ['python list reverse <b>bold</b>', 'banana bread recipe', 'lisbon weekend'][topic_id + 1] name,
               case when topic_id = 0 then 'requests about Python lists' end description,
               [['python', 'list'], ['banana', 'bread'], ['lisbon', 'weekend']][topic_id + 1] terms,
               0::integer group_id, 'everything' group_name, size, dsat, dsat / size dsat_rate,
               greatest(dsat / size - 0.1, 0) dsat_rate_low, least(dsat / size + 0.1, 1) dsat_rate_high,
               sat, sat / size sat_rate,
               [{'value': 'negative_feedback', 'n': dsat}]::struct(value varchar, n integer)[] top_categories,
               [{'value': 'English', 'n': size}]::struct(value varchar, n integer)[] top_languages,
               [{'value': 'gpt-4o', 'n': size}]::struct(value varchar, n integer)[] top_models
        from t
    """)
    con.execute("create table topic_groups as select 0::integer group_id, 'everything' name, "
                "sum(size)::integer size, sum(dsat) / sum(size) dsat_rate from topics")
    topics = con.sql("select * from topics order by topic_id").pl()
    con.close()
    return topics


def write_train_output(directory: Path) -> Path:
    """A training output's train.duckdb as the trainer records it (drift.record_round), three rounds."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, (stage, loss) in enumerate((("seed", 0.69), ("drift", 0.52), ("drift", 0.41))):
        record_round(directory, RoundMetrics(
            round=n, stage=stage, start_model=f"round-{n - 1}/model", model_path=f"round-{n}/model", prompts=40,
            pairs_kept=38 - n, dropped={"identical": 2 + n}, loss=loss, reward_margin=0.1 * (n + 1),
            reward_accuracy=0.5 + 0.1 * n, train_steps=10, distinct_2=None if stage == "seed" else 0.6 + 0.05 * n))
    return directory


def write_eval_output(directory: Path) -> Path:
    """What `dsatkit eval-detectors -o DIR` writes, for 30 labelled exchanges of the fixture's themes."""
    rows = [{"request": request, "response": response, "feedback": feedback, "label": label}
            for request, response, bad, good in THEMES.values()
            for k in range(10)
            for feedback, label in [(bad, "dsat") if k % 3 == 0 else (good, "sat") if k % 3 == 1
                                    else (f"and what about case {k}?", "neutral")]]
    labelled = directory.parent / "labelled.csv"
    pl.DataFrame(rows).write_csv(labelled)
    result, table = evaluate(load_labelled([labelled]), MineConfig(detectors=["learned", "lexical"]))
    write_report(result, table, directory)
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    out = root / "mined"
    mine(write_logs(root / "logs"), out, MineConfig(detectors=["learned", "lexical"]))
    add_topic_tables(out)
    return out


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    train, evaluated = write_train_output(root / "train"), write_eval_output(root / "eval")
    return build_report(store, root / "report", train_dir=train, eval_dir=evaluated)


def test_report_files_and_sections(report, store: Path):
    assert report.index.name == "index.html" and report.index.is_file()
    assert report.sections == {"run": True, "topics": True, "time": True, "training": True, "eval": True}
    expected = {"categories", "rate_by_language", "rate_by_model", "rate_by_source_file", "rate_over_time",
                "topic_map", "detector_agreement", "score_histogram", "train_rounds", "pr_curve", "confusion"}
    assert set(report.charts) == expected
    assert sorted(p.stem for p in report.pngs) == sorted(expected)
    for png in report.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    html = report.index.read_text()
    # nothing from the network: no http(s) resource anywhere in a tag's src/href
    assert " src=\"http" not in html and " href=\"http" not in html and "<link" not in html
    # log text is escaped: the raw <script> of the log never appears as markup
    assert PWN not in html and "<b>not bold</b>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow.__pwned=2" in html  # the model name, as JSON data
    assert "more characters]" in html  # the long response was cut with a marker
    assert "week1.jsonl" in html and "malformed JSON" in html  # inputs and the quarantine reason


def test_section_figures_agree_with_the_store(store: Path):
    con = data.open_store(store)
    try:
        overall = data.overall(con)
        assert (overall["judged"], overall["dsat"]) == (60, 21) and overall["rate_low"] < 0.35 < overall["rate_high"]
        # the threshold curve at the run's threshold counts exactly the DSAT verdicts
        threshold = data.fused_threshold_of(data.last_run(con))
        assert threshold == 0.5  # two cheap detectors: the default
        flagged = data.flagged_by_threshold(data.score_histogram(con, 40), 40)
        assert flagged.filter(pl.col("threshold") == threshold)["flagged"].item() == overall["dsat"]
        assert flagged["flagged"][0] == overall["judged"] and flagged["flagged"].is_sorted(descending=True)
        # groups beyond max_groups are summed into '(other)'; every breakdown covers every judged exchange
        rates = data.rates_by(con, ReportConfig(max_groups=2))
        assert rates["model"]["value"].to_list() == ["gpt-4o", "llama-3-8b", data.OTHER]
        for frame in rates.values():
            assert frame["exchanges"].sum() == 60 and frame["dsat"].sum() == 21
        assert data.rate_over_time(con)["unit"][0] == "day"  # ten days of timestamps
        # examples: the nearest DSAT ones per topic, then the nearest SAT one; texts cut with a marker
        examples = data.topic_examples(con, [0], ReportConfig(examples_per_topic=2, response_head_chars=100))
        assert examples.select("polarity", "rank").rows() == [("dsat", 1), ("dsat", 2), ("sat", 1)]
        first = examples.row(0, named=True)
        assert PWN in first["request"] and first["response"].endswith("more characters]")
        assert len(first["response"]) < 140
    finally:
        con.close()


def test_report_without_topics_says_what_to_run(tmp_path: Path, store: Path):
    plain = tmp_path / "plain"
    shutil.copytree(store, plain, ignore=shutil.ignore_patterns("topics.duckdb"))
    report = build_report(plain, tmp_path / "r", ReportConfig(png=False))
    assert report.sections["topics"] is False and "topic_map" not in report.charts and report.pngs == []
    html = report.index.read_text()
    assert f"run <code>dsatkit topics {plain}</code>" in html
    # no training output and no evaluation: each section says what makes one
    assert not (report.sections["training"] or report.sections["eval"])
    assert "pass its output_dir with <code>--train-dir</code>" in html and "then <code>--eval DIR</code>" in html
    # a training output inside the store directory is found without --train-dir
    write_train_output(plain)
    assert build_report(plain, tmp_path / "r", ReportConfig(png=False)).sections["training"] is True


@pytest.mark.slow  # loads the embedding model: ~10 s
def test_report_of_real_topics(tmp_path: Path, store: Path):
    """`dsatkit topics` for real (the embedding model, k-means, TF-IDF names), then the report."""
    from dsatkit.topics import TopicsConfig, build_topics

    mined = tmp_path / "mined"
    shutil.copytree(store, mined, ignore=shutil.ignore_patterns("topics.duckdb"))
    written = build_topics(mined, TopicsConfig(n_topics=3, min_topic_size=1)).topics
    report = build_report(mined, tmp_path / "r", ReportConfig(png=False))
    assert report.sections["topics"] is True and "topic_map" in report.charts
    html = report.index.read_text()
    assert html.count('<tbody class="topic"') == written.height == 3
    for row in written.iter_rows(named=True):
        assert f'data-topic="{row["topic_id"]}" data-size="{row["size"]}"' in html
        if row["dsat"]:  # every topic with DSAT shows its nearest DSAT examples
            shown = min(row["dsat"], 3)
            assert f"{shown} DSAT example{'s' if shown != 1 else ''}" in html


def test_redact_masks_texts(tmp_path: Path):
    logs = tmp_path / "logs.jsonl"
    row = {"id": "c", "messages": [
        {"role": "user", "content": "mail me at jane.doe@example.com about my key sk-abcdefghijklmnopqrstuvwx"},
        {"role": "assistant", "content": "Sure, I will write to jane.doe@example.com."},
        {"role": "user", "content": "that's wrong, you did not answer, call +1 415 555 0100"}]}
    logs.write_text(json.dumps(row) + "\n")
    mined = tmp_path / "mined"
    mine([logs], mined, MineConfig(detectors=["lexical"]))
    con = duckdb.connect(str(mined / "topics.duckdb"))
    con.execute(f"attach '{mined / 'dsat.duckdb'}' as s (read_only)")
    con.execute("create table exchange_topics as select exchange_id, 0::integer topic_id, 0.0::double distance "
                "from s.exchange_index")
    con.execute("create table topics as select 0::integer topic_id, 'jane.doe@example.com' name, "
                "null::varchar description, ['x']::varchar[] terms, 0::integer group_id, 'g' group_name, "
                "1::integer size, 1::integer dsat, 1.0::double dsat_rate, 0.2::double dsat_rate_low, "
                "1.0::double dsat_rate_high, 0::integer sat, 0.0::double sat_rate")
    con.close()
    plain = build_report(mined, tmp_path / "plain", ReportConfig(png=False)).index.read_text()
    assert "jane.doe@example.com" in plain and "sk-abcdefghijklmnopqrstuvwx" in plain
    redacted = build_report(mined, tmp_path / "red", ReportConfig(png=False, redact=True)).index.read_text()
    assert "jane.doe@example.com" not in redacted and "sk-abcdefghijklmnopqrstuvwx" not in redacted
    assert "555 0100" not in redacted and "[EMAIL]" in redacted and "[API_KEY]" in redacted


def test_not_a_store_is_one_line_with_a_hint(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="holds no .duckdb file"):
        build_report(tmp_path / "empty", tmp_path / "r")
    other = tmp_path / "other"
    other.mkdir()
    duckdb.connect(str(other / "x.duckdb")).execute("create table t as select 1 a").close()
    with pytest.raises(StoreError, match="is not a mined store") as err:
        build_report(other, tmp_path / "r")
    assert "dsatkit mine" in err.value.hint
    cli = subprocess.run([sys.executable, "-m", "dsatkit", "report", str(other), "-o", str(tmp_path / "r")],
                         check=False, capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "is not a mined store" in cli.stderr and "hint:" in cli.stderr


def test_bad_eval_and_train_dirs(tmp_path: Path, store: Path):
    with pytest.raises(ReportInputError, match="no report.json"):
        build_report(store, tmp_path / "r", ReportConfig(png=False), eval_dir=tmp_path)
    with pytest.raises(ReportInputError, match="--train-dir"):
        build_report(store, tmp_path / "r", ReportConfig(png=False), train_dir=tmp_path)


# ---- in a real browser --------------------------------------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (it is in the dev extra)")
    return path


def test_report_in_headless_chromium(report, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.index.as_uri())
            page.wait_for_function("document.documentElement.dataset.charts !== undefined", timeout=30_000)
            assert page.evaluate("document.documentElement.dataset.charts") == "ready"
            assert errors == []
            assert requests == [report.index.as_uri()]  # the page fetched nothing but itself
            # every chart drew into its container
            for name in report.charts:
                assert page.locator(f"#chart-{name} svg").count() >= 1, name
            # the log's <script> is text on the page, and never ran
            assert page.evaluate("typeof window.__pwned") == "undefined"
            page.locator("#topic-table details").first.evaluate("d => d.open = true")
            shown = page.locator("#topic-table").inner_text()
            assert "window.__pwned=1" in shown and "<b>bold</b>" in shown
            # the topic table: 3 topics, sorted by size, then by DSAT rate both ways
            def order() -> list[str]:
                return page.eval_on_selector_all("#topic-table tbody.topic", "bs => bs.map(b => b.dataset.topic)")

            assert len(order()) == 3
            page.click("#topic-table th[data-key=dsat_rate] button")
            assert order() == ["0", "1", "2"]  # python has the highest DSAT rate, travel the lowest
            page.click("#topic-table th[data-key=dsat_rate] button")
            assert order() == ["2", "1", "0"]
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 10_000
        finally:
            browser.close()
