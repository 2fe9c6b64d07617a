"""Entry point: runs the app, and is the one place that prints errors and picks exit codes."""

from __future__ import annotations

import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    """Run gptcli with ``argv`` (default: sys.argv[1:]) and return the exit code.

    ``exiting``: the process ends after this (the console script). Signals are then ignored
    from the return on, instead of handed back to Python's own handlers: a second Ctrl-C while
    the interpreter shuts down would print a KeyboardInterrupt traceback and die of SIGINT,
    after gptcli has already said how the run ended.
    """
    from gptcli import signals, textio

    textio.configure_stdout()
    previous_handlers = signals.install()
    try:
        return _run_app(argv)
    finally:
        if exiting:
            signals.ignore_all()
        else:
            signals.restore(previous_handlers)


def _run_app(argv: list[str] | None) -> int:
    import typer

    from gptcli import launch
    from gptcli.cli import app
    from gptcli.errors import GptcliError, OutputClosed

    launch.remember(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="gptcli", standalone_mode=False)
    except GptcliError as exc:
        return _fail(exc.message, exc.exit_code)
    except typer.TyperException as exc:  # Typer's own usage errors: unknown option, bad value
        return _fail(_usage_message(exc), getattr(exc, "exit_code", EXIT_USAGE))
    except typer.Abort:
        return _fail("aborted", EXIT_FAILURE)
    except OutputClosed:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:  # the last net: one line, never a traceback unless asked
        from gptcli.models.placement import is_out_of_memory, out_of_memory_error

        if is_out_of_memory(exc):  # a runtime failure with a hint (exit 1), never "bad input"
            return _fail(out_of_memory_error("running", exc).message, EXIT_FAILURE)
        if os.environ.get("GPTCLI_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return _fail(f"unexpected {type(exc).__name__}: {first} (set GPTCLI_DEBUG=1 for the traceback)",
                     EXIT_FAILURE)
    if code == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into exit code 130
        return _interrupted()
    return code if isinstance(code, int) else EXIT_OK


def _usage_message(exc) -> str:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "gptcli"
    return f"{message} (see `{command} --help`)"


def _fail(message: str, code: int) -> int:
    if os.environ.get("GPTCLI_DEBUG"):
        import traceback

        traceback.print_exc()
    try:
        sys.stderr.write(f"gptcli: error: {message}\n")
        sys.stderr.flush()
    except OSError:  # stderr itself cannot be written (a full disk): the exit code still tells
        pass
    return code


def _interrupted() -> int:
    from gptcli import signals

    how = "interrupted" if signals.exit_code() == EXIT_INTERRUPTED else f"stopped by {signals.name()}"
    sys.stderr.write(f"gptcli: {how}; {signals.stop_note}\n")
    return signals.exit_code()


def _silence_stdout() -> None:
    """After the reader closed the pipe, point stdout at /dev/null so the exit flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(exiting=True))


if __name__ == "__main__":
    run()
