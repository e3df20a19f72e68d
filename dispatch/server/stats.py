"""Response-time statistics (contract §3 ``/stats/response-times``), derived from event state.

A stage counts for an event once it was done or its deadline has passed; done at or before
the deadline (judged on the action's own ``at``) is within. Percentiles are over the stages
that were done. Cancelled events are left out. Days are in the configured time zone. An
event transferred to another department (contract §8) and not returned has its clocks
stopped at the transfer: a stage not yet due then is left out, not counted as breached.
``transfers`` gives, per department, the transfers and how fast they were answered.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from dispatch.core.lifecycle import ANSWER_OF, CLOCKED_STATUSES, PAST, STAGE_DONE, STAGES

GROUPS = ("township", "team", "category", "day", "county", "zone")


def _pct(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return round(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo), 3)


def stage_outcome(ev: Mapping[str, Any], stage: str, now: float
                  ) -> tuple[bool, float | None] | None:
    """(within, duration_s) for a stage that counts, or None if it does not count yet."""
    start = ev.get("dispatched_at")
    due = (ev.get("deadlines") or {}).get(stage)
    if start is None or due is None:
        return None
    done = ev.get(STAGE_DONE[stage])
    if done is not None:
        return done <= due, max(0.0, done - start)
    if min(now, clock_stopped_at(ev)) >= due:
        return False, None
    return None


def clock_stopped_at(ev: Mapping[str, Any]) -> float:
    """When the event's clocks stopped for a transfer that was not returned (transferred,
    handed over), else infinity (contract §8: later stages were not yet due)."""
    tr = ev.get("transfer")
    if (ev.get("status") in CLOCKED_STATUSES or not isinstance(tr, dict)
            or tr.get("answer") == ANSWER_OF["return"]):
        return float("inf")
    at = tr.get("at")
    return float(at) if isinstance(at, int | float) else float("inf")


def response_times(events: Iterable[Mapping[str, Any]], group_by: str, now: float, tz: tzinfo,
                   names: Callable[[str, str], str],
                   since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
    """Groups with counts and p50/p90/max and within-% per stage."""
    buckets: dict[str, list[Mapping[str, Any]]] = {}
    for ev in events:
        if ev.get("status") == "cancelled" or ev.get("dispatched_at") is None:
            continue
        created = ev.get("created_at") or 0.0
        if (since is not None and created < since) or (until is not None and created >= until):
            continue
        if group_by == "day":
            key = datetime.fromtimestamp(created, tz).date().isoformat()
        else:
            key = ev.get(group_by) or "-"
        buckets.setdefault(key, []).append(ev)
    groups = []
    for key in sorted(buckets):
        evs = buckets[key]
        row: dict[str, Any] = {"key": key, "name": names(group_by, key), "count": len(evs)}
        for stage in STAGES:
            durations: list[float] = []
            counted = within = 0
            for ev in evs:
                res = stage_outcome(ev, stage, now)
                if res is None:
                    continue
                counted += 1
                within += res[0]
                if res[1] is not None:
                    durations.append(res[1])
            durations.sort()
            row[stage] = {
                "counted": counted,
                "p50_s": _pct(durations, 0.5), "p90_s": _pct(durations, 0.9),
                "max_s": round(durations[-1], 3) if durations else None,
                "within_pct": round(100.0 * within / counted, 1) if counted else None,
            }
        groups.append(row)
    return groups


def transfers(events: Iterable[Mapping[str, Any]], departments: dict[str, str],
              since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
    """Per department (contract §8, every configured one, ``departments``: id → name, and
    any other one found): how many transfers it got, accepted, returned, still pending or
    withdrawn (cancelled while transferred), and the answer time (transfer to answer,
    seconds) p50/p90/max. Each transfer of an event counts, from its timeline; events are
    filtered on their creation time like ``response_times``."""
    rows = {d: _transfer_row(d, name) for d, name in departments.items()}
    answers: dict[str, list[float]] = {d: [] for d in rows}
    for ev in events:
        created = ev.get("created_at") or 0.0
        if (since is not None and created < since) or (until is not None and created >= until):
            continue
        held: tuple[str, float] | None = None
        for e in ev.get("timeline") or ():
            if not isinstance(e, dict):
                continue
            action, at = e.get("action"), e.get("at")
            if action == PAST["transfer"] and isinstance(e.get("department"), str):
                dep = e["department"]
                if dep not in rows:
                    rows[dep], answers[dep] = _transfer_row(dep, dep), []
                rows[dep]["count"] += 1
                held = (dep, float(at) if isinstance(at, int | float) else 0.0)
            elif held is not None and action in ENDS_TRANSFER:
                rows[held[0]][action] += 1  # the row counts each under its record's action
                if action != PAST["cancel"] and isinstance(at, int | float):
                    answers[held[0]].append(max(0.0, float(at) - held[1]))
                held = None
        if held is not None:
            rows[held[0]]["pending"] += 1
    for dep, row in rows.items():
        vals = sorted(answers[dep])
        row["answer"] = {"p50_s": _pct(vals, 0.5), "p90_s": _pct(vals, 0.9),
                         "max_s": round(vals[-1], 3) if vals else None}
    return [rows[d] for d in rows]


# the records that end a transfer: the department's two answers, or an operator's cancel
ENDS_TRANSFER = (PAST["accept"], PAST["return"], PAST["cancel"])


def _transfer_row(dep: str, name: str) -> dict[str, Any]:
    return {"department": dep, "name": name, "count": 0, "accepted": 0, "returned": 0,
            "pending": 0, "cancelled": 0}


HEADERS_ZH = ["分组", "名称", "事件数",
              "响应计数", "响应P50(秒)", "响应P90(秒)", "响应最长(秒)", "1分钟内响应率(%)",
              "出发计数", "出发P50(秒)", "出发P90(秒)", "出发最长(秒)", "3分钟内出发率(%)",
              "到场计数", "到场P50(秒)", "到场P90(秒)", "到场最长(秒)", "15分钟内到场率(%)"]


def table_rows(groups: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for g in groups:
        row = [g["key"], g["name"], g["count"]]
        for stage in STAGES:
            s = g[stage]
            row += [s["counted"], s["p50_s"], s["p90_s"], s["max_s"], s["within_pct"]]
        rows.append(row)
    return rows


def to_csv(groups: list[dict[str, Any]]) -> bytes:
    """UTF-8 with BOM so Excel opens the Chinese headers correctly."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADERS_ZH)
    w.writerows(table_rows(groups))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(groups: list[dict[str, Any]], title: str) -> bytes:
    """An Excel workbook of the same table (openpyxl)."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = title[:31] or "stats"
    ws.append(HEADERS_ZH)
    for row in table_rows(groups):
        ws.append(row)
    for col in ws.columns:
        ws.column_dimensions[col[0].column_letter].width = 14
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
