"""The commands (contract §3, §4, §8): create, the lifecycle actions (respond … reassign,
transfer, accept, return) and position reports, the same for REST and WebSocket. Handlers
parse the request, call one of these and render what it returns.

Each command checks role and scope (``scope.py``) before it reads the body: a role that never
does this answers 403 whatever the id; an id outside the caller's scope answers 404, the same
as an unknown one (contract §6). Reads go to the runtime's committed view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from dispatch.clock import Clock
from dispatch.core.errors import NotFoundError
from dispatch.core.event import Event, Evidence
from dispatch.core.lifecycle import TRANSFER_ACTIONS
from dispatch.evidence import TYPES, EvidenceStore, TooLargeError, check_type
from dispatch.server import scope, validation
from dispatch.server.render import unit_json
from dispatch.server.scope import Areas, Principal
from dispatch.server.validation import ACTIONS, ApiError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from dispatch.core.engine import Outcome
    from dispatch.runtime import Runtime


def forbid(message: str, field: str | None = None) -> ApiError:
    return ApiError(403, "forbidden", message, field)


def no_event(event_id: str) -> NotFoundError:
    """What an unknown event id answers; an event outside the caller's scope answers the
    same (the engine's own message for an unknown id)."""
    return NotFoundError(f"no event {event_id!r}")


def no_unit(unit_id: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"no unit {unit_id!r}", field)


def caller_id(p: Principal) -> str:
    """The opaque id under which a token's duplicate keys are kept (contract §3).

    Derived from the token's digest one way (the digest cannot be recovered from it) and
    stored on the events the token creates as ``caller``, which is never rendered.
    """
    return hashlib.sha256(b"caller:" + p.digest.encode("utf-8")).hexdigest()[:16]


def check_reader(p: Principal) -> None:
    """403 for a token that reads no events (intake)."""
    if not scope.may_read_events(p):
        raise forbid("an intake token may only create events")


class Commands:
    """Every change a client can ask for, checked against its scope, carried out by the
    runtime. ``publish_unit`` pushes a rendered unit to the WebSocket clients that see it."""

    def __init__(self, runtime: Runtime, areas: Areas, clock: Clock, tz: tzinfo,
                 max_skew_s: float, publish_unit: Callable[[dict[str, Any]], None]) -> None:
        self.runtime = runtime
        self.areas = areas
        self.clock = clock
        self.tz = tz
        self.max_skew_s = max_skew_s
        self.publish_unit = publish_unit

    def bounds(self) -> dict[str, Any]:
        """The keyword arguments that bound client times at the door (contract §3)."""
        return {"now": self.clock.now(), "max_skew_s": self.max_skew_s}

    # -- reads the commands (and handlers) share ----------------------------------------------
    def readable_event(self, p: Principal, event_id: str) -> Event:
        """The committed event, if ``p`` may read it; else 404, the same as an unknown id."""
        ev = self.runtime.view.get(event_id)
        if not scope.event_visible(p, ev):
            raise no_event(event_id)
        return ev

    def actable_event(self, p: Principal, event_id: str) -> Event:
        """The event ``p`` may act on: 403 for a role that never acts, 404 for an unknown id
        or one outside the caller's scope (a field unit: not assigned to it)."""
        if not scope.may_act_at_all(p):
            raise forbid(f"a {p.role} token may not act on events")
        ev = self.readable_event(p, event_id)
        if not scope.event_actable(p, ev):
            raise no_event(event_id)
        return ev

    def render_unit(self, unit_id: str) -> dict[str, Any]:
        rt = self.runtime
        return unit_json(rt.dataset, rt.units, rt.view.busy_units(), unit_id, self.clock.now(),
                         self.tz)

    # -- commands ---------------------------------------------------------------------------
    @staticmethod
    def check_creator(p: Principal) -> None:
        if not scope.may_create(p):
            raise forbid(f"a {p.role} token may not create events")

    async def create(self, p: Principal, data: Any, idempotency_key: str | None) -> Outcome:
        """A new event from an intake body (duplicates are the caller's own, contract §3)."""
        self.check_creator(p)
        rt = self.runtime
        fields = validation.intake(data, rt.policy.categories, **self.bounds())
        key = validation.idempotency_key(idempotency_key)
        if scope.creates_only_in_region(p):
            r = rt.port.route(fields["location"]["lon"], fields["location"]["lat"])
            if not scope.operator_may_create_at(p, (r.grid, r.township, r.county, r.city)):
                raise forbid("the event's location is outside your region")
        # an event stored before callers were recorded is matched only when the caller may
        # read it
        fields["caller"] = caller_id(p)
        return await rt.create(fields, p.actor, idempotency_key=key,
                               may_read=lambda ev: scope.event_visible(p, ev))

    async def act(self, p: Principal, event_id: str, action: str, data: Any) -> Event:
        """Check role and scope, then carry out one lifecycle action; the event after it."""
        if action not in ACTIONS:
            raise ApiError(404, "not_found", f"unknown action {action!r}")
        ev = self.actable_event(p, event_id)
        if action in TRANSFER_ACTIONS:
            body = self._transfer_body(p, ev, action, data)
        else:
            body = validation.action_body(data, **self.bounds())
        if not scope.may_take_action(p, action):
            raise forbid(f"a {p.role} token may not {action}")
        if action == "reassign":
            self._check_reassign(p, event_id, body["unit"], body["team"])
        out = await self.runtime.act(event_id, action, p.actor, **body)
        assert out.event is not None  # an action answers with the event (noop: as it is)
        return out.event

    def _transfer_body(self, p: Principal, ev: Event, action: str, data: Any
                       ) -> dict[str, Any]:
        """Contract §8: transfer names a configured department (else 404 naming the field);
        accept and return come from the department the event is transferred to (another
        department that reads it, having answered it before: 403)."""
        body = validation.transfer_body(action, data)
        if not scope.may_take_action(p, action):
            raise forbid(f"a {p.role} token may not {action}")
        if action == "transfer":
            if body["department"] not in self.runtime.config.department_ids:
                raise ApiError(404, "not_found", f"no department {body['department']!r}",
                               "department")
        elif not scope.holds_transfer(p, ev):
            raise forbid("the event is transferred to another department", "department")
        else:
            del body["department"]
        return body

    def _check_reassign(self, p: Principal, event_id: str, unit: str | None,
                        team: str | None) -> None:
        """A reassign names only units and teams the caller sees (contract §3 bounds): an
        unknown one and one outside the caller's region both answer 404 naming the field. A
        unit busy on an event the caller may not read is refused without naming that event."""
        if unit is not None:
            if not scope.unit_visible(self.areas, p, unit):
                raise no_unit(unit, "unit")
            view = self.runtime.view
            holder = view.busy_units().get(unit)
            if holder is not None and holder != event_id and not scope.event_visible(
                    p, view.get(holder)):
                raise ApiError(422, "invalid_field", f"unit {unit!r} is busy on another event",
                               "unit")
        if team is not None and not scope.team_in_scope(self.areas, p, team):
            raise ApiError(404, "not_found", f"no team {team!r}", "team")

    def position(self, p: Principal, unit_id: str, data: Any) -> dict[str, Any]:
        """Record a unit's position and push it to the clients that see the unit."""
        if not scope.may_report_positions(p):
            raise forbid(f"a {p.role} token may not report positions")
        if not scope.unit_visible(self.areas, p, unit_id):
            raise no_unit(unit_id)  # out of scope answers as unknown (contract §6)
        bounds = self.bounds()
        body = validation.position(data, **bounds)
        at = body["at"] if body["at"] is not None else bounds["now"]
        rt = self.runtime
        rt.units.update_position(unit_id, body["lon"], body["lat"], at,
                                 accuracy_m=body["accuracy_m"])
        rt.share_position(unit_id, body["lon"], body["lat"], at, body["accuracy_m"])
        out = self.render_unit(unit_id)
        self.publish_unit(out)
        return out

    # -- evidence (contract §8) ---------------------------------------------------------------
    async def attach(self, p: Principal, event_id: str, store: EvidenceStore,
                     content_type: str, query: Mapping[str, str],
                     content_length: int | None, chunks: AsyncIterator[bytes]
                     ) -> tuple[Evidence, bool]:
        """Store an uploaded file durably, then journal it on the event: (entry, created).

        Role (403), scope (404, as unknown), then the query (422), the type (415) and the
        declared size (413) before a byte is read; the body is streamed into the store
        (415 when its bytes are not of the declared type, 413 past the limit). The same
        file again on the same event → the existing entry, created False.
        """
        if not scope.may_attach_evidence(p):
            raise forbid(f"a {p.role} token may not attach evidence")
        if not scope.evidence_attachable(p, self.readable_event(p, event_id)):
            raise no_event(event_id)
        check_type(content_type)
        name, taken_at = validation.evidence_query(query, TYPES[content_type],
                                                   **self.bounds())
        if content_length is not None and content_length > store.max_bytes:
            raise TooLargeError(f"the file is larger than {store.max_bytes} bytes", "body")
        stored = await store.save(chunks, content_type)
        out = await self.runtime.attach(
            event_id, {"sha256": stored.sha256, "size": stored.size, "type": stored.type,
                       "name": name}, p.actor, at=taken_at)
        assert out.event is not None
        entry = next(e for e in out.event["evidence"] if e["sha256"] == stored.sha256)
        return entry, bool(out.records)
