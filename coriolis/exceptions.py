"""Exceptions that cross module boundaries.

The API maps them to HTTP statuses (see ``coriolis.api.errors``): ``NotFound`` → 404,
``Invalid`` → 400, ``Conflict`` → 409, ``Forbidden`` → 403, ``Unauthorized`` → 401,
``NoEligibleWorker`` → 503 (with its message, as upstream's NoServiceError).
Messages must never contain secrets (connection info, passwords, tokens).
"""


class CoriolisError(Exception):
    """Base class; ``str(exc)`` is safe to show to API users."""

    code = 500


class Invalid(CoriolisError):
    code = 400


class InvalidInput(Invalid):
    """A request field is wrong; the message names the field."""


class LocationNotAllowed(InvalidInput):
    """Connection info names a place (a directory, say) the project may not use here."""


class InvalidState(Invalid):
    """The resource is in a state that does not allow the operation."""


class NotFound(CoriolisError):
    code = 404


class Conflict(CoriolisError):
    code = 409


class Forbidden(CoriolisError):
    code = 403


class Unauthorized(CoriolisError):
    code = 401


class ProviderError(CoriolisError):
    """A provider operation failed (cloud unreachable, disk missing, ...)."""


class ConnectionValidationFailed(ProviderError):
    code = 400


class InstanceNotFound(NotFound):
    pass


class NoEligibleWorker(CoriolisError):
    """No enabled, live worker satisfies a task's endpoints' regions and providers."""

    code = 503


class TaskCanceled(CoriolisError):
    """Raised inside a running task when the execution was cancelled."""
