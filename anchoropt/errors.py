"""Exceptions that mean "the user's input is wrong", as opposed to a bug.

Command-line entry points print a `UserError` as one line (no traceback unless
`--debug` is given) and exit non-zero.
"""


class UserError(Exception):
    """An error caused by user input: a config key, a file, a dataset layout, a checkpoint."""


class ConfigError(UserError):
    """A config key or value is invalid."""


class DataError(UserError):
    """A dataset folder, split file or image is missing or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, unsafe, or does not match the model."""
