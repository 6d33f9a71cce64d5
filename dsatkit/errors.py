"""Errors a user can cause. Each carries a one-line message and a hint; the CLI prints both."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty): library
    errors often run to many lines, and ours are one line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class DsatkitError(Exception):
    """Base class: `str(err)` is the one-line message, `err.hint` what to do about it."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InputError(DsatkitError):
    """A log file is missing, unreadable or in no format we know."""

    hint = "check the path, or pass --format to name the log format (--skip-bad-files to go on)"


class ConfigError(DsatkitError):
    """A config, recipe or option is invalid."""

    hint = "see README.md for the accepted keys"


class StoreError(DsatkitError):
    """A mined directory is missing or not a dsatkit store."""

    hint = "run `dsatkit mine LOGS -o DIR` first"


class EndpointError(DsatkitError):
    """An OpenAI-compatible endpoint is unreachable or keeps failing."""

    hint = "check --judge-base-url, the API key variable and that the server is up"


class TrainError(DsatkitError):
    """A training run cannot start or continue."""

    hint = "check the recipe's model, data and output_dir"
