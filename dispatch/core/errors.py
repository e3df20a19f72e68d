"""Errors the core raises; each carries a code, an HTTP status hint and the field at fault."""

from __future__ import annotations


class DispatchError(Exception):
    """Base of every core error. The HTTP edge maps ``status``/``code``/``field`` in one place."""

    code: str = "dispatch_error"
    status: int = 400
    field: str | None = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class IllegalTransitionError(DispatchError):
    """The action is not allowed from the event's current status (HTTP 409); nothing changed."""

    code = "illegal_transition"
    status = 409

    def __init__(self, message: str, current_status: str) -> None:
        super().__init__(message)
        self.current_status = current_status


class NotFoundError(DispatchError):
    """No event with that id (HTTP 404)."""

    code = "not_found"
    status = 404


class InvalidActionError(DispatchError):
    """A field of the command is invalid (HTTP 422): ``at`` out of range, unknown unit/team…"""

    code = "invalid_field"
    status = 422


class OutsideJurisdictionError(DispatchError):
    """The routing port found no region for the location (HTTP 422, contract §2 rule 4)."""

    code = "outside_jurisdiction"
    status = 422
    field = "location"


class ConflictError(DispatchError):
    """A store compare-and-set append failed: the journal moved on (HTTP 409)."""

    code = "conflict"
    status = 409


class StoreTimeoutError(DispatchError):
    """A store did not make an append durable within its timeout (HTTP 503).

    The message says whether nothing was written (the append never reached the journal) or
    the outcome is unknown (the commit was running when time ran out).
    """

    code = "store_unavailable"
    status = 503
