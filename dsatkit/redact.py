"""Redaction of personal data and secrets before chat text leaves the machine (`--redact`).

E-mail addresses, phone numbers, API-key-like tokens and IP addresses are replaced by placeholders.
Everything is one chain of Polars regex replacements (Rust regex, run column-wide), so redacting a
million exchanges costs no Python loop. The patterns err on the side of redacting: a 40-character
hex id (a git SHA) is treated as a secret, which is the safe mistake for text sent to a third party.
"""

from __future__ import annotations

import polars as pl

EMAIL, PHONE, API_KEY, IP = "[EMAIL]", "[PHONE]", "[API_KEY]", "[IP]"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H = r"[0-9A-Fa-f]{1,4}"
# Rust regex has no look-ahead, so "40+ token characters, at least one a digit" is spelled as one
# alternative per position of the first digit.
_T, _A = r"[A-Za-z0-9_\-]", r"[A-Za-z_\-]"
_LONG_TOKEN = (
    r"\b(?:"
    + "|".join([f"{_A}{{{k}}}[0-9]{_T}{{{39 - k},}}" for k in range(39)] + [f"{_A}{{39,}}[0-9]{_T}*"])
    + r")\b"
)

# (pattern, replacement), applied in order: secrets first (they may contain digit runs that look like
# phone numbers), then e-mails, IPs (before phones, which would eat dotted digits), then phones.
RULES: list[tuple[str, str]] = [
    # key = value / bearer token: keep the name, drop the value
    (r"(?i)\b(api[_-]?key|secret|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)(\s*[:=]\s*)[\"']?[^\s\"',;]{6,}[\"']?",
     "${1}${2}" + API_KEY),
    (r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/\-]{12,}=*", "${1}${2}" + API_KEY),
    # vendor-shaped keys: OpenAI/Anthropic-style sk-..., AWS, GitHub, Slack, Google, JWTs
    (r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}", API_KEY),
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", API_KEY),
    (r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", API_KEY),
    (r"\bgithub_pat_[A-Za-z0-9_]{30,}\b", API_KEY),
    (r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", API_KEY),
    (r"\bAIza[0-9A-Za-z_\-]{35}", API_KEY),
    (r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", API_KEY),
    # long opaque tokens: 32+ hex, or 40+ url-safe characters with a digit somewhere in them
    (r"\b[0-9A-Fa-f]{32,}\b", API_KEY),
    (_LONG_TOKEN, API_KEY),
    (r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", EMAIL),
    (rf"\b{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\b", IP),
    (rf"\b(?:{_H}:){{7}}{_H}\b", IP),
    (rf"\b(?:{_H}:){{2,6}}:(?:{_H}(?::{_H}){{0,5}})?", IP),  # 2+ groups: not C++ `Feed::add`
    (r"\+[1-9][0-9]{0,2}[\s.\-]?(?:\([0-9]{1,4}\)[\s.\-]?)?[0-9]{1,4}(?:[\s.\-]?[0-9]{2,4}){2,4}\b", PHONE),
    (r"(?:\([0-9]{3}\)\s?|\b[0-9]{3}[\s.\-])[0-9]{3,4}[\s.\-][0-9]{4}\b", PHONE),
]


def redact_expr(expr: pl.Expr) -> pl.Expr:
    """`expr` (a String expression) with every rule applied."""
    for pattern, repl in RULES:
        expr = expr.str.replace_all(pattern, repl)
    return expr


def redact_text(text: str) -> str:
    """One string, redacted (for ad-hoc use; frames should use `redact_expr` / `redact_exchanges`)."""
    return pl.select(redact_expr(pl.lit(text, dtype=pl.String))).item()


def redact_exchanges(exchanges: pl.DataFrame) -> pl.DataFrame:
    """Redact every text an exchange carries: context message contents, request, response, feedback, followup."""
    out = exchanges.with_columns(
        redact_expr(pl.col(c)) for c in ("request", "response", "feedback", "followup") if c in exchanges.columns
    )
    if "context" in out.columns:
        out = out.with_columns(
            pl.col("context").list.eval(
                pl.element().struct.with_fields(redact_expr(pl.field("content")).alias("content"))
            )
        )
    return out
