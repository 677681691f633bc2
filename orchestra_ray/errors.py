"""The errors a user's input raises: a bad configuration or a bad data file. Each carries a one-line
message naming the key, file or column at fault. This module imports nothing of the project, so any
module may raise them."""


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key or file."""


class DataError(ValueError):
    """A data file that cannot be used: missing, unreadable, or with a missing or wrongly typed column."""


class LearnerLost(RuntimeError):
    """A rank of the learner group died or failed: the group cannot take another step. Its message
    names the rank; the driver adds the last checkpoint to resume from."""


class NonFiniteUpdate(LearnerLost):
    """An update whose loss or gradient is not finite. It is not applied (the weights stay as they
    were) and the run stops, as when a rank is lost: a non-finite value never reaches the weights
    or a checkpoint."""
