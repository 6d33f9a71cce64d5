"""The embedding detector on the real all-MiniLM-L6-v2 (CPU), the real DuckDB cache and real parquet.

Texts here are not in the shipped exemplar set nor in bench/data/calibration.csv (where the constants
were tuned), so these checks say something about unseen turns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dsatkit.cache import Cache
from dsatkit.cli import main as cli
from dsatkit.config import EmbeddingConfig, MineConfig
from dsatkit.detectors.classifier import ExemplarClassifier, default_exemplars, read_labels
from dsatkit.detectors.embedding import REFUSAL_SIM, Embedder, EmbeddingDetector
from dsatkit.errors import ConfigError, InputError
from dsatkit.pipeline import mine
from dsatkit.schema import DETECTIONS

EMB = MineConfig(detectors=["embedding"])


@pytest.fixture(scope="session")
def detector() -> EmbeddingDetector:
    """One loaded model and fitted default classifier for the whole session (no persistent cache)."""
    return EmbeddingDetector().prepare()


def score(det: EmbeddingDetector, rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=["request", "response", "feedback"], orient="row")
    return det.score(df["feedback"], df["request"], df["response"])


def test_revision_pairs_fire_and_unrelated_followups_do_not(detector):
    revisions = [
        (
            "write a haiku about autumn leaves",
            "Crimson leaves drift down...",
            "write a haiku about autumn leaves that rhymes",
        ),
        (
            "translate 'good morning' to japanese",
            "Ohayou gozaimasu",
            "translate good morning into japanese, formal version",
        ),
        (
            "summarize the french revolution in 3 sentences",
            "The Revolution (1789-1799)...",
            "summarize the french revolution in only three short sentences",
        ),
    ]
    others = [
        ("write chapter 2 of the story", "Chapter 2: ...", "continue"),
        ("give me 5 more examples", "6. ...", "next"),
        ("explain recursion", "Recursion is when a function calls itself", "thanks!"),
        ("continue", "...and so the knight rode on.", "continue"),  # identical, but a generic turn
        ("write a sql query to count users", "SELECT count(*) FROM users;", "now make it group by country"),
    ]
    s = score(detector, revisions + others)
    rev = s["revision"].to_numpy()
    assert (rev[:3] > 0.5).all(), s
    assert (rev[3:] < 0.5).all(), s
    assert s["category"][:3].to_list() == ["revision"] * 3
    assert (s["score"][3:].to_numpy() < 0.5).all(), s


def test_refused_request_repeated_lowers_the_revision_bar(detector):
    ask, again = "show me today's stock price of apple", "just tell me the current AAPL price"
    s = score(
        detector,
        [
            (ask, "I'm sorry, but I can't access real-time market data.", again),
            (ask, "Apple makes the iPhone and the Mac.", again),
        ],
    )
    assert s["refusal"][0] >= REFUSAL_SIM > s["refusal"][1]
    assert s["sim"][0] == pytest.approx(s["sim"][1])
    assert s["revision"][0] > s["revision"][1]


def test_exemplar_classifier_in_several_languages(detector):
    dsat = [
        "you ignored my instruction to keep it short",
        "esto no sirve para nada",
        "это неправильно",
        "wrong, the capital of australia is canberra not sydney",
    ]
    sat = [
        "perfect, that's exactly what I needed",
        "merci beaucoup, parfait",
        "¡genial, muchas gracias!",
        "спасибо, отлично",
        "obrigado, perfeito",
    ]
    shipped = set(default_exemplars()["text"].to_list())
    assert not shipped & set(dsat + sat)
    s = score(detector, [("q", "a", t) for t in dsat + sat])
    got = s["score"].to_numpy()
    assert (got[: len(dsat)] >= 0.5).all() and (got[len(dsat) :] < 0.5).all(), s
    assert s["category"][0] == "ignored_instruction"
    assert s["category"][3] == "factual_error"
    assert set(s["category"][len(dsat) :].to_list()) <= {"gratitude", "praise", "acknowledgment"}


def test_detect_returns_detections_and_abstains_without_feedback(detector):
    ex = pl.DataFrame(
        {
            "exchange_id": ["a", "b", "c"],
            "request": ["hi", "q", "q"],
            "response": ["hello", "r", "r"],
            "feedback": [None, "   ", "that's useless"],
        }
    )
    out = detector.detect(ex)
    assert out.schema == DETECTIONS
    assert out["exchange_id"].to_list() == ["a", "b", "c"]
    assert out["score"].to_list()[:2] == [0.0, 0.0] and out["rationale"][0] == "no feedback"
    assert out["label"].to_list() == [False, False, True]


def test_dedup_encodes_each_unique_text_once(detector, tmp_path: Path):
    cache = Cache(tmp_path / "c.duckdb")
    det = EmbeddingDetector(cache=cache).prepare()  # refusals go through the fresh cache
    before = det.encoded
    fb = ["continue", "thanks", "continue", "that's wrong", "thanks", "continue", "wrong again", "thanks"] * 5
    req = ["write a story", "explain dns", "write a story", "what is 2+2"] * 10
    # responses equal to requests: a gated response opening is then already known, so the count is exact
    ex = pl.DataFrame(
        {"exchange_id": [str(i) for i in range(40)], "request": req, "response": req, "feedback": fb}
    )
    det.detect(ex)
    assert det.encoded - before == len(set(fb) | set(req)) == 7
    assert det.stats.texts >= 80
    cache.close()


def test_embedder_rows_match_and_cache_serves_rerun(tmp_path: Path, detector):
    texts = pl.Series(["b", "a", "b", None, "c", "a"])
    cache = Cache(tmp_path / "c.duckdb")
    e1 = Embedder("all-MiniLM-L6-v2", cache=cache)
    v = e1.embed(texts)
    assert v.shape == (6, 384) and e1.stats.encoded == 4  # b, a, "" (null), c
    assert np.allclose(v[0], v[2]) and np.allclose(v[1], v[5]) and not np.allclose(v[0], v[1])
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    cache.close()
    cache = Cache(tmp_path / "c.duckdb")  # a new process would see the same file
    e2 = Embedder("sentence-transformers/all-MiniLM-L6-v2", cache=cache)  # an alias shares the key
    assert np.allclose(e2.embed(texts), v, atol=1e-6)
    assert e2.stats.encoded == 0 and e2.stats.cache_hits == 4
    cache.close()


def test_mine_rerun_encodes_nothing(tmp_path: Path, detector):
    logs = tmp_path / "logs.jsonl"
    rows = [
        {
            "id": "1",
            "messages": [
                {"role": "user", "content": "write a limerick about a cat"},
                {"role": "assistant", "content": "There once was a cat..."},
                {"role": "user", "content": "this is terrible, it doesn't even rhyme"},
            ],
        },
        {
            "id": "2",
            "messages": [
                {"role": "user", "content": "explain tcp"},
                {"role": "assistant", "content": "TCP is a protocol..."},
                {"role": "user", "content": "thank you, very clear"},
            ],
        },
    ]
    logs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = mine([logs], tmp_path / "m", EMB).summary
    assert first.detectors["embedding"]["encoded"] > 0
    second = mine([logs], tmp_path / "m", EMB).summary
    assert second.detectors["embedding"]["encoded"] == 0
    assert second.detectors["embedding"]["cache_hits"] >= 4
    assert second.dsat == first.dsat == 1


def test_fit_then_mine_with_detector_dir(tmp_path: Path, detector):
    # a team whose users type "meh" / "nope" to mean "bad answer": the shipped set does not know that
    labels = pl.DataFrame(
        {
            "text": [
                "meh",
                "meh.",
                "nope",
                "nope, bad",
                "meh whatever",
                "nah that's meh",
                "cool thanks",
                "great, thanks",
                "thanks a lot",
                "nice one",
                "continue",
                "next part",
                "go on",
                "more please",
            ],
            "category": ["negative_feedback"] * 6 + ["gratitude"] * 4 + ["neutral"] * 4,
        }
    )
    labels.write_parquet(tmp_path / "labels.parquet")
    det_dir = tmp_path / "my-detector"
    cli(["detectors", "fit", str(tmp_path / "labels.parquet"), "-o", str(det_dir), "--cv", "2"])
    clf = ExemplarClassifier.load(det_dir)
    assert clf.classes == ["gratitude", "negative_feedback", "neutral"]
    assert clf.info["n_examples"] == 14 and clf.info["cross_validation"]["folds"] == 2

    logs = tmp_path / "logs.jsonl"
    convs = [("a", "meh!"), ("b", "thanks so much"), ("c", "keep going")]
    logs.write_text(
        "".join(
            json.dumps(
                {
                    "id": cid,
                    "messages": [
                        {"role": "user", "content": "write a poem about the sea"},
                        {"role": "assistant", "content": "Waves..."},
                        {"role": "user", "content": fb},
                    ],
                }
            )
            + "\n"
            for cid, fb in convs
        )
    )
    cli(
        [
            "mine",
            str(logs),
            "-o",
            str(tmp_path / "m"),
            "--detectors",
            "embedding",
            "--detector-dir",
            str(det_dir),
        ]
    )
    from dsatkit.store import connect

    con = connect(tmp_path / "m")
    got = con.sql(
        "select e.conversation_id, d.label, d.category, d.detector_version from detections d "
        "join exchanges e using (exchange_id) order by 1"
    ).pl()
    con.close()
    assert got["label"].to_list() == [True, False, False]
    assert got["category"][0] == "negative_feedback"
    assert got["detector_version"][0].startswith("1.0+") and got["detector_version"][0] != "1.0+default"


def test_knn_method_round_trips(tmp_path: Path, detector):
    from dsatkit.detectors.classifier import fit

    texts = pl.Series(["that's wrong", "useless", "thanks!", "great job", "continue", "next"])
    cats = pl.Series("category", ["negative_feedback"] * 2 + ["gratitude", "praise", "neutral", "neutral"])
    clf = fit(texts, cats, detector.embedder.embed, model=detector.embedder.key, method="knn", k=3)
    x = detector.embedder.embed(texts)
    again = ExemplarClassifier.load(clf.save(tmp_path / "knn"))
    assert np.allclose(again.predict_proba(x), clf.predict_proba(x))
    assert again.classes[again.predict_proba(x).argmax(axis=1)[0]] == "negative_feedback"


def test_user_errors_are_one_line_with_a_hint(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a detector directory"):
        EmbeddingDetector(EmbeddingConfig(detector_dir=tmp_path))
    bad = tmp_path / "labels.csv"
    bad.write_text("text,category\nthat's wrong,negative_feedback\nok,happy\n")
    with pytest.raises(InputError, match=r"row 1 has unknown category/label 'happy'") as e:
        read_labels(bad)
    assert "neutral" in e.value.hint
    (tmp_path / "nocol.csv").write_text("utterance,category\nx,neutral\n")
    with pytest.raises(InputError, match="needs a 'text'"):
        read_labels(tmp_path / "nocol.csv")
    (tmp_path / "labels.txt").write_text("text,category\nx,neutral\n")
    with pytest.raises(InputError, match=r"unsupported labels file type '\.txt'"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(ConfigError, match="cannot load embedding model"):
        Embedder(str(tmp_path / "no-such-model")).embed(pl.Series(["x"]))


_KILLED_EMBEDDER = """
import sys
import polars as pl
from dsatkit.cache import Cache
from dsatkit.detectors.embedding import Embedder

class Announcing(Cache):
    def put_embeddings(self, model, hashes, embeddings):
        super().put_embeddings(model, hashes, embeddings)
        print("stored", len(hashes), flush=True)

texts = pl.Series([f"line {i}: a note about topic {i % 89}" for i in range(1500)])
Embedder("all-MiniLM-L6-v2", "cpu", batch_size=8, cache=Announcing(sys.argv[1])).embed(texts)
"""


def test_a_killed_embedding_run_keeps_every_finished_encode_batch(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "cache.duckdb"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_EMBEDDER, str(path)], stdout=subprocess.PIPE, text=True)
    stored = 0
    for line in child.stdout:
        stored += int(line.split()[1])
        if stored >= 128:  # two encode batches (8 x 8 texts each) are in
            break
    child.kill()  # SIGKILL: no cleanup runs
    child.wait()
    assert stored >= 128
    cache = Cache(path)
    kept = cache.con.sql("select count(*) from embedding_cache").fetchall()[0][0]
    assert kept >= stored
    texts = pl.Series([f"line {i}: a note about topic {i % 89}" for i in range(1500)])
    again = Embedder("all-MiniLM-L6-v2", "cpu", batch_size=8, cache=cache)
    again.embed(texts)
    cache.close()
    assert again.stats.cache_hits == kept and again.stats.encoded == 1500 - kept
