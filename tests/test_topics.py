"""`dsatkit topics`: a store's requests -> topics with DSAT rates, written beside the store.

The store is mined for real (`dsatkit mine`, lexical detector) from generated logs with three clearly
separated request themes, one of them Chinese, whose DSAT and SAT rates are set by the feedback turn.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from dsatkit.config import JudgeConfig, MineConfig
from dsatkit.errors import ConfigError, EndpointError, StoreError
from dsatkit.lock import DirectoryInUse, OutputLock
from dsatkit.pipeline import mine
from dsatkit.topics import TOPICS_DB, TopicsConfig, build_topics
from dsatkit.topics.llm import CLOSE, OPEN
from dsatkit.topics.terms import analyze
from dsatkit.trainers.data import load_pairs
from tests.openai_server import OpenAIServer, error

PER_THEME = 60
THEMES = {
    # theme: (request templates, fillers, share of DSAT feedback, share of SAT feedback)
    "python": (
        ["How do I {} in Python with pandas?", "My Python script fails when I {}, what is wrong with the code?",
         "Write a Python function to {} and explain the code", "Why does my pandas dataframe code crash when I {}?",
         "What is the fastest way in Python to {}?", "Fix this Python code, it should {}: def f(df): pass"],
        ["merge two dataframes on a key column", "read a large csv file in chunks", "parse json from an api",
         "sort a dictionary by its values", "remove duplicate rows", "group rows and sum a column",
         "convert strings to datetime", "filter rows by a regex", "write a dataframe to parquet",
         "compute a rolling mean"],
        0.5, 0.2,
    ),
    "cooking": (
        ["Give me a recipe for {} for dinner tonight", "How long should I bake {} in the oven?",
         "What spices go well with {} when cooking?", "Can you suggest a vegetarian version of {} recipe?",
         "How do I cook {} so it stays juicy?", "What side dish should I serve with {} at a dinner party?"],
        ["roast chicken", "lasagna", "salmon fillets", "beef stew", "mushroom risotto", "banana bread",
         "pork chops", "vegetable curry", "apple pie", "garlic shrimp"],
        0.1, 0.3,
    ),
    "travel_zh": (
        ["我想去{}旅游，有什么推荐的景点吗？", "去{}旅游需要准备什么？请给我一个行程安排", "{}旅游最好的季节是什么时候？",
         "请帮我规划一个{}三天的旅游行程", "在{}旅游有哪些必吃的美食和景点？", "第一次去{}旅游，住在哪个区比较方便？"],
        ["北京", "上海", "成都", "西安", "杭州", "桂林", "厦门", "重庆", "青岛", "丽江"],
        0.3, 0.1,
    ),
}
DSAT_FEEDBACK = "that's wrong, try again"
SAT_FEEDBACK = "thanks, that works!"
NEUTRAL_FEEDBACK = "tell me more about the history of it"


def write_theme_logs(path: Path, per_theme: int = PER_THEME, themes: dict = THEMES, seed: int = 7) -> dict:
    """Generated OpenAI-messages logs: per theme `per_theme` conversations (request, answer, feedback);
    exactly round(share * per_theme) of each theme's feedbacks are DSAT / SAT. Returns theme -> ids."""
    rng = random.Random(seed)
    ids: dict[str, list[str]] = {}
    rows = []
    for theme, (templates, fillers, dsat, sat) in themes.items():
        n_dsat, n_sat = round(dsat * per_theme), round(sat * per_theme)
        feedback = [DSAT_FEEDBACK] * n_dsat + [SAT_FEEDBACK] * n_sat + [NEUTRAL_FEEDBACK] * (per_theme - n_dsat - n_sat)
        rng.shuffle(feedback)
        ids[theme] = []
        for i in range(per_theme):
            request = rng.choice(templates).format(rng.choice(fillers))
            cid = f"{theme}-{i}"
            ids[theme].append(cid)
            rows.append({"id": cid, "model": rng.choice(["gpt-4o", "llama-3-8b"]), "messages": [
                {"role": "user", "content": request},
                {"role": "assistant", "content": f"Here is an answer about {theme} number {i}."},
                {"role": "user", "content": feedback[i]},
            ]})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A mined store of the three themes, with topics built once (default config, seed 0)."""
    root = tmp_path_factory.mktemp("topics")
    logs = root / "logs.jsonl"
    write_theme_logs(logs)
    out = root / "mined"
    mine([logs], out, MineConfig(detectors=["lexical"]))
    build_topics(out, TopicsConfig())
    return out


def sql(store_dir: Path, query: str) -> pl.DataFrame:
    from dsatkit.commands.query import run_query

    return run_query(store_dir, query)


def theme_of_topics(store_dir: Path) -> pl.DataFrame:
    """Per topic: the themes of its exchanges (the conversation id names the theme) and its row."""
    return sql(store_dir, """
        select t.topic_id, t.size, t.dsat, t.dsat_rate, t.dsat_rate_low, t.dsat_rate_high, t.sat_rate,
               list_distinct(list(split_part(x.conversation_id, '-', 1))) themes, t.terms, t.name
        from topics t join exchange_topics e using (topic_id) join exchanges x using (exchange_id)
        group by all order by t.topic_id""")


def test_three_themes_become_three_topics_with_their_rates(store: Path):
    topics = theme_of_topics(store)
    assert topics.height == 3
    by_theme = {row["themes"][0]: row for row in topics.iter_rows(named=True)}
    assert all(len(row["themes"]) == 1 for row in topics.iter_rows(named=True)), topics
    for theme, (_, _, dsat, sat) in THEMES.items():
        row = by_theme[theme]
        assert row["size"] == PER_THEME
        assert row["dsat"] == round(dsat * PER_THEME)
        assert row["dsat_rate"] == pytest.approx(dsat)
        assert row["dsat_rate_low"] < dsat < row["dsat_rate_high"]
        assert row["sat_rate"] == pytest.approx(sat)
    # 0.5 and 0.1 out of 60 each are told apart by their intervals
    assert by_theme["python"]["dsat_rate_low"] > by_theme["cooking"]["dsat_rate_high"]
    # every exchange (each has a request) has exactly one topic
    n = sql(store, "select count(*) n, count(distinct exchange_id) d from exchange_topics").row(0)
    assert n == (3 * PER_THEME, 3 * PER_THEME)


def test_topics_table_has_the_contract_columns(store: Path):
    con = duckdb.connect(str(store / TOPICS_DB), read_only=True)
    types = dict(con.sql("select column_name, data_type from information_schema.columns "
                         "where table_name = 'topics'").fetchall())
    con.close()
    expected = {
        "topic_id": "INTEGER", "name": "VARCHAR", "description": "VARCHAR", "terms": "VARCHAR[]",
        "group_id": "INTEGER", "group_name": "VARCHAR", "size": "INTEGER", "dsat": "INTEGER",
        "dsat_rate": "DOUBLE", "dsat_rate_low": "DOUBLE", "dsat_rate_high": "DOUBLE", "sat": "INTEGER",
        "sat_rate": "DOUBLE", "top_categories": "STRUCT(\"value\" VARCHAR, n INTEGER)[]",
        "top_languages": "STRUCT(\"value\" VARCHAR, n INTEGER)[]", "top_models": "STRUCT(\"value\" VARCHAR, n INTEGER)[]",
        "seed": "INTEGER", "method": "VARCHAR", "version": "VARCHAR",
    }
    assert {k: types.get(k) for k in expected} == expected
    row = sql(store, "select * from topics where dsat > 0 order by topic_id limit 1").row(0, named=True)
    # every DSAT feedback is the same text, so one category holds all of a topic's DSAT
    category = sql(store, "select distinct category from verdicts where label").item()
    assert row["top_categories"] == [{"value": category, "n": row["dsat"]}]
    assert sum(m["n"] for m in row["top_models"]) == row["size"]
    # few topics: no second level, each topic is its own group
    groups = sql(store, "select group_id, name, size, dsat_rate from topic_groups order by group_id")
    assert groups["size"].to_list() == sql(store, "select size from topics order by topic_id")["size"].to_list()


def test_sql_joins_through_the_cli(store: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "dsatkit", "sql", str(store), "--format", "json",
         ("select t.name, count(*) n from dsat d join exchange_topics using (exchange_id) "
          "join topics t using (topic_id) group by all order by n desc")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["n"] for r in rows] == [30, 18, 6]  # python 0.5, travel 0.3, cooking 0.1 of 60


def test_trainer_data_where_can_pick_a_topic(store: Path):
    python_topic = sql(store, "select topic_id from topics where list_contains(terms, 'python')").item()
    picked = load_pairs(store, where=f"exchange_id in (select exchange_id from exchange_topics "
                                     f"where topic_id = {python_topic})")
    assert picked.height == round(THEMES["python"][2] * PER_THEME)
    themes = sql(store, "select exchange_id, split_part(conversation_id, '-', 1) theme from exchanges")
    assert set(picked.join(themes, on="exchange_id")["theme"]) == {"python"}


def test_same_seed_same_topics_and_rerun_reuses_the_embeddings(store: Path):
    before = sql(store, "select exchange_id, topic_id, distance from exchange_topics order by exchange_id")
    again = build_topics(store, TopicsConfig())
    assert again.summary.embedded == 0
    assert again.summary.embedding_cache_hits == again.summary.distinct_requests > 0
    after = sql(store, "select exchange_id, topic_id, distance from exchange_topics order by exchange_id")
    assert after.equals(before)


def test_terms_name_each_theme_readably(store: Path):
    topics = theme_of_topics(store)
    by_theme = {row["themes"][0]: row for row in topics.iter_rows(named=True)}
    assert "python" in by_theme["python"]["terms"][:3]
    assert {"recipe", "cook", "cooking", "dinner"} & set(by_theme["cooking"]["terms"][:5])
    zh = by_theme["travel_zh"]["terms"]
    assert "旅游" in zh[:3] and {"景点", "行程"} & set(zh)
    assert all(len(t) == 2 for t in zh)  # character bigrams, not whole sentences
    assert by_theme["python"]["name"].startswith("python")


def test_analyzer_splits_cjk_into_bigrams_and_words_elsewhere():
    assert analyze("Fix my Python code") == ["fix", "python", "code"]
    assert analyze("东京天气") == ["东京", "京天", "天气"]
    assert analyze("用Python写一个爬虫的程序") == ["python", "写一", "爬虫", "程序"]  # cut at 个 and 的
    # Japanese: kanji bigrams and katakana words; hiragana particles and endings dropped
    assert analyze("取引先への謝罪のメールを書いてください") == ["取引", "引先", "謝罪", "メール"]
    assert analyze("서울 여행 추천") == ["서울", "여행", "추천"]


def test_a_fixed_k_and_a_different_seed(store: Path, tmp_path: Path):
    result = build_topics(store, TopicsConfig(n_topics=5, min_topic_size=1, seed=3))
    assert result.topics.height == 5
    assert result.summary.k_chosen_by == "n_topics"
    # every theme's exchanges stay within that theme's topics
    topics = theme_of_topics(store)
    assert all(len(t) == 1 for t in topics["themes"].to_list())
    build_topics(store, TopicsConfig())  # back to the module's default topics


def name_handler(req) -> str:
    user = next(m["content"] for m in req.messages if m["role"] == "user")
    data = json.loads(user.split(OPEN + "\n")[1].split("\n" + CLOSE)[0])
    terms = set(data["terms"])
    subject = "Python code" if "python" in terms else "Travel in China" if "旅游" in terms else "Cooking"
    return json.dumps({"name": f"{subject} help", "description": f"Users ask about {subject.lower()}."})


def test_llm_names_are_cached_and_budgeted(store: Path, tmp_path: Path):
    with OpenAIServer(name_handler) as srv:
        llm = JudgeConfig(model="namer", base_url=srv.url, api_key_env="DSATKIT_TEST_NO_SUCH_KEY")
        cfg = TopicsConfig(naming="llm", llm=llm)
        first = build_topics(store, cfg)
        assert len(srv.requests) == 3
        named = sql(store, "select name, description from topics order by name")
        assert named["name"].to_list() == ["Cooking help", "Python code help", "Travel in China help"]
        assert named["description"].null_count() == 0
        assert first.summary.naming["calls"] == 3
        # untrusted text reaches the model as escaped data between the delimiters
        body = srv.requests[0].messages[1]["content"]
        assert OPEN in body and CLOSE in body
        again = build_topics(store, cfg)
        assert len(srv.requests) == 3 and again.summary.naming["cache_hits"] == 3
    # a budget of one call: one LLM name, the other topics keep their terms
    with OpenAIServer(name_handler) as srv:
        llm = JudgeConfig(model="namer-2", base_url=srv.url, api_key_env="DSATKIT_TEST_NO_SUCH_KEY", max_calls=1)
        result = build_topics(store, TopicsConfig(naming="llm", llm=llm))
        assert len(srv.requests) == 1
        assert result.summary.naming["skipped_by_budget"] == 2
        assert result.topics["description"].null_count() == 2
    build_topics(store, TopicsConfig())


def test_llm_endpoint_errors_are_one_line(store: Path):
    with OpenAIServer(lambda req: error(401, "bad key")) as srv:
        llm = JudgeConfig(model="namer-x", base_url=srv.url, api_key_env="DSATKIT_TEST_NO_SUCH_KEY")
        with pytest.raises(EndpointError, match="401"):
            build_topics(store, TopicsConfig(naming="llm", llm=llm))
    assert sql(store, "select count(*) from topics").item() == 3  # the previous topics are intact


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="n_topic"):
        TopicsConfig.load(None, n_topic=3)
    with pytest.raises(ConfigError, match="naming: llm needs"):
        TopicsConfig.load(None, naming="llm")


def test_a_locked_directory_is_refused(store: Path):
    with OutputLock(store), pytest.raises(DirectoryInUse):
        build_topics(store, TopicsConfig())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsatkit", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_cli_mine_with_topics_then_topics_with_options(tmp_path: Path, capsys):
    from dsatkit.cli import main

    logs = tmp_path / "logs.jsonl"
    write_theme_logs(logs, per_theme=20)
    out = tmp_path / "mined"
    proc = run_cli("mine", str(logs), "-o", str(out), "--detectors", "lexical", "--topics")
    assert proc.returncode == 0, proc.stderr
    assert "dsatkit topics" in proc.stdout and "DSAT rate" in proc.stdout
    assert sql(out, "select count(*) from topics").item() == 3
    assert sql(out, "select count(*) from exchange_topics").item() == 60
    capsys.readouterr()
    main(["topics", str(out), "--n-topics", "2", "--min-topic-size", "1", "--seed", "1"])
    said = " ".join(capsys.readouterr().out.split())
    assert "k=2 by n_topics" in said and "embedded 0 (" in said  # every request from mine's cache
    assert sql(out, "select min(seed), max(seed) from topics").row(0) == (1, 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["topics", str(out), "--n-topics", "many"])
    assert exit_info.value.code == 2
    assert "error: options: n_topics" in capsys.readouterr().err


def test_a_store_without_requests_gets_empty_tables(tmp_path: Path):
    logs = tmp_path / "logs.jsonl"  # a conversation part that opens with the assistant: no request
    logs.write_text(json.dumps({"id": "a", "messages": [{"role": "assistant", "content": "hello"},
                                                        {"role": "user", "content": "thanks"}]}) + "\n")
    mine([logs], tmp_path / "mined", MineConfig(detectors=["lexical"]))
    result = build_topics(tmp_path / "mined")
    assert (result.summary.exchanges, result.summary.with_request, result.topics.height) == (1, 0, 0)
    assert sql(tmp_path / "mined", "select count(*) from exchange_topics").item() == 0


def test_not_a_store_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(StoreError, match="is not a directory"):
        build_topics(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="holds no .duckdb file"):
        build_topics(tmp_path)


def test_many_topics_get_a_second_level_named_by_the_llm(store: Path):
    with OpenAIServer(name_handler) as srv:
        llm = JudgeConfig(model="namer-groups", base_url=srv.url, api_key_env="DSATKIT_TEST_NO_SUCH_KEY")
        result = build_topics(store, TopicsConfig(n_topics=12, min_topic_size=1, group_min_topics=10, naming="llm",
                                                  llm=llm))
        assert result.topics.height == 12 and result.groups.height == 3  # round(sqrt(12)) groups
        assert len(srv.requests) == 12 + 3
        # a group is named from its topics' names (shown as its example requests)
        group_docs = [r.messages[1]["content"] for r in srv.requests[12:]]
        assert all("help" in doc for doc in group_docs)
    groups = sql(store, "select group_id, name, size, topics, dsat from topic_groups order by group_id")
    topics = sql(store, "select group_id, group_name, size, dsat from topics")
    assert groups["size"].sum() == 3 * PER_THEME and groups["topics"].sum() == 12
    per_group = topics.group_by("group_id").agg(pl.col("size").sum(), pl.col("dsat").sum(), pl.len().alias("topics"),
                                               pl.col("group_name").first()).sort("group_id")
    assert per_group["size"].to_list() == groups["size"].to_list()
    assert per_group["dsat"].to_list() == groups["dsat"].to_list()
    assert per_group["group_name"].to_list() == groups["name"].to_list()
    assert groups["size"].to_list() == sorted(groups["size"].to_list(), reverse=True)
    build_topics(store, TopicsConfig())


def test_llm_naming_redacts_what_leaves_the_machine():
    from dsatkit.topics.llm import TopicNamer

    with OpenAIServer(lambda req: json.dumps({"name": "Mail", "description": "Mail."})) as srv:
        namer = TopicNamer(JudgeConfig(model="namer-r", base_url=srv.url, api_key_env="DSATKIT_TEST_NO_SUCH_KEY",
                                       redact=True))
        names = namer.name_topics([["mail"]], [["write to jane.doe@example.com about the invoice"]])
        assert names[0].name == "Mail"
        sent = srv.requests[0].messages[1]["content"]
        assert "jane.doe@example.com" not in sent and "[EMAIL]" in sent


def test_topics_from_the_mine_yaml_config_and_stale_topics_removed(tmp_path: Path):
    logs = tmp_path / "logs.jsonl"
    write_theme_logs(logs, per_theme=20)
    out = tmp_path / "mined"
    config = tmp_path / "mine.yaml"
    config.write_text("detectors: [lexical]\ntopics:\n  n_topics: 3\n  seed: 2\n")
    proc = run_cli("mine", str(logs), "-o", str(out), "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert sql(out, "select count(*), min(seed) from topics").row(0) == (3, 2)
    # mining again without topics replaces the store: the old topics describe exchanges that are gone
    proc = run_cli("mine", str(logs), "-o", str(out), "--detectors", "lexical")
    assert proc.returncode == 0, proc.stderr
    assert "removed topics.duckdb" in proc.stderr and not (out / TOPICS_DB).exists()
    # a bad topics key is refused at load, before any mining
    config.write_text("detectors: [lexical]\ntopics:\n  n_topic: 3\n")
    proc = run_cli("mine", str(logs), "-o", str(tmp_path / "other"), "--config", str(config))
    assert proc.returncode == 2 and "topics.n_topic: unknown key" in proc.stderr
    assert not (tmp_path / "other" / "dsat.duckdb").exists()
