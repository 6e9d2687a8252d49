"""Data of the operator console pages (issue 16): every figure comes from a narrow SQL function granted to
svc_nexus (bus.console_* in shared_queue, nexus.console_* in nexus); nothing here reads a table.

Charts are SVG made here, server-side, with axes, labels and a <title> per bar (the browser shows it on
hover), so they need no script and pass the page's strict CSP.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from html import escape

import psycopg
from markupsafe import Markup
from psycopg_pool import ConnectionPool

PAGE_SIZE = 25
STATES = ("waiting", "in_flight", "archived")
CALL_STATUSES = ("ok", "error", "refused")
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")


def rows(pool: ConnectionPool, sql: str, params: tuple = ()) -> list[dict]:
    with pool.connection() as c:
        return c.execute(sql, params).fetchall()


def cron_words(expr: str) -> str:
    """A cron expression in words (cron_descriptor, 24-hour clock, UTC as pg_cron runs it)."""
    from cron_descriptor import Options, get_description

    opts = Options()
    opts.use_24hour_time_format = True
    try:
        return get_description(expr, opts) + (" (UTC)" if any(ch.isdigit() for ch in expr.split()[1:2][0]) else "")
    except Exception:  # noqa: BLE001 - pg_cron also takes forms the library does not ('30 seconds')
        return expr


def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def duration_text(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    s = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def pages(total: int, page: int) -> dict:
    """Pagination of TOTAL rows at PAGE (1-based): the page, the count of pages, previous and next."""
    count = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), count)
    return {"page": page, "pages": count, "prev": page - 1 if page > 1 else None,
            "next": page + 1 if page < count else None, "offset": (page - 1) * PAGE_SIZE, "total": total}


def _tick(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.0f}" if v == int(v) else f"{v:.4g}"


def stacked_bars(labels: list[str], series: dict[str, list[float]], title: str, unit: str = "",
                 width: int = 640, height: int = 220) -> Markup:
    """An SVG bar chart, one bar per label stacked by series, with a y axis (4 ticks), x labels, a legend,
    and a <title> on each segment ("label · series: value") shown on hover. Every text is escaped."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    if not labels or not any(totals):
        return Markup(f'<p class="meta chart-empty">{escape(title)}: no data yet</p>')
    left, bottom, top_pad = 56, 34, 10
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    top = max(totals) or 1.0
    bw = plot_w / len(labels)
    parts = []
    for k in range(5):  # y axis: gridlines and values
        v = top * k / 4
        y = top_pad + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" class="tick">{escape(_tick(v))}</text>')
    every = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        y = top_pad + plot_h
        for j, (name, values) in enumerate(series.items()):
            v = values[i]
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)} · {escape(name)}: '
                         f'{escape(_tick(v))}{escape(unit)}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{left + i * bw + bw / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                         f'class="tick">{escape(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top_pad}" y2="{top_pad + plot_h}" class="axis"/>'
                 f'<line x1="{left}" x2="{width - 8}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" class="axis"/>')
    legend = "".join(f'<span class="key"><i class="sw{j % len(PALETTE)}"></i>{escape(name)}</span>'
                     for j, name in enumerate(series)) if len(series) > 1 else ""
    return Markup(f'<figure class="chart"><figcaption>{escape(title)}{" (" + escape(unit.strip()) + ")" if unit else ""}'
                  f'</figcaption><svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
                  f'{"".join(parts)}</svg><div class="legend">{legend}</div></figure>')


class Console:
    """The console's data: one method per page, over the bus pool (svc_nexus in shared_queue) and the
    nexus pool."""

    def __init__(self, bus_pool: ConnectionPool, nexus_pool: ConnectionPool):
        self.bus_pool, self.nexus_pool = bus_pool, nexus_pool

    def queues(self) -> list[dict]:
        return rows(self.bus_pool, "SELECT * FROM bus.console_queue_counts()")

    def messages(self, queue: str, state: str, search: str | None, page: int) -> dict:
        counts = {r["queue_name"]: r for r in self.queues()}
        first = rows(self.bus_pool, "SELECT * FROM bus.console_messages(%s, %s, %s, %s, 0)",
                     (queue, state, search, PAGE_SIZE))
        p = pages(first[0]["total"] if first else 0, page)
        items = first if p["offset"] == 0 else rows(
            self.bus_pool, "SELECT * FROM bus.console_messages(%s, %s, %s, %s, %s)",
            (queue, state, search, PAGE_SIZE, p["offset"]))
        for m in items:
            m["json"] = pretty_json(m["message"])
        return {"rows": items, "pager": p, "counts": counts.get(queue)}

    def dead_letters(self, queue: str | None, page: int) -> dict:
        first = rows(self.bus_pool, "SELECT * FROM bus.console_dead_letters(%s, %s, 0)", (queue, PAGE_SIZE))
        p = pages(first[0]["total"] if first else 0, page)
        items = first if p["offset"] == 0 else rows(
            self.bus_pool, "SELECT * FROM bus.console_dead_letters(%s, %s, %s)", (queue, PAGE_SIZE, p["offset"]))
        for m in items:
            m["json"] = pretty_json(m["message"])
        return {"rows": items, "pager": p}

    def replay_many(self, ids: list[int]) -> list[dict]:
        """Each dead letter replayed on its own (one refusal does not undo the others): per id, the new
        msg_id or why it was refused (the SQL error's words and hint)."""
        out = []
        for i in ids:
            try:
                new = rows(self.bus_pool, "SELECT bus.dashboard_dlq_replay(%s) AS id", (i,))[0]["id"]
                out.append({"id": i, "new_id": new, "error": None})
            except psycopg.Error as e:
                why = e.diag.message_primary or str(e)
                out.append({"id": i, "new_id": None,
                            "error": why + (f" ({e.diag.message_hint})" if e.diag.message_hint else "")})
        return out

    def purge(self, queue: str | None) -> int:
        return rows(self.bus_pool, "SELECT bus.console_dlq_purge(%s) AS n", (queue,))[0]["n"]

    def workers(self) -> list[dict]:
        out = rows(self.bus_pool, "SELECT * FROM bus.console_workers()")
        for w in out:
            st = w["stats"] or {}
            w["host"], w["pid"], w["version"] = st.get("host", ""), st.get("pid", ""), st.get("version", "")
            w["in_flight"] = st.get("in_flight", "")
            w["workers"] = ", ".join(f"{k}×{v}" for k, v in (st.get("workers") or {}).items())
        return out

    def schedules(self) -> list[dict]:
        out = rows(self.bus_pool, "SELECT * FROM bus.console_schedules()")
        for j in out:
            j["words"] = cron_words(j["schedule"])
            for r in j["recent"]:
                r["duration"] = duration_text(r.get("start"), r.get("end"))
                r["when"] = (r.get("start") or "")[:19].replace("T", " ")
        return out

    def run_now(self, jobname: str, by: str) -> int:
        return rows(self.bus_pool, "SELECT bus.console_schedule_run_now(%s, %s) AS id", (jobname, by))[0]["id"]

    def calls(self, model: str | None, agent: str | None, status: str | None, page: int) -> dict:
        q = "SELECT * FROM nexus.console_calls(%s, %s, %s, %s, %s)"
        first = rows(self.nexus_pool, q, (model, agent, status, PAGE_SIZE, 0))
        p = pages(first[0]["total"] if first else 0, page)
        items = first if p["offset"] == 0 else rows(self.nexus_pool, q, (model, agent, status, PAGE_SIZE, p["offset"]))
        choices: dict = {"model": [], "agent": []}
        for r in rows(self.nexus_pool, "SELECT * FROM nexus.console_call_choices(30)"):
            choices[r["field"]].append(r["value"])
        return {"rows": items, "pager": p, "choices": choices}

    def cost_charts(self, days: int = 14) -> dict:
        data = rows(self.nexus_pool, "SELECT * FROM nexus.console_cost(%s)", (days,))
        today = datetime.now(UTC).date()
        day_list = [today - timedelta(days=i) for i in range(days - 1, -1, -1)]
        models = sorted({r["model"] for r in data})
        cost = {m: [0.0] * days for m in models}
        calls = {m: [0.0] * days for m in models}
        index = {d: i for i, d in enumerate(day_list)}
        for r in data:
            i = index.get(r["day"] if isinstance(r["day"], date) else today)
            if i is not None:
                cost[r["model"]][i] += float(r["cost"] or 0)
                calls[r["model"]][i] += float(r["calls"])
        labels = [d.strftime("%m-%d") for d in day_list]
        return {"cost_chart": stacked_bars(labels, cost, f"LLM cost per day and model ({days} days)", " $"),
                "calls_chart": stacked_bars(labels, calls, f"LLM calls per day and model ({days} days)"),
                "model_chart": stacked_bars(models, {"cost": [sum(cost[m]) for m in models]},
                                            f"LLM cost per model ({days} days)", " $", width=360),
                "per_model": [{"model": m, "cost": sum(cost[m]), "calls": int(sum(calls[m]))} for m in models]}

    def decisions(self, kind: str | None, by: str | None, agent: str | None, page: int) -> dict:
        q = "SELECT * FROM nexus.console_decisions(%s, %s, %s, %s, %s)"
        first = rows(self.nexus_pool, q, (kind, by, agent, PAGE_SIZE, 0))
        p = pages(first[0]["total"] if first else 0, page)
        items = first if p["offset"] == 0 else rows(self.nexus_pool, q, (kind, by, agent, PAGE_SIZE, p["offset"]))
        return {"rows": items, "pager": p}
