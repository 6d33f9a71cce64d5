"""The `dsatkit` command line: assembles the command modules and turns user errors into one line."""

from __future__ import annotations

import os
import signal
import sys
import threading

import typer

from dsatkit.commands import detectors, mine, query, report, topics, train
from dsatkit.errors import DsatkitError
from dsatkit.progress import console
from dsatkit.runtime import configure_process

app = typer.Typer(
    name="dsatkit",
    help="Mine user dissatisfaction from chat logs into preference data; train DRIFT rounds on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (mine, query, detectors, train, report, topics):
    module.register(app)

INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (SIGINT), as shells give it (128 + 2)."""
TERMINATED = 143
"""The exit code of a command stopped by SIGTERM (`kill`, a scheduler's timeout), as shells give it (128 + 15)."""
DUCKDB_INTERRUPTED = "Query interrupted"
"""What DuckDB raises (a RuntimeError, not KeyboardInterrupt) for a Ctrl-C while it runs a query in the
main thread (a `dsatkit sql` query, the hashing of a batch of `mine`)."""


def main(argv: list[str] | None = None) -> None:
    """The CLI on `argv` (default: the process's arguments). `--debug` anywhere on the line shows
    tracebacks of user errors. The console command (`dsatkit.__main__.run`) applies the process-wide
    settings before this module's imports; calling them here again covers a direct call."""
    configure_process()
    _stop_on_sigterm()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("DSATKIT_DEBUG"))
    args = [a for a in args if a != "--debug"]
    try:
        # typer turns Ctrl-C (KeyboardInterrupt) into exit code 130 and returns it, as it returns the
        # code of a `typer.Exit`; a command itself returns None
        code = app(args=args, prog_name="dsatkit", standalone_mode=False)
    except DsatkitError as e:
        if debug:
            raise
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        if e.hint:
            console.print(f"[dim]hint: {e.hint}[/dim]", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # one that typer did not see (before or after the command)
        code = INTERRUPTED
    except typer.Abort:  # end of input at a prompt
        console.print("aborted")
        raise SystemExit(1) from None
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            # a click.ClickException: of click itself, or of the copy of click that newer typer carries
            e.show()
            raise SystemExit(e.exit_code) from None
        if isinstance(e, OSError) and not debug:  # a path that exists as a file, a full disk, permissions
            console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            console.print("[dim]hint: check the paths and their permissions; --debug shows the traceback[/dim]")
            raise SystemExit(1) from None
        if not (isinstance(e, RuntimeError) and str(e) == DUCKDB_INTERRUPTED):
            raise
        code = INTERRUPTED
    if code == INTERRUPTED:
        if _terminated.is_set():
            console.print("terminated", highlight=False)
            raise SystemExit(TERMINATED)
        console.print("interrupted", highlight=False)
        raise SystemExit(INTERRUPTED)
    if isinstance(code, int) and code:
        raise SystemExit(code)


_terminated = threading.Event()


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop a command as Ctrl-C does (the run's clean-up runs: the old store stays, the
    temp snapshot and the lock go), then exit with TERMINATED. Python's default is to die on the spot."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (a CLI called from a worker)

    def stop(signum: int, frame: object) -> None:
        _terminated.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
