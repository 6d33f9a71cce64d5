"""Throughput of `dsatkit topics` on a 200,000-exchange store with a warm embedding cache.

    python bench/topics_throughput.py                      # 200,000 exchanges, 40,000 distinct requests
    python bench/topics_throughput.py --exchanges 50000 --distinct 20000
    python bench/topics_throughput.py --fresh              # rebuild the logs, the store and the cache

Builds (once, cached under bench/out/topics/, gitignored) generated OpenAI-messages logs: one exchange
per conversation (request, answer, the user's next turn), requests drawn from `--distinct` different
texts (30 themes in 6 languages: templates x fillers x openers x suffixes, 10% with a pasted paragraph
of 40-250 words; popular requests repeat, Zipf-like, as in real logs, the most popular ~0.7%), and feedback whose DSAT share
differs per theme. The store is mined with the lexical detector; the first `topics` run fills the
embedding cache (untimed, its time reported); then `topics` is timed over the warm cache, in a fresh
process (imports included), and compared with a bare scan of the requests (DuckDB reading the request
text of every exchange from the store). Target (2 cores): 200,000 exchanges in under 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

OUT = Path(__file__).resolve().parent / "out" / "topics"
REPO = Path(__file__).resolve().parents[1]

# theme: (DSAT share of its feedback, templates ({} = a filler), fillers)
THEMES: dict[str, tuple[float, list[str], list[str]]] = {
    "pandas": (0.30, ["how do I {} in pandas", "my pandas code fails when I {}", "fastest way to {} with pandas",
                      "write a python function to {} using pandas"],
               ["merge two dataframes", "drop duplicate rows", "pivot a table", "read a big csv in chunks",
                "group by two columns", "fill missing values", "parse dates", "filter rows by regex",
                "join on an index", "compute a rolling mean", "explode a list column", "rename columns"]),
    "react": (0.35, ["why does my react component {}", "how to fix react error when component {}",
                     "best way in react to handle a component that {}"],
              ["re-render twice", "not update state", "lose focus on input", "fetch data in a loop",
               "flicker on load", "ignore new props", "leak memory on unmount", "break after an upgrade"]),
    "sql": (0.25, ["write a sql query to {}", "optimize this sql query that needs to {}",
                   "postgres: how can I {}"],
            ["count users per country", "find duplicate emails", "get the top 3 orders per customer",
             "compute a running total", "delete old rows in batches", "join three tables",
             "pivot monthly sales", "find gaps in a sequence"]),
    "docker": (0.3, ["docker: how do I {}", "my docker container fails to {}", "kubernetes pod cannot {}"],
               ["mount a volume", "reach the host network", "start after a reboot", "pull a private image",
                "limit memory", "read environment variables", "write logs to stdout", "expose port 8080"]),
    "git": (0.2, ["git: how to {}", "I accidentally need to {} in git", "what is the safest way to {} with git"],
            ["undo the last commit", "squash commits", "rename a branch", "resolve a merge conflict",
             "remove a file from history", "cherry pick a commit", "rebase onto main", "recover a deleted branch"]),
    "recipes": (0.1, ["give me a recipe for {}", "how long do I bake {}", "vegetarian version of {}",
                      "what can I serve with {} at dinner"],
                ["lasagna", "roast chicken", "banana bread", "beef stew", "mushroom risotto", "apple pie",
                 "salmon fillet", "vegetable curry", "pancakes", "sourdough bread", "ramen", "tacos"]),
    "travel": (0.12, ["plan a {} itinerary", "what should I pack for {}", "is {} safe for solo travellers",
                      "cheapest way to get around during {}"],
               ["3 day trip to rome", "week in japan", "weekend in paris", "road trip in iceland",
                "backpacking in peru", "honeymoon in bali", "ski trip to austria", "city break in lisbon"]),
    "cover_letter": (0.2, ["write a cover letter for {}", "improve my resume for {}",
                           "how do I answer interview questions for {}"],
                     ["a data analyst job", "a nursing position", "a junior developer role", "a marketing manager",
                      "a teaching job", "an internship in finance", "a barista job", "a product manager role"]),
    "emails": (0.18, ["write a polite email to {}", "draft an email asking {}", "reply to an email from {}"],
               ["my landlord about a repair", "my boss for a raise", "a client about a late payment",
                "a professor for an extension", "a colleague about a missed deadline", "hr about vacation days"]),
    "essays": (0.22, ["write an essay about {}", "give me an outline for an essay on {}",
                      "summarize the main arguments about {}"],
               ["climate change", "social media and teenagers", "the french revolution", "renewable energy",
                "artificial intelligence in schools", "universal basic income", "remote work", "space exploration"]),
    "poems": (0.15, ["write a poem about {}", "write a haiku about {}", "make a funny limerick about {}"],
              ["the sea", "autumn leaves", "my cat", "coffee in the morning", "a rainy day", "friendship",
               "the moon", "monday mornings"]),
    "math": (0.4, ["solve {}", "explain step by step how to solve {}", "check my answer to {}"],
             ["2x + 5 = 17", "the integral of x^2 sin x", "a quadratic with roots 3 and -2",
              "the derivative of ln(x^2+1)", "a system of two linear equations", "the limit of sin x / x",
              "a probability of two dice summing to 7", "the area under y = 1/x from 1 to e"]),
    "stats": (0.3, ["explain {} simply", "when should I use {}", "how do I interpret {}"],
              ["a p-value", "a confidence interval", "logistic regression", "a t-test", "standard deviation",
               "bayes theorem", "a chi-square test", "correlation vs causation"]),
    "finance": (0.2, ["should I {}", "explain how to {}", "pros and cons: {}"],
                ["pay off debt or invest", "open a roth ira", "buy or rent a house", "refinance my mortgage",
                 "invest in index funds", "build an emergency fund", "start a budget", "buy bonds now"]),
    "health": (0.15, ["what are the symptoms of {}", "how can I improve {}", "is it normal to have {}"],
               ["vitamin d deficiency", "my sleep", "back pain after running", "seasonal allergies",
                "high blood pressure", "my posture", "headaches every day", "low energy in the afternoon"]),
    "fitness": (0.12, ["make me a workout plan for {}", "how many calories should I eat for {}",
                       "best exercises for {}"],
                ["building muscle", "losing weight", "running a marathon", "a bad knee", "beginners at home",
                 "stronger core", "better flexibility", "a 5k in 8 weeks"]),
    "legal": (0.28, ["is it legal to {}", "what are my rights if {}", "do I need a lawyer to {}"],
              ["break a lease early", "my employer does not pay overtime", "record a phone call",
               "sublet my apartment", "fire an employee on probation", "use a song in my youtube video"]),
    "marketing": (0.2, ["write instagram captions for {}", "create a marketing plan for {}",
                        "give me slogan ideas for {}"],
                  ["a coffee shop", "a fitness app", "a bakery opening", "an online course", "a dog grooming salon",
                   "a sustainable clothing brand", "a b2b saas product", "a local bookstore"]),
    "translate": (0.25, ["translate to spanish: {}", "translate this into german: {}", "how do you say {} in french"],
                  ["the meeting is moved to friday", "where is the train station", "I would like a table for two",
                   "thank you for your help", "the package arrived damaged", "see you next week"]),
    "physics": (0.33, ["explain {} to a 10 year old", "what is the intuition behind {}", "derive {}"],
                ["quantum entanglement", "special relativity", "entropy", "the doppler effect",
                 "the photoelectric effect", "newton's third law", "black holes", "superconductivity"]),
    "history": (0.18, ["what caused {}", "summarize {}", "who were the key figures of {}"],
                ["the first world war", "the fall of rome", "the cold war", "the industrial revolution",
                 "the renaissance", "the american civil war", "the meiji restoration", "the silk road"]),
    "gardening": (0.1, ["how do I grow {}", "why are my {} turning yellow", "when should I plant {}"],
                  ["tomatoes", "basil", "roses", "strawberries", "succulents", "peppers", "lavender", "cucumbers"]),
    "pets": (0.12, ["how do I train my {}", "what should I feed {}", "why does my {} keep scratching"],
             ["puppy to sit", "a senior cat", "rescue dog", "rabbit", "kitten", "parrot", "hamster", "golden retriever"]),
    "excel": (0.3, ["excel formula to {}", "how do I {} in google sheets", "vba macro to {}"],
              ["sum by month", "find duplicates", "lookup a value in another sheet", "split text into columns",
               "highlight overdue dates", "count unique values", "merge cells without losing data", "make a pivot"]),
    "zh_travel": (0.2, ["我想去{}旅游，有什么推荐的景点？", "{}旅游攻略，三天怎么安排？", "去{}旅游需要注意什么？"],
                  ["北京", "上海", "成都", "西安", "杭州", "桂林", "厦门", "重庆", "青岛", "丽江", "三亚", "苏州"]),
    "zh_code": (0.35, ["用Python写一个{}的程序", "{}的代码报错了，怎么解决？", "如何用Java实现{}？"],
                ["爬虫", "排序算法", "文件批量重命名", "登录功能", "数据可视化", "多线程下载", "二叉树遍历", "聊天机器人"]),
    "es_cocina": (0.1, ["dame una receta de {}", "¿cómo preparo {} en casa?", "¿cuánto tiempo se cocina {}?"],
                  ["paella", "tortilla de patatas", "gazpacho", "empanadas", "arroz con leche", "churros", "flan"]),
    "ru_study": (0.3, ["помоги решить задачу по {}", "объясни тему по {} простыми словами", "как подготовиться к экзамену по {}"],
                 ["физике", "химии", "алгебре", "истории", "биологии", "информатике", "геометрии"]),
    "ja_business": (0.25, ["{}のメールの書き方を教えてください", "{}について敬語で説明してください"],
                    ["取引先への謝罪", "会議の日程調整", "見積もりの依頼", "退職の挨拶", "新年の挨拶", "納期の遅れ"]),
    "de_admin": (0.22, ["wie beantrage ich {}", "welche unterlagen brauche ich für {}", "schreib einen brief wegen {}"],
                 ["einen neuen reisepass", "elterngeld", "eine wohnungsummeldung", "kindergeld", "einen kitaplatz",
                  "eine steuererklärung"]),
}
OPENERS = ["", "", "", "hey, ", "please ", "can you ", "quick question: ", "hi! ", "I need help: ", "urgent: "]
SUFFIXES = ["", "", "", "?", " please", " in detail", " briefly", " with examples", " for a beginner",
            " step by step", " in under 100 words", ", thanks", " (I'm new to this)", " asap"]
DSAT_FEEDBACK = ["that's wrong, try again", "this is not what I asked", "still doesn't work", "no, that's incorrect",
                 "不对，重新回答", "está mal", "das ist falsch"]
OTHER_FEEDBACK = ["thanks!", "perfect", "great, thanks", "tell me more about the history of it",
                  "and what about the second part?", "now make it shorter", "ok", "continue", "can you add an example?"]
FILLER_WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up "
         "other about out many then them these so some her would make like him into time has look two more write "
         "go see number no way could people my than first water been call who oil its now find long down day did "
         "get come made may part data model error value table system file user server report")
WORDS = FILLER_WORDS.split()


def distinct_requests(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """`n` different request texts with their theme: templates x fillers x openers x suffixes, 10% with a
    pasted paragraph (which makes them long and distinct)."""
    names = list(THEMES)
    frames = []
    have = 0
    while have < n:
        m = (n - have) * 2
        theme = rng.integers(0, len(names), m)
        texts = []
        for t in theme:
            _, templates, fillers = THEMES[names[t]]
            text = templates[rng.integers(len(templates))].format(fillers[rng.integers(len(fillers))])
            texts.append(OPENERS[rng.integers(len(OPENERS))] + text + SUFFIXES[rng.integers(len(SUFFIXES))])
        frame = pl.DataFrame({"theme": [names[t] for t in theme], "request": texts})
        pasted = rng.random(m) < 0.10
        lengths = rng.integers(40, 250, m)
        paragraphs = [" ".join(rng.choice(WORDS, k)) if p else "" for p, k in zip(pasted, lengths, strict=True)]
        # short requests also vary by a number or name now and then (real logs: "for 10 people", "in 2024")
        tags = np.where(rng.random(m) < 0.5, rng.integers(1, 2000, m).astype(str), "")
        frame = frame.with_columns(
            request=pl.when(pl.Series(pasted)).then(pl.col("request") + ":\n\n" + pl.Series(paragraphs))
            .when(pl.Series(tags) != "").then(pl.col("request") + " (" + pl.Series(tags) + ")")
            .otherwise(pl.col("request"))
        )
        frames.append(frame)
        have = pl.concat(frames).unique("request").height
    return pl.concat(frames).unique("request", keep="first", maintain_order=True).head(n)


def generate(path: Path, exchanges: int, distinct: int, seed: int) -> pl.DataFrame:
    """Write the logs (one exchange per conversation) and return the distinct requests with their theme."""
    rng = np.random.default_rng(seed)
    requests = distinct_requests(distinct, rng)
    # every distinct request at least once, the rest Zipf-like (weight 1 / (rank + 20)): popular
    # requests repeat, the most popular one ~0.7% of the exchanges
    extra = exchanges - distinct
    weight = 1.0 / (np.arange(distinct) + 20.0)
    popular = rng.choice(distinct, size=extra, p=weight / weight.sum())
    pick = np.concatenate([np.arange(distinct), popular])
    rng.shuffle(pick)
    chosen = requests[pick]
    dsat_share = chosen["theme"].replace_strict({t: v[0] for t, v in THEMES.items()}, return_dtype=pl.Float64)
    is_dsat = rng.random(exchanges) < dsat_share.to_numpy()
    feedback = np.where(is_dsat, np.array(DSAT_FEEDBACK)[rng.integers(0, len(DSAT_FEEDBACK), exchanges)],
                        np.array(OTHER_FEEDBACK)[rng.integers(0, len(OTHER_FEEDBACK), exchanges)])
    frame = pl.DataFrame({
        "id": [f"conv-{i}" for i in range(exchanges)],
        "model": np.array(["gpt-4o", "llama-3-70b", "qwen2.5-7b"])[rng.integers(0, 3, exchanges)],
        "u0": chosen["request"], "a0": pl.Series([f"Here is my answer number {i}." for i in range(exchanges)]),
        "u1": feedback,
    }).select("id", "model", messages=pl.concat_list(
        pl.struct(role=pl.lit(r), content=pl.col(c)) for r, c in (("user", "u0"), ("assistant", "a0"), ("user", "u1"))
    ))
    frame.write_parquet(path)
    return requests


_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from dsatkit.topics import TopicsConfig, build_topics
r = build_topics(sys.argv[1], TopicsConfig())
wall = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "rss_mb": hwm / 1024, "summary": r.summary.__dict__,
                  "topics": r.topics.select("topic_id", "name", "size", "dsat_rate", "group_id").rows()}, default=str))
"""


def timed_topics(store: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(store)], capture_output=True, text=True, check=False,
                          cwd=REPO)
    if proc.returncode:
        sys.exit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bare_scan(store: Path) -> float:
    """Seconds for DuckDB to read the request text of every exchange of the store."""
    from dsatkit.store import connect

    t0 = time.perf_counter()
    con = connect(store)
    con.sql("select sum(length(t.content)) from exchange_index x join turns t "
            "on t.conversation_id = x.conversation_id and t.turn_index = x.request_turn").fetchall()
    con.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=200_000)
    ap.add_argument("--distinct", type=int, default=40_000, help="different request texts among them")
    ap.add_argument("--warm-threads", type=int, default=1,
                    help="torch threads of the (untimed) cache warm-up: on a shared 2-core VM one thread encodes "
                    "~2x faster than two (OpenMP threads wait on each other when the cores are busy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="rebuild logs, store and embedding cache")
    args = ap.parse_args()
    work = OUT / f"{args.exchanges}-{args.distinct}-{args.seed}"
    store, logs = work / "mined", work / "logs.parquet"
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)

    from dsatkit.config import MineConfig
    from dsatkit.pipeline import mine
    from dsatkit.topics import TopicsConfig, build_topics

    if not (store / "dsat.duckdb").exists():
        t0 = time.perf_counter()
        requests = generate(logs, args.exchanges, args.distinct, args.seed)
        print(f"generated {args.exchanges:,} conversations, {requests.height:,} distinct requests "
              f"({requests['request'].str.len_chars().mean():.0f} chars on average) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        mine([logs], store, MineConfig(detectors=["lexical"]))
        print(f"mined (lexical) in {time.perf_counter() - t0:.1f} s")
    warm_stamp = work / "cache-warm.json"
    if not warm_stamp.exists():
        import torch

        torch.set_num_threads(args.warm_threads)
        t0 = time.perf_counter()
        first = build_topics(store, TopicsConfig())
        warm = {"seconds": time.perf_counter() - t0, "encoded": first.summary.embedded}
        warm_stamp.write_text(json.dumps(warm))
        print(f"cache warm-up (untimed): encoded {warm['encoded']:,} texts in {warm['seconds']:.0f} s "
              f"({warm['encoded'] / warm['seconds']:.0f} texts/s)")
    else:
        warm = json.loads(warm_stamp.read_text())
        print(f"cache warm-up (earlier run, untimed): encoded {warm['encoded']:,} texts in {warm['seconds']:.0f} s")

    scan = min(bare_scan(store) for _ in range(3))
    result = timed_topics(store)
    s = result["summary"]
    print(f"\nstore: {s['exchanges']:,} exchanges, {s['with_request']:,} with a request, "
          f"{s['distinct_requests']:,} distinct request texts (head {TopicsConfig().head_chars} chars)")
    print(f"topics (warm cache, fresh process, imports included): {result['wall']:.1f} s wall, "
          f"{s['exchanges'] / result['wall']:,.0f} exchanges/s, peak RSS {result['rss_mb']:.0f} MB; "
          f"encoded {s['embedded']:,}, {s['embedding_cache_hits']:,} from the cache")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["timings_s"].items()))
    sil = {int(k): round(v, 3) for k, v in (s["silhouettes"] or {}).items()}
    print(f"  k = {s['topics']} ({s['k_chosen_by']}; silhouettes {sil}), {s['groups']} groups, "
          f"{s['dissolved']} small clusters dissolved")
    print(f"bare scan of the requests: {scan:.2f} s; topics / bare scan = {result['wall'] / scan:.0f}x")
    target = 180.0 * args.exchanges / 200_000
    print(f"target: < {target:.0f} s -> {'met' if result['wall'] < target else 'MISSED'} "
          f"(load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("\nlargest topics:")
    for topic_id, name, size, rate, group_id in result["topics"][:12]:
        print(f"  {topic_id:>3} {size:>7,} dsat {rate:6.1%}  group {group_id}  {name}")


if __name__ == "__main__":
    main()
