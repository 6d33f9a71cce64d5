"""The lexical detector: cue table integrity, output contract, and held-out labelled cases.

The cases below were written independently of bench/data/lexical_dev.jsonl (the set the cue table is
tuned on), so a cue that only fits the dev set does not make these pass.
"""

from __future__ import annotations

import polars as pl
import pytest

from dsatkit.detectors import Detector
from dsatkit.detectors.lexical import (
    _REWRITES,
    GATE_CHARS,
    PRIOR,
    LexicalDetector,
    Pass,
    compile_groups,
    load_cues,
    normalise,
)
from dsatkit.errors import ConfigError
from dsatkit.schema import DETECTIONS, EXCHANGES, conform
from dsatkit.taxonomy import DSAT_CATEGORIES, SAT_CATEGORIES


@pytest.fixture(scope="module")
def det() -> LexicalDetector:
    return LexicalDetector()


def run(det: LexicalDetector, feedback: list[str | None], request: str = "what is the capital of australia?"):
    ex = conform(
        pl.DataFrame({"exchange_id": [f"e{i}" for i in range(len(feedback))], "feedback": feedback,
                      "request": [request] * len(feedback), "response": ["Sydney."] * len(feedback)},
                     schema_overrides={"feedback": pl.String}),
        EXCHANGES,
    )
    return det.detect(ex)


# (feedback, expected DSAT label, expected category or None for "any")
DSAT = [
    ("wrong", "negative_feedback"), ("nope thats wrong", None), ("ur answer is incorrect", None),
    ("incorrect, it's canberra", "factual_error"), ("no, i meant the capital city not the biggest", "revision"),
    ("thats not what i asked", "ignored_instruction"), ("you didnt include the prices", "ignored_instruction"),
    ("still doesnt work", "factual_error"), ("try again", "revision"), ("again??", None),
    ("are you stupid", "negative_feedback"), ("useless", "negative_feedback"),
    ("i said in python, not java", "ignored_instruction"), ("read my question again", "ignored_instruction"),
    ("not helpful", "negative_feedback"), ("you forgot the last step", "ignored_instruction"),
    ("i asked for 3 not 5", "ignored_instruction"), ("shorter please", "ignored_instruction"),
    ("wow great, still wrong", None), ("thanks for nothing", "negative_feedback"), ("genius...", None),
    ("great job, it still crashes", None), ("wrong, try again", None), ("again, but shorter", None),
    ("I get this error: TypeError: 'NoneType' object is not subscriptable", "factual_error"),
    ("forget it", "no_engagement"), ("yes you can, just do it", "unrealistic_expectation"),
    ("不对", None), ("错了，应该是堪培拉", None), ("不是这个意思", "revision"), ("你没有回答我的问题", None),
    ("重新写一个", "revision"), ("还是不行", None),
    ("неправильно", None), ("это не то", None), ("ты не понял вопрос", None), ("опять ошибка", None),
    ("está mal", None), ("no es lo que pedí", "revision"), ("sigue sin funcionar", None),
    ("c'est faux", None), ("ce n'est pas ce que j'ai demandé", None), ("ça marche toujours pas", None),
    ("das ist falsch", None), ("nicht das was ich wollte", "revision"), ("funktioniert immer noch nicht", None),
    ("está errado", None), ("não foi isso que eu pedi", None), ("não funcionou", None),
    ("sbagliato", None), ("違います", None), ("틀렸어요", None), ("yanlış", None), ("هذا خطأ", None),
]
NOT_DSAT = [
    "continue", "go on", "next", "and?", "more", "thanks, but one more thing", "no problem", "not bad",
    "no worries", "no, that's all, thanks", "how do i make pancakes without eggs?",
    'translate "this is wrong, try again" into german', "thanks!", "thx", "ty", "perfect", "great, that works",
    "got it", "makes sense", "谢谢", "спасибо", "gracias", "merci", "danke", "obrigado",
    "write a story about a pretty cat", "ok", "继续", "продолжай", "perfecto, gracias", "awesome, now add a footer",
    "what is the population of canberra?", None, "",
]
SAT_CATS = [("thank you so much", "gratitude"), ("perfect", "praise"), ("oh i see, that makes sense", "learning"),
            ("continue", "compliance"), ("ok", "acknowledgment")]


def test_detector_protocol_and_version(det):
    assert isinstance(det, Detector)
    assert det.name == "lexical" and det.version.count(".") == 2


def test_cue_table_loads_and_every_pattern_compiles(det):
    cues, version = load_cues()
    assert cues.height > 100 and version == det.version
    assert set(cues["language"]) >= {"en", "zh", "ru", "es", "fr", "de", "pt"}
    assert set(cues["kind"]) == {"whole", "initial", "anywhere"}
    # each pattern alone compiles in Polars' engine (the groups compile too: det.groups)
    pl.select(pl.lit("x").str.contains(p).alias(str(i)) for i, p in enumerate(cues["pattern"]))
    assert det.groups.height >= 10
    # a Unicode \b drops the regex engine off its fast DFA; the compiler adds boundaries itself
    assert not cues.filter(pl.col("pattern").str.contains(r"\\b", literal=True)).height


def test_a_broken_cue_table_is_rejected(tmp_path):
    bad = tmp_path / "cues.csv"
    bad.write_text('# version: 0.0.1\nlanguage,category,polarity,kind,weight,pattern\nen,nonsense,dsat,whole,0.9,"x"\n')
    with pytest.raises(ConfigError, match="invalid cue rows"):
        load_cues(bad)
    bad.write_text('# version: 0.0.1\nlanguage,category,polarity,kind,weight,pattern\nen,revision,dsat,whole,0.9,"(x"\n')
    with pytest.raises(ConfigError, match="bad pattern"):
        compile_groups(load_cues(bad)[0])


def test_output_contract(det):
    fb = [c for c, _ in DSAT] + NOT_DSAT
    out = run(det, fb)
    assert out.schema == DETECTIONS
    assert out.height == len(fb) and out["exchange_id"].to_list() == [f"e{i}" for i in range(len(fb))]
    assert out["score"].is_between(0, 1).all() and (out["label"] == (out["score"] >= 0.5)).all()
    assert (out["detector"] == "lexical").all() and (out["detector_version"] == det.version).all()
    fired = out.filter(pl.col("category").is_not_null())
    assert fired["rationale"].is_not_null().all() and fired["rationale"].str.len_chars().max() <= 80
    dsat_cat = pl.col("category").is_in(DSAT_CATEGORIES)
    assert out.filter(dsat_cat)["score"].min() > PRIOR
    assert out.filter(pl.col("category").is_in(SAT_CATEGORIES))["score"].max() < PRIOR


@pytest.mark.parametrize(("feedback", "category"), DSAT)
def test_dsat_cases(det, feedback, category):
    row = run(det, [feedback]).row(0, named=True)
    assert row["label"], row
    if category:
        assert row["category"] == category, row


@pytest.mark.parametrize("feedback", NOT_DSAT)
def test_not_dsat_cases(det, feedback):
    row = run(det, [feedback]).row(0, named=True)
    assert not row["label"], row


@pytest.mark.parametrize(("feedback", "category"), SAT_CATS)
def test_sat_categories(det, feedback, category):
    row = run(det, [feedback]).row(0, named=True)
    assert row["category"] == category and row["score"] < PRIOR, row


def test_null_and_unrelated_feedback_abstain(det):
    out = run(det, [None, "", "   ", "what's the weather like on mars?"])
    assert out["category"].to_list() == [None] * 4 and out["score"].to_list() == [PRIOR] * 4


def test_repeating_the_request_is_a_revision(det):
    req = "write a haiku about autumn leaves"
    out = run(det, [req, req + " but make it funny", "write a haiku about spring"], request=req)
    assert out["category"].to_list()[:2] == ["revision", "revision"] and out["label"].to_list() == [True, True, False]


def test_negation_inside_code_is_masked(det):
    out = run(det, ["```python\n# this is wrong\nx = 1\n```\nexplain this code", "explain this code"])
    assert out["score"].to_list()[0] == out["score"].to_list()[1]


def test_works_on_a_frame_without_request(det):
    ex = conform(pl.DataFrame({"exchange_id": ["a", "b"], "feedback": ["wrong", "thanks"], "response": ["x", "y"]}),
                 EXCHANGES).drop("request")
    assert det.detect(ex)["label"].to_list() == [True, False]


def test_long_pasted_material_counts_less_than_own_words(det):
    trace = "Traceback (most recent call last):\n" + '  File "app.py", line 3, in <module>\n' * 15 + "KeyError: 7"
    doc = "Summarize this article:\n\n" + "The plan was wrong and the new route does not work on weekends. " * 10
    out = run(det, [
        "still getting this error:\n" + trace,  # own words say it failed again
        "new question: my bot crashes with this\n\n" + trace,  # a new topic with a pasted first error
        doc,  # cue words deep inside a pasted document
        "I'll try it tonight, and if that doesn't work I'll ask again",  # a conditional, not a failure
    ])
    assert out["label"].to_list() == [True, False, False, False]


def test_passes_cover_every_group_once_within_the_gate_size(det):
    covered = sorted(i for p in det.passes for i in p.groups)
    assert covered == list(range(det.groups.height))
    kinds = det.groups["kind"].to_list()
    for p in det.passes:
        assert len({kinds[i] == "anywhere" for i in p.groups}) == 1  # anchored and gated groups never mix
        if not p.anchored and len(p.groups) > 1:
            assert sum(len(det.groups["regex"][i]) for i in p.groups) <= GATE_CHARS
    assert len(det.passes) < det.groups.height / 2


def test_merged_passes_score_as_one_pass_per_group(det):
    """The merged anchored passes and the gates give what each group's regex alone gives, also on turns
    where several cues fire and a weaker one comes first."""
    one_each = LexicalDetector()
    one_each.passes = [Pass(regex, (i,), anchored=False) for i, regex in enumerate(one_each.groups["regex"])]
    phrases = [f for f, _ in DSAT] + [f for f in NOT_DSAT if f] + [f for f, _ in SAT_CATS]
    seps = [" ", ", ", ". ", " but ", "!! ", "\n", " 👍 ", "... "]
    turns = [a + seps[(i + j) % len(seps)] + b for i, a in enumerate(phrases) for j, b in enumerate(phrases[::7])]
    turns += [t.upper() for t in turns[::5]] + ["?? " + t for t in turns[::11]] + phrases
    assert run(det, turns).equals(run(one_each, turns))


def test_a_cue_table_whose_groups_share_capture_names_still_scores(tmp_path):
    """Named groups clash once groups are merged: those groups then get a pass of their own."""
    cues = tmp_path / "cues.csv"
    cues.write_text(
        "# version: 0.0.1\nlanguage,category,polarity,kind,weight,pattern\n"
        'en,negative_feedback,dsat,anywhere,0.9,"(?P<w>wrong)"\n'
        'en,factual_error,dsat,anywhere,0.8,"(?P<w>incorrect)"\n'
        'en,negative_feedback,dsat,whole,0.95,"(?P<w>no)"\n'
        'en,revision,dsat,whole,0.7,"(?P<w>again)"\n'
        'en,gratitude,sat,anywhere,0.9,"thanks"\n'
    )
    det = LexicalDetector(cues)
    assert sorted(i for p in det.passes for i in p.groups) == list(range(det.groups.height))
    out = run(det, ["that is wrong", "incorrect", "no", "again", "thanks", "what?"])
    assert out["category"].to_list() == [
        "negative_feedback", "factual_error", "negative_feedback", "revision", "gratitude", None
    ]


def test_texts_the_rewrite_prefilter_passes_over_normalise_to_lower_case_and_strip_only():
    """detect() only lower-cases and strips a text where `_REWRITES` finds nothing; that must be all
    `normalise` would have done to it, also for upper-case conditionals and Unicode whitespace."""
    frags = ["IF IT DOESN'T WORK", "if that fails", "When it crashes", "\u00a0", "\t", "  ", "\n", "```code```",
             "'quoted wrong'", "“wrong”", "«faux»", "「错了」", "it’s wrong", "don´t", "`x`", "MAYBE it is wrong",
             "In Case they break", "wrong", "Still WRONG", "спасибо", "不对", " padded "]
    texts = [a + sep + b for a in frags for b in frags for sep in (" ", "", ", ")] + frags
    frame = pl.DataFrame({"t": texts}).with_columns(
        plain=pl.col("t").str.contains(_REWRITES).not_(),
        full=normalise(pl.col("t")),
        quick=normalise(pl.col("t"), rewrite=False),
    )
    plain = frame.filter("plain")
    assert plain.height > 20 and plain["full"].equals(plain["quick"])
    assert frame.filter(pl.col("full") != pl.col("quick"))["plain"].not_().all()
