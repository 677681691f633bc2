"""Failure classification: infrastructure or data.

Infrastructure failures (a dead actor or node, a timeout, a refused connection, an expert's 429 or
5xx) say nothing about the policy: they are retried with backoff up to a bound, and an episode lost
to one is re-issued. Data failures (a malformed call, a tool error caused by the policy's input, an
expert's 4xx) are the policy's doing: they stay on the trajectory and the reward's rules score them.
"""

from __future__ import annotations

INFRASTRUCTURE = "infrastructure"
DATA = "data"

# By name, so that this module needs neither Ray nor an HTTP client to classify their exceptions.
_INFRA_EXCEPTIONS = {
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError", "NodeDiedError",
    "WorkerCrashedError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError", "GetTimeoutError",
    "RaySystemError", "OutOfMemoryError", "TaskUnschedulableError", "RuntimeEnvSetupError",
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "BrokenPipeError", "TimeoutError",
    "APITimeoutError", "APIConnectionError", "RateLimitError", "InternalServerError",
}


def classify_exception(exc: BaseException) -> str:
    """INFRASTRUCTURE when the exception (or one of its bases) is a known infrastructure failure."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return INFRASTRUCTURE if names & _INFRA_EXCEPTIONS else DATA


def classify_http_status(status: int) -> str:
    """429 and 5xx are the endpoint's trouble; any other 4xx is the request's."""
    return INFRASTRUCTURE if status == 429 or status >= 500 else DATA


class StepFailed(RuntimeError):
    """A step gave up: an infrastructure failure outlasted its retry bound."""
