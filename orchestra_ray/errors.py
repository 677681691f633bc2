"""The errors a user's input raises: a bad configuration or a bad data file. Each carries a one-line
message naming the key, file or column at fault. This module imports nothing of the project, so any
module may raise them."""


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key or file."""


class DataError(ValueError):
    """A data file that cannot be used: missing, unreadable, or with a missing or wrongly typed column."""
