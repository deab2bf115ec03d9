"""pgolf's own exception types. Everything a user can cause (bad data, tokenizer, artifact, config,
an over-cap result, a refused run) raises a subclass of PgolfError, and the command line prints
it as one line; any other exception is a bug and shows its traceback.

Subclasses that used to be ValueError / FileNotFoundError still are, so callers that catch the
builtin type keep working."""

from __future__ import annotations


class PgolfError(Exception):
    """Bad input or a refused result, reported to the user in one line."""


class ConfigError(PgolfError, ValueError):
    """An unknown option, a value of the wrong type, or an inconsistent combination."""


class UsageError(PgolfError, ValueError):
    """A command used wrongly: a missing file argument, conflicting arguments."""


class MissingInputError(PgolfError, FileNotFoundError):
    """A file or folder that the user named, or that the config points to, does not exist."""
