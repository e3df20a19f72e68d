"""Middlewares, outermost first: metrics (latency by route), errors (every failure becomes
``{"error": {code, message, field}}``), and auth + rate limit for ``/api/v1`` and ``/ws``
(contract §3, §6). The token buckets are shared with the WebSocket's client messages.
Everything else is public here: ``/open311`` (its GETs are public, its POST checks its
``api_key`` with ``check_token`` and answers errors in the standard's own shape) and the pages.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from aiohttp import web

from dispatch.core.errors import DispatchError
from dispatch.runtime import StoreUnavailableError
from dispatch.server.scope import Principal
from dispatch.server.state import PRINCIPAL, STATE, RateBucket, State, error_response
from dispatch.server.validation import ApiError

log = logging.getLogger("dispatch.server")

AUTH_FAILURE_ADDRESSES = 10_000  # addresses whose failed token look-ups are remembered


def bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization", "")
    if h.startswith("Bearer "):
        return h[7:].strip()
    return request.query.get("token") if request.path == "/ws" else None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        resp = error_response(e.status, e.code, e.message, e.field, **e.extra)
        if e.status == 429 and "retry_after_s" in e.extra:
            resp.headers["Retry-After"] = str(max(1, math.ceil(e.extra["retry_after_s"])))
        return resp
    except DispatchError as e:
        extra = {}
        current = getattr(e, "current_status", None)  # an illegal transition's (409)
        if current is not None:
            extra["status"] = current
        return error_response(e.status, e.code, str(e), e.field, **extra)
    except StoreUnavailableError:
        return error_response(503, "store_unavailable",
                              "the journal could not be written; nothing was changed, retry")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            e.status, "http_error")
        resp = error_response(e.status, code, e.reason)
        if "Allow" in e.headers:  # RFC 9110 §15.5.6: a 405 names the methods it allows
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; it has been logged")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    start = time.perf_counter()
    resp = await handler(request)
    state = request.app[STATE]
    if state.metrics is not None and request.path != "/ws":
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        state.metrics.latency.labels(request.method, name, str(resp.status)).observe(
            time.perf_counter() - start)
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not (request.path.startswith("/api/v1") or request.path == "/ws"):
        return await handler(request)
    p = authenticate(request)
    request[PRINCIPAL] = p
    rate_limit(request.app[STATE], p)
    return await handler(request)


def authenticate(request: web.Request) -> Principal:
    """The caller's principal from its bearer token (``check_token``)."""
    return check_token(request, bearer(request))


def check_token(request: web.Request, token: str | None) -> Principal:
    """The principal of ``token``, else 401; 429 while this address has failed too often.

    The one check of every token, whichever way it arrives: the bearer token of ``/api/v1``
    and ``/ws``, Open311's ``api_key`` (``server/open311.py``).

    Failed look-ups are counted per client address (a token bucket of
    ``limits.auth_failures_burst`` refilled at ``limits.auth_failures_per_min``). While the
    bucket is empty every token from that address is refused, valid or not, so a guesser
    learns nothing from the answer.
    """
    state = request.app[STATE]
    lim = state.config["limits"]
    rate = float(lim["auth_failures_per_min"]) / 60.0
    burst = float(lim["auth_failures_burst"])
    addr = request.remote or "unknown"
    now = time.monotonic()
    b = state.auth_failures.get(addr)
    if b is not None:
        b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens < 1:
            state.auth_refused["rate_limited"] += 1
            raise ApiError(429, "rate_limited",
                           "too many requests with a missing or invalid token from this address",
                           retry_after_s=round((1 - b.tokens) / rate, 3))
    p = state.tokens.lookup(token)
    if p is not None:
        return p
    if b is None:
        if len(state.auth_failures) >= AUTH_FAILURE_ADDRESSES:
            _forget_refilled(state.auth_failures, now, rate, burst)
        b = state.auth_failures[addr] = RateBucket(tokens=burst, updated=now)
    b.tokens -= 1
    state.auth_refused["unauthorized"] += 1
    raise ApiError(401, "unauthorized", "missing or invalid bearer token")


def _forget_refilled(buckets: dict[str, RateBucket], now: float, rate: float,
                     burst: float) -> None:
    full = [a for a, b in buckets.items() if b.tokens + (now - b.updated) * rate >= burst]
    for a in full:
        del buckets[a]
    if len(buckets) >= AUTH_FAILURE_ADDRESSES:  # a flood of addresses: keep the most recent
        for a, _ in sorted(buckets.items(), key=lambda kv: kv[1].updated)[
                : len(buckets) - AUTH_FAILURE_ADDRESSES // 2]:
            del buckets[a]


def rate_limit(state: State, p: Principal) -> None:
    """Take one request from ``p``'s token bucket, else ApiError 429 (contract §3)."""
    lim = state.config["limits"]
    rate, burst = float(lim["rate_per_s"]), float(lim["rate_burst"])
    now = time.monotonic()
    b = state.buckets.get(p.digest)
    if b is None:
        b = state.buckets[p.digest] = RateBucket(tokens=burst, updated=now)
    b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
    b.updated = now
    if b.tokens < 1:
        raise ApiError(429, "rate_limited", "too many requests for this token; slow down",
                       retry_after_s=round((1 - b.tokens) / rate, 3))
    b.tokens -= 1
