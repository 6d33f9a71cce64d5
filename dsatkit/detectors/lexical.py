"""Lexical DSAT detector: a multilingual cue table, compiled into a few big regexes.

The cue table (`data/lexical_cues.csv`) is data, one row per cue: language, category, polarity, kind,
weight, pattern. Cues of one (category, kind, weight) are OR-ed into a single regex (a group), and the
groups into a dozen passes over the distinct feedback texts (`compile_passes`), so scoring two million
feedback turns is a dozen vectorised Polars string passes, never a Python loop over rows.

Kinds: `whole` must match the whole (normalised) turn, give or take punctuation and emoji; `initial`
must match at the start of the turn; `anywhere` matches anywhere. Patterns of space-separated
languages get word boundaries added, so `ty` does not fire inside `pretty`.

Scoring: the strongest DSAT cue gives P(DSAT) = its weight; the strongest SAT cue gives
P(DSAT) = (1 - weight) / 2. When both fire, DSAT wins if a contrast word (but, still, yet, ...) is in
the turn ("great job, it still crashes") or its weight is at least the SAT weight. No cue: the
detector abstains (category null, score = PRIOR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import polars as pl

from dsatkit.detectors import Detector
from dsatkit.errors import ConfigError
from dsatkit.schema import DETECTIONS, conform
from dsatkit.taxonomy import CATEGORIES, POLARITY

PRIOR = 0.15
"""Score when no cue fires (the detector abstains)."""
MAX_CHARS = 2000
"""Feedback is cut to this many characters before matching: cues live near the start, and it bounds cost."""
RATIONALE_CHARS = 80
REPEAT_WEIGHT = 0.75
"""P(DSAT) when the feedback re-sends the request (or starts with it and adds a refinement)."""
REPEAT_CHARS = 200
"""Only the request's first characters are compared: a long request that is re-sent differs later rarely."""
LONG_CHARS = 400
"""A longer feedback usually carries pasted material (code, a traceback, a document, a role-play brief)."""
HEAD_CHARS = 300
"""Of a long feedback only the user's own opening is matched: up to the first paste boundary (a blank
line, a line ending in a colon, a code fence), at most this many characters."""
LONG_DISCOUNT = 0.15
"""Subtracted from the DSAT cue weight of a long feedback: a long turn is mostly a new task with content."""
NEW_TOPIC_DISCOUNT = 0.4
"""Subtracted from the DSAT cue weight when the turn announces a new topic ("new question: ...",
"first time I see this error"): the error it pastes is not about the response."""
KINDS = ("whole", "initial", "anywhere")
COLUMNS = ("language", "category", "polarity", "kind", "weight", "pattern")
# Languages written without spaces between words get no \b around their patterns.
UNSPACED = frozenset({"zh", "ja", "ko", "ar", "th"})
CUES_PATH = Path(str(resources.files("dsatkit.detectors") / "data" / "lexical_cues.csv"))

# "great job, but it still crashes": a contrast word lets a DSAT cue beat a SAT cue in the same turn.
CONTRAST = (
    r"\b(?:but|still|yet|however|though|although|except|again)\b|但是|可是|不过|还是|仍然|依然"
    r"|\b(?:но|однако|опять|всё ещё|все еще|pero|todavía|todavia|aún|aun|sigue|mais|toujours|pourtant"
    r"|aber|immer noch|trotzdem|doch|mas|porém|porem|ainda|però|ancora|ama|fakat|hala|hâlâ)\b"
    r"|でも|しかし|けど|まだ|하지만|그런데|근데|아직|لكن|بس"
)
# Quoted or code text is masked so that negations inside it ("translate 'this is wrong'") do not fire.
_CODE = r"```[\s\S]*?(?:```|$)"
_QUOTED = r"(?:^|\s)'[^'\n]+'|`[^`\n]+`|\"[^\"\n]+\"|“[^”\n]+”|«[^»\n]+»|「[^」\n]+」"
_TRAIL = r"[\s\p{P}\p{S}]*"
# a paste boundary in a long turn: what follows is material, not the user's reaction
_PASTE = r"^([\s\S]*?)(?:\n[ \t]*\n|:[ \t]*\r?\n|```)"
# "if that doesn't work I'll ...": a conditional, not a report that it failed
_CONDITIONAL = (
    r"(?:^|[^\pL])(?:if|in case|when|unless|whether|maybe) (?:it|that|this|the \w+|they|you|i|we) "
    r"(?:doesn't|does not|didn't|did not|won't|isn't|fails?|crash\w*|breaks?|is wrong)"
)
NEW_TOPIC = (
    r"^(?:new question|different question|another question|next question|unrelated(?: question)?|separate question"
    r"|quick question|other question|btw|by the way|otra pregunta|autre question|andere frage|outra pergunta"
    r"|другой вопрос|новый вопрос|新问题|另一个问题|换个问题)[:,.!? -]"
    r"|first time|for the first time|впервые|第一次|primera vez|premi[eè]re fois|zum ersten mal|primeira vez"
)
# Word boundaries as consuming classes: a Unicode `\b` makes the regex engine leave its fast DFA on
# non-ASCII text (measured: ~3k turns/s instead of ~10^5).
_HEAD = r"(?:^|[^\pL\pN_])"
_TAIL = r"(?:$|[^\pL\pN_])"  # punctuation, emoji and space allowed around a whole-turn cue


def load_cues(path: str | Path = CUES_PATH) -> tuple[pl.DataFrame, str]:
    """Read and validate the cue table; return it with its version (from its `# version:` line)."""
    text = Path(path).read_text(encoding="utf-8")
    found = re.search(r"^#\s*version:\s*(\d+\.\d+\.\d+)", text, flags=re.MULTILINE)
    if not found:
        raise ConfigError(f"{path}: no '# version: X.Y.Z' line in the cue table")
    cues = pl.read_csv(path, comment_prefix="#", schema_overrides={"weight": pl.Float64}, quote_char='"')
    missing = set(COLUMNS) - set(cues.columns)
    if missing:
        raise ConfigError(f"{path}: cue table lacks columns {sorted(missing)}")
    bad = cues.filter(
        ~pl.col("category").is_in(CATEGORIES)
        | ~pl.col("kind").is_in(KINDS)
        | (pl.col("polarity") != pl.col("category").replace_strict(POLARITY, default=None))
        | ~pl.col("weight").is_between(0.0, 1.0)
        | pl.col("pattern").is_null()
    )
    if bad.height:
        raise ConfigError(f"{path}: {bad.height} invalid cue rows, first: {bad.row(0)}")
    return cues.select(COLUMNS), found.group(1)


def _branches(pattern: str) -> list[str]:
    """Split a regex on its top-level `|` (outside groups and character classes)."""
    out, depth, in_class, start, i = [], 0, False, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*out, pattern[start:]]


def _bounded(patterns: list[str], languages: list[str]) -> str:
    """OR the patterns of one group, with word boundaries where a branch starts/ends with a letter of a
    space-separated language. Branches are pooled by the boundaries they need, so the (large) Unicode
    boundary class appears at most four times per regex instead of once per branch."""
    pools: dict[tuple[bool, bool], list[str]] = {}
    for pattern, language in zip(patterns, languages, strict=True):
        for b in _branches(pattern):
            spaced = language not in UNSPACED
            head = spaced and (b[:1].isalnum() or b[:1] == "(")
            tail = spaced and (b[-1:].isalnum() or (b.endswith(")") and not b.endswith("\\)")))
            pools.setdefault((head, tail), []).append(b)
    return "|".join(
        f"{_HEAD if head else ''}(?:{'|'.join(bs)}){_TAIL if tail else ''}" for (head, tail), bs in pools.items()
    )


def _regex_error(regex: str) -> str | None:
    """Why Polars' regex engine rejects `regex`, or None when it compiles."""
    try:
        pl.select(pl.lit("").str.contains(regex))
    except pl.exceptions.ComputeError as err:
        return str(err)
    return None


def _check(regex: str, category: str, kind: str) -> None:
    """Fail at load time, naming the group, if Polars' regex engine rejects a pattern."""
    if (err := _regex_error(regex)) is not None:
        raise ConfigError(f"lexical cue table: bad pattern in ({category}, {kind}): {err}")


def _regex(kind: str, body: str, capture: str = "") -> str:
    """A group's regex, its body captured (under `capture`, when given); whole and initial ones get
    their `^` from the caller."""
    group = f"(?P<{capture}>{body})" if capture else f"({body})"
    if kind == "whole":
        return f"{_TRAIL}{group}{_TRAIL}$"
    if kind == "initial":
        return f"{_TRAIL}{group}"
    return group


def compile_groups(cues: pl.DataFrame) -> pl.DataFrame:
    """One regex per (polarity, category, kind, weight), strongest first (ties: taxonomy order)."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    rows = []
    for (category, kind, weight), g in cues.group_by(["category", "kind", "weight"], maintain_order=True):
        body = _bounded(g["pattern"].to_list(), g["language"].to_list())
        regex = f"^{_regex(kind, body)}" if kind != "anywhere" else _regex(kind, body)
        _check(regex, category, kind)
        rows.append((POLARITY[category], category, kind, weight, regex, body, order[category]))
    groups = pl.DataFrame(
        rows, schema=["polarity", "category", "kind", "weight", "regex", "body", "order"], orient="row"
    )
    return groups.sort(["weight", "order"], descending=[True, False]).drop("order")


GATE_CHARS = 3500
"""Most characters of `anywhere` group regexes OR-ed into one gate. The regex engine's lazy DFA thrashes
its cache on bigger alternations, the more so the more cues the texts hold (measured: the 21k
characters of all DSAT groups as one gate, ~1000x slower than their own regexes; a 6k gate over
cue-dense multilingual turns, 6x slower; 3.5k gates, faster than their groups' regexes on both the
benchmark's turns and the cue-dense ones)."""


@dataclass(frozen=True)
class Pass:
    """One regex pass over the texts, standing for `groups` (indices into the group table).

    `anchored`: the groups' `whole` or `initial` regexes as alternatives of one regex anchored at the
    start, strongest first; the regex engine prefers the earliest alternative that matches, so the
    pass finds the strongest group of the set (the only one `_strongest` reads), with its capture.
    Otherwise a gate: the OR of the groups' `anywhere` bodies; each group's own regex then runs on the
    texts the gate let through only (most feedback turns hold no cue at all).
    """

    regex: str
    groups: tuple[int, ...]
    anchored: bool


def _capture(i: int) -> str:
    return f"cue{i}"


def compile_passes(groups: pl.DataFrame) -> list[Pass]:
    """The passes that evaluate `groups` (from `compile_groups`); every group is in exactly one."""
    passes = []
    indexed = groups.with_row_index("i")
    for (_, kind), sub in indexed.group_by("polarity", "kind", maintain_order=True):
        if kind == "anywhere":
            chunk: list[tuple[int, str]] = []
            for i, regex in sub.select("i", "regex").iter_rows():
                if chunk and sum(len(r) for _, r in chunk) + len(regex) > GATE_CHARS:
                    passes += _gate(chunk)
                    chunk = []
                chunk.append((i, regex))
            passes += _gate(chunk)
        else:
            members = list(sub.select("i", "regex", "body").iter_rows())
            alternatives = "|".join(_regex(kind, body, _capture(i)) for i, _, body in members)
            merged = Pass(f"^(?:{alternatives})", tuple(i for i, _, _ in members), anchored=True)
            if _regex_error(merged.regex) is None:
                passes.append(merged)
            else:  # e.g. cue patterns with clashing named groups: one pass per group
                passes += [Pass(regex, (i,), anchored=False) for i, regex, _ in members]
    return passes


def _gate(chunk: list[tuple[int, str]]) -> list[Pass]:
    gate = Pass("|".join(f"(?:{r})" for _, r in chunk), tuple(i for i, _ in chunk), anchored=False)
    if len(chunk) == 1 or _regex_error(gate.regex) is None:
        return [gate]
    return [Pass(r, (i,), anchored=False) for i, r in chunk]  # e.g. clashing named groups


_REWRITES = r"```|['\"`“«「’‘´ʼ]|\s\s|[^\S ]|(?i:if|in case|when|unless|whether|maybe) "
"""What `normalise` may rewrite besides case (code fences, quotes, apostrophes, a conditional's
opening, whitespace runs): a text with none of it only needs lower-casing and stripping."""


def normalise(text: pl.Expr, max_chars: int = MAX_CHARS, rewrite: bool = True) -> pl.Expr:
    """Lower-case, mask code and quotes, unify apostrophes, collapse whitespace, strip.

    `rewrite=False` only lower-cases and strips: all that texts without `_REWRITES` need."""
    text = text.str.slice(0, max_chars).str.to_lowercase()
    if rewrite:
        text = (
            text.str.replace_all(_CODE, " ")
            .str.replace_all(_QUOTED, " ‹q› ")
            .str.replace_all(r"[’‘´ʼ]", "'")
            .str.replace_all(_CONDITIONAL, " ‹if› ")
            .str.replace_all(r"\s\s+|[^\S ]", " ")  # rewrite only runs and non-space whitespace: most turns need none
        )
    return text.str.strip_chars()


def _normalised(feedback: pl.DataFrame) -> pl.DataFrame:
    """Distinct feedback texts -> (feedback, _text: what the cues are matched on, _long, _head).

    One lazy query: Polars runs its independent branches side by side (as eager steps, the main
    thread ran them one after another: measured 0.37 -> 0.24 s per 1M conversations)."""
    fb = pl.col("feedback")
    distinct = feedback.lazy().with_columns(_long=fb.str.len_chars() > LONG_CHARS)
    # a long turn is mostly pasted material: match only the user's own opening, and trust it less
    # (the paste-boundary regex is costly, so it only sees the long turns)
    long_own = fb.str.extract(_PASTE, 1).fill_null(fb).str.slice(0, HEAD_CHARS)
    own = pl.concat([
        distinct.filter(~pl.col("_long")).with_columns(_own=fb),
        distinct.filter("_long").with_columns(_own=long_own),
    ]).with_columns(_plain=pl.col("_own").str.contains(_REWRITES).not_())
    # most turns hold nothing `normalise` rewrites besides case: those skip the rewriting passes
    return (
        pl.concat([
            own.filter("_plain").with_columns(_text=normalise(pl.col("_own"), rewrite=False)),
            own.filter(~pl.col("_plain")).with_columns(_text=normalise(pl.col("_own"))),
        ])
        .filter(pl.col("_text").str.len_bytes() > 0)
        .select("feedback", "_text", "_long", _head=head(fb))
        .collect()
    )


def head(text: pl.Expr) -> pl.Expr:
    """A turn's first characters, for a cheap test of whether it could repeat another."""
    return text.str.strip_chars().str.slice(0, 4).str.to_lowercase()


class LexicalDetector(Detector):
    """Scores the user's feedback turn with the cue table; abstains (category null) when nothing fires.

    Input columns: exchanges.exchange_id, feedback (request when present). Output: detections."""

    name = "lexical"

    def __init__(self, cues_path: str | Path = CUES_PATH):
        self.cues, self.version = load_cues(cues_path)

    @cached_property
    def groups(self) -> pl.DataFrame:
        return compile_groups(self.cues)

    @cached_property
    def passes(self) -> list[Pass]:
        return compile_passes(self.groups)

    def _strongest(self, polarity: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
        """Weight, category and matched text of the strongest cue of one polarity (nulls if none).

        Reads the hit columns `_h{i}` (one per group) that `_score_texts` materialised."""
        groups = self.groups.with_row_index("i").filter(pl.col("polarity") == polarity)
        hits = [pl.col(f"_h{i}") for i in groups["i"]]
        fired = [h.is_not_null() for h in hits]
        weights = [pl.when(f).then(pl.lit(w)) for f, w in zip(fired, groups["weight"], strict=True)]
        cats = [pl.when(f).then(pl.lit(c)) for f, c in zip(fired, groups["category"], strict=True)]
        # groups are sorted strongest first, so the first non-null weight/category/text is the
        # strongest cue (coalesce stops at it; a max over all of them costs ~30% more)
        return pl.coalesce(weights), pl.coalesce(cats), pl.coalesce(hits)

    def _score_texts(self, texts: pl.DataFrame) -> pl.DataFrame:
        """Cue evidence for the distinct normalised feedback texts (column `_text`) where a cue fires;
        texts without one are left out (the caller's left join gives them null evidence)."""
        text = pl.col("_text")
        # most feedback holds no cue at all: plain matches (the regex engine's DFA alone) find the
        # texts that do, and only those get the costly part: captures, a column per group, the
        # strongest cue (measured: that part was half the detector's time on the benchmark's turns)
        matched = [text.str.contains(p.regex).alias(f"_m{j}") for j, p in enumerate(self.passes)]
        texts = texts.with_columns(matched).filter(pl.any_horizontal(pl.col(r"^_m\d+$")))
        # a gate that let no text through needs none of its groups' regexes: Polars compiles each
        # regex again once 32 others were used on the thread, and there are more groups than that
        fired = texts.select(pl.col(r"^_m\d+$").any()).row(0) if texts.height else [False] * len(self.passes)
        first, hits = [], []
        for j, p in enumerate(self.passes):
            if p.anchored:
                first.append(text.str.extract_groups(p.regex).alias(f"_p{j}"))
                hits += [pl.col(f"_p{j}").struct.field(_capture(i)).alias(f"_h{i}") for i in p.groups]
            elif len(p.groups) == 1:
                hits.append(text.str.extract(p.regex, 1).alias(f"_h{p.groups[0]}"))
            elif not fired[j]:
                hits += [pl.lit(None, pl.String).alias(f"_h{i}") for i in p.groups]
            else:  # the texts the gate lets through, null elsewhere (string kernels skip nulls)
                first.append(pl.when(f"_m{j}").then(text).alias(f"_p{j}"))
                hits += [pl.col(f"_p{j}").str.extract(self.groups["regex"][i], 1).alias(f"_h{i}") for i in p.groups]
        live = texts.with_columns(
            first, _contrast=text.str.contains(CONTRAST), _new_topic=text.str.contains(NEW_TOPIC)
        ).with_columns(hits)
        d_w, d_cat, d_hit = self._strongest("dsat")
        s_w, s_cat, s_hit = self._strongest("sat")
        return live.select(
            "_text", "_contrast", "_new_topic", d_w=d_w, d_cat=d_cat, d_hit=d_hit, s_w=s_w, s_cat=s_cat, s_hit=s_hit
        )

    def detect(self, exchanges: pl.DataFrame) -> pl.DataFrame:
        """One DETECTIONS row per exchange, in input order."""
        request = pl.col("request") if "request" in exchanges.columns else pl.lit(None, pl.String)
        rows = exchanges.select("exchange_id", "feedback", _req=request)
        # real logs repeat feedback ("continue", "thanks", "wrong") thousands of times: normalise and
        # match each distinct text once
        texts = _normalised(rows.select(pl.col("feedback").drop_nulls().unique()))
        evidence = texts.join(
            self._score_texts(texts.select(pl.col("_text").unique())), on="_text", how="left"
        )
        scored = rows.join(evidence, on="feedback", how="left", maintain_order="left")
        # the user re-sends (or extends) the request: a rephrase of the same ask. Normalising every
        # request is costly; only rows whose first characters agree can repeat it.
        same_start = head(pl.col("_req")) == pl.col("_head")
        candidate = (pl.col("_text").is_not_null() & same_start).fill_null(False)
        req = normalise(pl.col("_req"), REPEAT_CHARS)
        scored = scored.with_row_index("_row")
        repeats = scored.filter(candidate).select(
            "_row", _repeat=(req.str.len_chars() >= 12) & pl.col("_text").str.starts_with(req)
        )
        scored = scored.join(repeats, on="_row", how="left", maintain_order="left").with_columns(
            pl.col("_repeat").fill_null(False)
        )
        repeat_wins = pl.col("_repeat") & (pl.col("d_w").is_null() | (pl.col("d_w") < REPEAT_WEIGHT))
        scored = scored.with_columns(
            d_w=pl.when(repeat_wins).then(pl.lit(REPEAT_WEIGHT)).otherwise("d_w"),
            d_cat=pl.when(repeat_wins).then(pl.lit("revision")).otherwise("d_cat"),
            d_hit=pl.when(repeat_wins).then(pl.lit("<repeats the request>")).otherwise("d_hit"),
        )
        discount = pl.when(pl.col("_long")).then(LONG_DISCOUNT).otherwise(0.0) + pl.when(
            "_new_topic"
        ).then(NEW_TOPIC_DISCOUNT).otherwise(0.0)
        scored = scored.with_columns(d_w=pl.col("d_w") - discount.fill_null(0.0))
        dsat_wins = pl.col("d_w").is_not_null() & (
            pl.col("s_w").is_null() | pl.col("_contrast").fill_null(False) | (pl.col("d_w") >= pl.col("s_w"))
        )
        sat_wins = pl.col("s_w").is_not_null() & ~dsat_wins
        score = (
            pl.when(dsat_wins).then("d_w").when(sat_wins).then((1 - pl.col("s_w")) / 2).otherwise(pl.lit(PRIOR))
        )
        out = scored.select(
            "exchange_id",
            detector=pl.lit(self.name),
            score=score,
            label=score >= 0.5,
            category=pl.when(dsat_wins).then("d_cat").when(sat_wins).then("s_cat"),
            rationale=pl.when(dsat_wins).then("d_hit").when(sat_wins).then("s_hit")
            .str.strip_chars(" ,.!?;:").str.slice(0, RATIONALE_CHARS),
            detector_version=pl.lit(self.version),
        )
        return conform(out, DETECTIONS)
