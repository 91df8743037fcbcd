"""The `skill` command's entry point: `skill ...`, `python -m skill ...` and
`torchrun ... -m skill extract ...`.

Ctrl-C at any moment is one line on stderr and exit code 130: a command's own handler says
what was kept (`cli.user_errors`); before that, while the command's modules load or its
arguments are read, the line is `interrupted`. Nothing heavy is imported before the guard,
so decode workers, which import the main module again, start quickly too.
"""

import logging
import sys

EXIT_INTERRUPTED = 130  # what a shell reports for a command stopped by SIGINT


def main() -> None:
    """Run the `skill` command (the typer app of `skill.cli`) inside the Ctrl-C guard."""
    reported = 0
    # zarr writes a take's chunks concurrently: when a full disk fails several, the first is
    # the command's one-line error and asyncio would print the others' tracebacks at exit.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        from skill import progress

        reported = progress.interrupts_reported()
        from skill.cli import app

        app(prog_name="skill")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as stop:
        # typer turns a Ctrl-C outside a command (while parsing) into a silent exit 130
        if stop.code == EXIT_INTERRUPTED and progress.interrupts_reported() == reported:
            progress.interrupted()
        raise


if __name__ == "__main__":
    main()
