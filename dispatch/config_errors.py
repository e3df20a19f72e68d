"""msgspec errors → ``ConfigError`` naming the dotted key, with the field's own problem text.

A checked field is declared ``checked(type, "must be ...", got=..., **Meta constraints)``:
the text rides in ``Meta(extra={"problem": ...})`` (and is the field's JSON Schema
description). ``convert(data, type, key)`` is ``msgspec.convert`` whose error is reported at
the nearest enclosing key that has such a text (so a bad item of ``metrics.roles`` names
``metrics.roles``), with msgspec's path in the dotted form (``$.categories[2].priority`` →
``categories[2].priority``; a mapping's key, ``[...]`` to msgspec, is found by converting
each value alone: ``timers.zones.z1.arrive_s``). An unknown key says ``unknown key``, or the
Struct's ``unknown_key`` class variable.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class ConfigError(Exception):
    """A configuration problem; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def checked(tp: Any, problem: str, *, got: bool = False, **constraints: Any) -> Any:
    """``tp`` with msgspec constraints and the problem text a violation reports.

    ``got``: the message ends with ``, got <the value>``. The text is also the field's
    description in the JSON Schema.
    """
    return Annotated[tp, Meta(**constraints, description=problem,
                              extra={"problem": problem, "got": got})]


# "Expected `int`, got `str` - at `$.server.port`"; a dict's keys are "[...]" in the path.
_ERROR = re.compile(r"(?s)(.*?)(?: - at `\$([^`]*)`)?")
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
MISSING = re.compile(r"Object missing required field `(.*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")
_ANY_KEY = "..."
_FALLBACK = (("Expected `object", "must be a mapping"), ("Expected `array", "must be a list"))


def convert(data: Any, tp: Any, key: str = "") -> Any:
    """``data`` as ``tp`` (a Struct or an annotated one), or a ``ConfigError`` whose key is
    ``key`` followed by the path of the problem."""
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc), data, tp, key) from None


def _config_error(text: str, data: Any, tp: Any, prefix: str) -> ConfigError:
    msg, path = _parse_error(text)
    path = _name_dict_keys(data, tp, path)
    unknown = _UNKNOWN.fullmatch(msg)
    if unknown is not None:
        cls = _walk(msgspec.inspect.type_info(tp), path)[1]
        problem = getattr(cls, "unknown_key", "unknown key")
        return ConfigError(_dotted(prefix, [*path, unknown.group(1)]), problem)
    missing = MISSING.fullmatch(msg)
    if missing is not None:
        path = [*path, missing.group(1)]
    return problem_at(data, tp, path, next(
        (text for start, text in _FALLBACK if msg.startswith(start)),
        msg[:1].lower() + msg[1:]), prefix)


def error_parts(text: str) -> tuple[str, str]:
    """A ``msgspec.ValidationError``'s text → (its message, its path after ``$``, or "");
    the request door (server/validation.py) reads them too."""
    m = _ERROR.fullmatch(text)
    assert m is not None  # the pattern matches any text
    return m.group(1), m.group(2) or ""


def _parse_error(text: str) -> tuple[str, list[str | int]]:
    """(msgspec's message, its path as segments; ``_ANY_KEY`` for a key of a mapping)."""
    msg, at = error_parts(text)
    path: list[str | int] = [
        s.group(1) if s.group(1) is not None else
        int(s.group(2)) if s.group(2) is not None else _ANY_KEY
        for s in _SEGMENT.finditer(at)]
    return msg, path


def problem_at(data: Any, tp: Any, path: list[str | int], fallback: str,
               prefix: str = "") -> ConfigError:
    """The error for the value at ``path`` of ``data`` (described by ``tp``): at the deepest
    key of the path whose type carries a problem text, else ``fallback`` at the path."""
    found = _walk(msgspec.inspect.type_info(tp), path)[0]
    if found is None:
        return ConfigError(_dotted(prefix, path), fallback)
    depth, extra = found
    key = path[:depth]
    problem = extra["problem"]
    if extra["got"]:
        problem += f", got {_value_at(data, key)!r}"
    return ConfigError(_dotted(prefix, key), problem)


def _walk(t: Any, path: list[str | int]) -> tuple[tuple[int, dict[str, Any]] | None, Any]:
    """(depth and extra of the deepest annotated key along ``path``, the Struct class found
    at the end of the path or None)."""
    found = None
    cls = None
    for depth in range(len(path) + 1):
        t, extra = _unwrap(t, path[depth] if depth < len(path) else None)
        if extra is not None:
            found = (depth, extra)
        cls = t.cls if isinstance(t, msgspec.inspect.StructType) else None
        if depth == len(path):
            break
        seg = path[depth]
        if isinstance(t, msgspec.inspect.StructType):
            nxt = next((f.type for f in t.fields if f.encode_name == seg), None)
        elif isinstance(t, msgspec.inspect.DictType):
            nxt = t.value_type
        elif isinstance(t, msgspec.inspect.ListType):
            nxt = t.item_type
        else:
            nxt = None
        if nxt is None:  # a key no Struct describes
            return None, None
        t = nxt
    return found, cls


def _unwrap(t: Any, seg: str | int | None) -> tuple[Any, dict[str, Any] | None]:
    """(the type below annotations and unions, towards ``seg``; the problem's extra)."""
    extra = None
    while True:
        if isinstance(t, msgspec.inspect.Metadata):
            if t.extra and "problem" in t.extra:
                extra = t.extra
            t = t.type
        elif isinstance(t, msgspec.inspect.UnionType):
            members = t.types
            for m in members:
                if isinstance(m, msgspec.inspect.Metadata) and m.extra and "problem" in m.extra:
                    extra = m.extra
            want = (msgspec.inspect.ListType,) if isinstance(seg, int) else (
                msgspec.inspect.StructType, msgspec.inspect.DictType)
            inner = [m.type if isinstance(m, msgspec.inspect.Metadata) else m for m in members]
            t = next((m for m in inner if isinstance(m, want)), inner[0])
        else:
            return t, extra


def _name_dict_keys(data: Any, tp: Any, path: list[str | int]) -> list[str | int]:
    """``path`` with each ``[...]`` (msgspec does not say which key of a mapping) replaced by
    the first key whose value alone brings back an error under that mapping."""
    found = list(path)
    while _ANY_KEY in found:
        i = found.index(_ANY_KEY)
        node = _value_at(data, found[:i])
        for k in node if isinstance(node, dict) else ():
            try:
                msgspec.convert(_keep_only(data, found[:i], k), tp)
            except msgspec.ValidationError as exc:
                if _parse_error(str(exc))[1][:i + 1] == path[:i + 1]:
                    found[i] = k
                    break
        else:
            return found[:i]
    return found


def _keep_only(node: Any, path: list[str | int], key: str) -> Any:
    """A copy of ``node`` whose mapping at ``path`` keeps only ``key``."""
    if not path:
        return {key: node[key]}
    copied = dict(node) if isinstance(node, dict) else list(node)
    copied[path[0]] = _keep_only(node[path[0]], path[1:], key)  # type: ignore[index]
    return copied


def _value_at(data: Any, path: list[str | int]) -> Any:
    for seg in path:
        try:
            data = data[seg]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _dotted(prefix: str, path: list[str | int]) -> str:
    out = prefix
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else f".{seg}" if out else str(seg)
    return out or "config"
