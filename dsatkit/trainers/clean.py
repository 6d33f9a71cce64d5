"""Chosen samples that fit the prompt they are trained on.

A DRIFT chosen sample is generated after the user's dissatisfied turn ("that's wrong ... write an
improved response") but is trained as the answer to the ORIGINAL prompt, where no previous answer,
feedback or correction exists. Small chat models often talk about the repair instead of doing it
("Here's a revised version:", "I've made a few adjustments to the original response", "The user
requested a correction") or ignore the task ("I'm ready to assist you with any question").

`clean_samples` finds them with the meta-talk table (`data/meta_talk.csv`: patterns in en, zh, es, fr,
de, ko, ja, pt, ru) plus a length/overlap check, all as Polars regex over the whole column:

- a leading revision preamble (optionally after an opener such as "Sure!") and a trailing closing
  about the revision are stripped when what is left stands alone (reason counted: `preamble_stripped`);
- the sample is dropped, counted by reason, when nothing stands alone after the strip
  (`preamble_only`), when meta-talk is left anywhere (`meta_talk`), when what is left opens without
  engaging with the request (`no_engagement`), or when it is short and shares no content word with a
  long request (`off_topic`).

Input columns: the sample text and the request (the prompt's last user turn). Output: the same frame
with the sample text cleaned, the kept rows only.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import polars as pl
from pydantic import Field

from dsatkit.config import StrictModel
from dsatkit.errors import ConfigError

META_TALK_PATH = Path(str(resources.files("dsatkit.trainers") / "data" / "meta_talk.csv"))
KINDS = ("opener", "preamble", "closing", "meta", "no_engagement")
REASONS = ("preamble_only", "meta_talk", "no_engagement", "off_topic")
"""The drop reasons, in the order they are tested (a sample counts under the first that applies)."""
_CONTENT_WORD = r"[\p{L}\p{N}_]{4,}"
_WORD = r"[\p{L}\p{N}_]+"
_DECOR = r"[\s*_#>\"“”]*"  # markdown emphasis, headings and quotes around a preamble


class CleanSpec(StrictModel):
    """`sampler.clean`: how DRIFT's sampled chosen responses are checked against their original prompt."""

    enabled: bool = Field(True, description="check the chosen samples of drift rounds (not precomputed ones)")
    strip: bool = Field(
        True, description="strip a leading revision preamble / trailing closing when the rest stands alone; "
        "false drops such samples as preamble_only"
    )
    min_request_words: int = Field(
        5, ge=1, description="the overlap check applies to requests with at least this many content words "
        "(runs of 4+ letters or digits)"
    )
    max_off_topic_words: int = Field(
        12, ge=0, description="a sample of at most this many words that shares no content word with such a "
        "request is dropped as off_topic; 0 turns the check off"
    )
    ask_judge: bool = Field(
        False, description="also ask the recipe's judge whether each kept sample answers the original prompt "
        "(needs judge:); a 'no' is dropped as judge_not_an_answer"
    )
    table: Path | None = Field(None, description="a meta-talk table of your own (same columns); null = the shipped one")


def load_meta_talk(path: str | Path = META_TALK_PATH) -> tuple[pl.DataFrame, str]:
    """The meta-talk table (kind, language, pattern, example) and its version (its `# version:` line).

    Every row is checked: a known kind, a pattern that compiles, and an example the pattern matches.
    """
    text = Path(path).read_text(encoding="utf-8")
    found = re.search(r"^#\s*version:\s*(\d+\.\d+\.\d+)", text, flags=re.MULTILINE)
    if not found:
        raise ConfigError(f"{path}: no '# version: X.Y.Z' line in the meta-talk table")
    table = pl.read_csv(path, comment_prefix="#", quote_char='"', infer_schema=False)
    missing = {"kind", "language", "pattern", "example"} - set(table.columns)
    if missing:
        raise ConfigError(f"{path}: the meta-talk table lacks columns {sorted(missing)}")
    bad_kind = table.filter(~pl.col("kind").is_in(KINDS) | pl.col("pattern").is_null())
    if bad_kind.height:
        raise ConfigError(f"{path}: {bad_kind.height} rows with no pattern or a kind not in {KINDS}, "
                          f"first: {bad_kind.row(0)}")
    try:
        matched = table.with_columns(
            ok=pl.col("example").fill_null("").str.contains(pl.concat_str(pl.lit("(?i)"), pl.col("pattern")))
        )
    except pl.exceptions.ComputeError as e:
        raise ConfigError(f"{path}: a pattern does not compile: {str(e).splitlines()[0]}") from None
    unmatched = matched.filter(~pl.col("ok"))
    if unmatched.height:
        raise ConfigError(f"{path}: {unmatched.height} patterns miss their own example, first: {unmatched.row(0)}")
    return table.select("kind", "language", "pattern", "example"), found.group(1)


@functools.cache
def patterns(path: str | Path = META_TALK_PATH) -> dict[str, str]:
    """The table compiled into four regexes: `lead` (preambles to strip from the start), `closing` (to
    strip from the end, keeping the punctuation before it as `${1}`), `meta` and `no_engagement`."""
    table, _ = load_meta_talk(path)

    def alt(kind: str) -> str:
        rows = table.filter(pl.col("kind") == kind)["pattern"]
        return "|".join(f"(?:{p})" for p in rows) if rows.len() else r"[^\s\S]"  # no rows: matches nothing

    opener, preamble = alt("opener"), alt("preamble")
    return {
        "lead": rf"(?i)^{_DECOR}(?:(?:{opener})\s*)?(?:(?:{preamble}){_DECOR})+",
        "closing": rf"(?i)(^|[.!?。！？\n])[\s*_]*(?:{alt('closing')})\s*$",
        "meta": rf"(?i)(?:{alt('meta')})",
        "no_engagement": rf"(?i)^{_DECOR}(?:(?:{opener})\s*)?(?:{alt('no_engagement')})",
    }


def request_of(prompt: pl.Expr) -> pl.Expr:
    """The content of the last user message of a message-list column (the request a sample answers)."""
    return (
        prompt.list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.last()
        .fill_null("")
    )


def clean_samples(
    frame: pl.DataFrame, text: str, request: pl.Expr, spec: CleanSpec
) -> tuple[pl.DataFrame, dict[str, int], int]:
    """Strip revision preambles from `frame[text]` and drop the samples that do not answer `request`.

    Returns (kept rows, drop count per reason of `REASONS`, number of kept samples that had a preamble or
    closing stripped); a kept sample's text is changed only where something was stripped. Empty samples
    pass through untouched (the degenerate-sample check counts them).
    """
    rx = patterns(spec.table or META_TALK_PATH)
    body = pl.col(text).fill_null("")
    cleaned = body.str.replace(rx["lead"], "").str.replace(rx["closing"], "${1}").str.strip_chars()
    stripped = (cleaned != body.str.strip_chars()) & body.str.contains(r"[\p{L}\p{N}]")
    req_words = request.fill_null("").str.to_lowercase().str.extract_all(_CONTENT_WORD).list.unique()
    words = cleaned.str.to_lowercase().str.extract_all(_CONTENT_WORD).list.unique()
    off_topic = (
        (req_words.list.len() >= spec.min_request_words)
        & (cleaned.str.count_matches(_WORD) <= spec.max_off_topic_words)
        & (words.list.set_intersection(req_words).list.len() == 0)
    )
    reason = (
        pl.when(stripped & (~cleaned.str.contains(r"[\p{L}\p{N}]") | pl.lit(not spec.strip)))
        .then(pl.lit("preamble_only"))
        .when(cleaned.str.contains(rx["meta"]))
        .then(pl.lit("meta_talk"))
        .when(cleaned.str.contains(rx["no_engagement"]))
        .then(pl.lit("no_engagement"))
        .when(body.str.contains(r"[\p{L}\p{N}]") & off_topic)
        .then(pl.lit("off_topic"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    marked = frame.with_columns(_cleaned=cleaned, _stripped=stripped, _drop=reason)
    counts = dict(marked.filter(pl.col("_drop").is_not_null()).group_by("_drop").len().iter_rows())
    kept = marked.filter(pl.col("_drop").is_null())
    n_stripped = int(kept["_stripped"].sum())
    kept = kept.with_columns(pl.when("_stripped").then(pl.col("_cleaned")).otherwise(pl.col(text)).alias(text))
    return kept.drop("_cleaned", "_stripped", "_drop"), counts, n_stripped
