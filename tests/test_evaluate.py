"""`eval-detectors`: labelled files in both shapes, metrics checked against hand counts and sklearn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from dsatkit.cli import main as cli
from dsatkit.config import MineConfig
from dsatkit.errors import InputError
from dsatkit.evaluate import evaluate, load_labelled, write_report
from dsatkit.schema import DETECTIONS, conform

# gold, lexical score, embedding score (categories are set, so fusion is the plain mean of the two)
ROWS = [
    ("dsat", 0.9, 0.8),  # both flag; fused .85
    ("dsat", 0.9, 0.2),  # lexical only; fused .55
    ("dsat", 0.4, 0.7),  # embedding only; fused .55
    ("dsat", 0.0, 0.1),  # missed by all
    ("sat", 0.6, 0.1),  # lexical FP; fused .35
    ("sat", 0.0, 0.0),
    ("neutral", 0.2, 0.9),  # embedding FP; fused .55 -> fused FP
    ("neutral", 0.1, 0.6),  # embedding FP; fused .35
]
# by hand, threshold 0.5:        TP FP FN TN
HAND = {"lexical": (2, 1, 2, 3), "embedding": (2, 2, 2, 2), "fused": (3, 1, 1, 3)}


class Fixed:
    """A detector whose score for exchange i is fixed by the table above."""

    version = "test"

    def __init__(self, name: str, scores: list[float]):
        self.name, self.scores = name, scores

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        s = pl.Series(self.scores)
        return conform(
            exchanges.select("exchange_id").with_columns(
                detector=pl.lit(self.name),
                score=s,
                label=s >= 0.5,
                detector_version=pl.lit(self.version),
                category=pl.when(s >= 0.5)
                .then(pl.lit("negative_feedback"))
                .otherwise(pl.lit("acknowledgment")),
            ),
            DETECTIONS,
        )


def flat(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    pl.DataFrame(rows, schema=["feedback", "label", "category"], orient="row").with_columns(
        request=pl.lit("write something"), response=pl.lit("Here it is.")
    ).write_csv(path)
    return path


def test_metrics_match_hand_counts_and_sklearn(tmp_path: Path):
    path = flat(tmp_path / "l.csv", [(f"turn {i}", g, None) for i, (g, _, _) in enumerate(ROWS)])
    labelled = load_labelled([path])
    dets = [Fixed("lexical", [r[1] for r in ROWS]), Fixed("embedding", [r[2] for r in ROWS])]
    report, table = evaluate(labelled, MineConfig(), detectors=dets)
    got = {**report["detectors"], "fused": report["fused"]}
    y = np.array([g == "dsat" for g, _, _ in ROWS])
    scores = {
        "lexical": [r[1] for r in ROWS],
        "embedding": [r[2] for r in ROWS],
        "fused": [(r[1] + r[2]) / 2 for r in ROWS],
    }
    for name, (tp, fp, fn, tn) in HAND.items():
        m = got[name]
        assert m["confusion"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}, name
        p, r = tp / (tp + fp), tp / (tp + fn)
        assert m["precision"] == pytest.approx(p) and m["recall"] == pytest.approx(r)
        assert m["f1"] == pytest.approx(2 * p * r / (p + r))
        assert m["average_precision"] == pytest.approx(average_precision_score(y, scores[name]))
    assert report["n"] == 8 and report["positives"] == 4
    assert report["labels"] == {"dsat": 4, "neutral": 2, "sat": 2}

    paths = write_report(report, table, tmp_path / "rep")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["json"].read_text())
    assert saved["fused"]["confusion"]["tp"] == 3
    assert pl.read_parquet(paths["predictions"]).height == 8


def test_eval_cli_on_real_embedding_detector(tmp_path: Path):
    # outputs of these turns are unambiguous; two gold labels are deliberately wrong so that the
    # expected confusion has every cell: TP 3, FP 1, FN 1, TN 3
    path = flat(
        tmp_path / "labels.csv",
        [
            ("you ignored my instruction to keep it short", "dsat", "ignored_instruction"),
            ("esto no sirve para nada", "dsat", "negative_feedback"),
            ("wrong, the capital of australia is canberra not sydney", "dsat", "factual_error"),
            ("спасибо, отлично", "dsat", None),  # FN
            ("perfect, that's exactly what I needed", "sat", "praise"),
            ("merci beaucoup, parfait", "sat", "gratitude"),
            ("это неправильно", "neutral", None),  # FP
            ("continue", "neutral", None),
        ],
    )
    cli(["eval-detectors", str(path), "-o", str(tmp_path / "rep"), "--detectors", "embedding"])
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    m = rep["detectors"]["embedding"]
    assert m["confusion"] == {"tp": 3, "fp": 1, "fn": 1, "tn": 3}
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["category_accuracy"] == pytest.approx(1.0) and m["category_n"] == 3
    assert rep["fused"]["confusion"] == m["confusion"]  # one detector: fusion is that detector
    assert (tmp_path / "rep" / "pr_curve.png").stat().st_size > 10_000
    assert "| embedding | 0.750 | 0.750 |" in (tmp_path / "rep" / "report.md").read_text()


def test_eval_fused_matches_predictions_table(tmp_path: Path):
    pytest.importorskip("dsatkit.detectors.lexical")
    path = flat(
        tmp_path / "labels.csv",
        [
            ("that's completely wrong", "dsat", None),
            ("thanks, that works!", "sat", None),
            ("continue", "neutral", None),
            ("no, I asked for python not java", "dsat", None),
            ("now translate it to german", "neutral", None),
            ("great answer", "sat", None),
        ],
    )
    cli(["eval-detectors", str(path), "-o", str(tmp_path / "rep"), "--threshold", "0.4",
         "--detectors", "lexical,embedding"])  # two detectors: the fused score is their mean
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    pred = pl.read_parquet(tmp_path / "rep" / "predictions.parquet")
    assert set(rep["detectors"]) == {"lexical", "embedding"} and rep["threshold"] == 0.4
    y = (pred["gold_label"] == "dsat").to_numpy()
    for name, col in (
        ("lexical", "score_lexical"),
        ("embedding", "score_embedding"),
        ("fused", "score_fused"),
    ):
        hit = pred[col].to_numpy() >= 0.4
        expected = {
            "tp": int((hit & y).sum()),
            "fp": int((hit & ~y).sum()),
            "fn": int((~hit & y).sum()),
            "tn": int((~hit & ~y).sum()),
        }
        m = rep["fused"] if name == "fused" else rep["detectors"][name]
        assert m["confusion"] == expected, name


def write_openai(path: Path, convs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    return path


def msgs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_log_format_labelled_file_picks_the_labelled_exchange(tmp_path: Path):
    two = msgs(
        ("user", "write a poem"),
        ("assistant", "Roses..."),
        ("user", "too long"),
        ("assistant", "Short roses."),
        ("user", "thanks"),
    )
    path = write_openai(
        tmp_path / "l.jsonl",
        [
            {"id": "a", "messages": two, "label": "sat"},  # default: the last exchange with feedback
            {
                "id": "b",
                "messages": two,
                "label": "DSAT",
                "category": "negative_feedback",
                "response_turn": 1,
            },
        ],
    )
    got = load_labelled([path]).sort("conversation_id")
    assert got["response_turn"].to_list() == [3, 1]
    assert got["feedback"].to_list() == ["thanks", "too long"]
    assert got["gold_label"].to_list() == ["sat", "dsat"]
    assert got["gold_category"].to_list() == [None, "negative_feedback"]
    assert got["request"].to_list() == ["too long", "write a poem"]


def test_labelled_file_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not one of dsat"):
        load_labelled([flat(tmp_path / "a.csv", [("x", "bad", None)])])
    (tmp_path / "b.csv").write_text("feedback,label\nx,dsat\n")
    with pytest.raises(InputError, match="needs columns"):
        load_labelled([tmp_path / "b.csv"])
    one = msgs(("user", "hi"), ("assistant", "hello"), ("user", "ok"))
    with pytest.raises(InputError, match="carry no 'label'"):
        load_labelled([write_openai(tmp_path / "c.jsonl", [{"id": "a", "messages": one}])])
    with pytest.raises(InputError, match="not found"):
        load_labelled([tmp_path / "missing.csv"])
