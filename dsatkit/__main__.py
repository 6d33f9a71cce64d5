"""`python -m dsatkit ...`, the `dsatkit` console command (and `accelerate launch -m dsatkit train ...`)."""

from __future__ import annotations


def run() -> None:
    """The console entry point: process-wide settings first (before anything imports Polars), then the CLI."""
    from dsatkit.runtime import configure_process

    configure_process()
    from dsatkit.cli import main

    main()


if __name__ == "__main__":
    run()
