"""Errors a user can act on.

Every error carries the message the user needs, including the fix. Only
``gptcli.__main__`` prints them and turns them into exit codes.
"""


class GptcliError(Exception):
    """A runtime failure (exit code 1): the input was fine, the work failed."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(GptcliError):
    """Bad input data (exit code 2): names the file, line and field when it can."""

    exit_code = 2


class UsageError(GptcliError):
    """A bad option or combination of options (exit code 2)."""

    exit_code = 2


class OutputClosed(Exception):
    """stdout was closed by the reader (``| head``): stop quietly."""
