"""User-facing errors.

A `ScalelabError` is bad input or an impossible request: the command line prints its message on
one line and exits with code 2, never a traceback. Anything else is a bug and keeps its traceback.
"""


class ScalelabError(Exception):
    """Bad input: the message names what is wrong and where, on one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class InputError(ScalelabError):
    """A file, table, column or value the user gave is missing or invalid."""


class ConfigError(ScalelabError):
    """A configuration value is out of range or unknown."""
