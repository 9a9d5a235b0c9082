"""The fleet's trend: boxes exposed, at risk, OK and stale per day (UTC), per group, kept by the
housekeeping sweep (today's row is rewritten every few minutes, so the last point is current), drawn as a
server-rendered SVG on the fleet page (no script)."""

from __future__ import annotations

import time
from typing import Any, Dict, FrozenSet, List, Optional

from sqlalchemy import Engine, delete, func, insert, select

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.services.fleet import Reader, state_of

SERIES = ("exposed", "at_risk", "ok", "stale")
NO_GROUP_KEY = 0  # daily_counts.group_key of the boxes in no group (group ids start at 1)
COLOURS = {"exposed": "#b42318", "at_risk": "#b54708", "ok": "#067647", "stale": "#475467"}


class Trend:
    def __init__(self, engine: Engine, reader: Reader) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.reader = reader

    def snapshot(self, now: Optional[float] = None) -> int:
        """Write today's counts per group and state (replacing today's earlier ones); returns the rows."""
        now = time.time() if now is None else now
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        d = m.devices.c
        silent = d.stale_base < self.reader.cutoff(now)
        with self.engine.connect() as conn:
            rows = conn.execute(select(d.group_id, d.verdict, silent.label("silent"), func.count().label("n"))
                                .where(d.retired_at.is_(None)).group_by(d.group_id, d.verdict, silent)).all()
        counts: Dict[tuple, int] = {}
        for row in rows:
            key = (row.group_id or NO_GROUP_KEY, state_of(row.verdict, bool(row.silent)))
            counts[key] = counts.get(key, 0) + int(row.n)
        with self.writer.begin() as conn:
            conn.execute(delete(m.daily_counts).where(m.daily_counts.c.day == day))
            if counts:
                conn.execute(insert(m.daily_counts), [{"day": day, "group_key": g, "state": s, "n": n}
                                                      for (g, s), n in counts.items()])
        return len(counts)

    def series(self, days: int = 30, group_ids: Optional[FrozenSet[int]] = None, now: Optional[float] = None
               ) -> Dict[str, Any]:
        """``{"days": [...], "exposed": [...], ...}`` for the last ``days`` days that have counts, summed over
        ``group_ids`` (None: every group and the boxes in none)."""
        now = time.time() if now is None else now
        first = time.strftime("%Y-%m-%d", time.gmtime(now - (days - 1) * 86400))
        c = m.daily_counts.c
        query = select(c.day, c.state, func.sum(c.n)).where(c.day >= first).group_by(c.day, c.state)
        if group_ids is not None:
            query = query.where(c.group_key.in_(sorted(group_ids) or [-1]))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        by_day: Dict[str, Dict[str, int]] = {}
        for day, state, n in rows:
            by_day.setdefault(day, {})[state] = int(n or 0)
        ordered = sorted(by_day)
        out: Dict[str, Any] = {"days": ordered}
        for state in SERIES:
            out[state] = [by_day[day].get(state, 0) for day in ordered]
        return out


def svg(series: Dict[str, Any], width: int = 600, height: int = 160) -> str:
    """The series as an SVG line chart (numbers only: nothing device-supplied goes into it)."""
    days: List[str] = series["days"]
    if not days:
        return ""
    top = max([max(series[s]) for s in SERIES] + [1])
    left, right, below, above = 34, 8, 20, 8
    plot_w, plot_h = width - left - right, height - below - above

    def point(i: int, n: int) -> str:
        x = left + (plot_w * i / (len(days) - 1) if len(days) > 1 else plot_w / 2)
        y = above + plot_h - plot_h * n / top
        return "%.1f,%.1f" % (x, y)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" class="trend" role="img" '
             'aria-label="boxes per state and day">' % (width, height),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d0d5dd"/>' % (left, above + plot_h, width - right,
                                                                          above + plot_h),
             '<text x="2" y="%d" font-size="10" fill="#667085">%d</text>' % (above + 8, top),
             '<text x="2" y="%d" font-size="10" fill="#667085">0</text>' % (above + plot_h),
             '<text x="%d" y="%d" font-size="10" fill="#667085">%s</text>' % (left, height - 4, days[0]),
             '<text x="%d" y="%d" font-size="10" fill="#667085" text-anchor="end">%s</text>' % (
                 width - right, height - 4, days[-1])]
    for state in SERIES:
        points = " ".join(point(i, n) for i, n in enumerate(series[state]))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s" data-series="%s"/>'
                     % (COLOURS[state], points, state))
        if len(days) == 1:
            x, y = point(0, series[state][0]).split(",")
            parts.append('<circle cx="%s" cy="%s" r="3" fill="%s"/>' % (x, y, COLOURS[state]))
    parts.append("</svg>")
    return "".join(parts)
