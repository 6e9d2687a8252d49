"""`orchestrator stats`: what the system did, from CentralCloud's statistics over the shared_queue
archives (refreshed first by the `statistics` job): messages per type per day, p50/p95 queue latency,
approval rate, questions per agent, top patterns, LLM usage and cost. As tables, or as charts (PNG).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import psycopg

QUERIES = {
    "messages": ("Messages per type per day",
                 """SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, msg_type, sum(messages)::bigint AS messages
                      FROM centralcloud.stats_latency
                     WHERE bucket = 'day' AND bucket_start >= date_trunc('day', now(), 'UTC') - make_interval(days => %(days)s - 1)
                     GROUP BY 1, 2 ORDER BY 1, 2""", ["day", "msg_type", "messages"]),
    "latency": ("Queue latency (enqueue to archive) per queue per day",
                """SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, queue_name, sum(messages)::bigint AS messages,
                          round(max(p50_ms)::numeric, 1) AS p50_ms, round(max(p95_ms)::numeric, 1) AS p95_ms
                     FROM centralcloud.stats_latency
                    WHERE bucket = 'day' AND bucket_start >= date_trunc('day', now(), 'UTC') - make_interval(days => %(days)s - 1)
                    GROUP BY 1, 2 ORDER BY 1, 2""", ["day", "queue_name", "messages", "p50_ms", "p95_ms"]),
    "approvals": ("Approval rate per day",
                  """SELECT day::text AS day, decisions, approved, round(approved::numeric / nullif(decisions, 0), 3) AS rate
                       FROM centralcloud.stats_approvals WHERE day > current_date - %(days)s ORDER BY day""",
                  ["day", "decisions", "approved", "rate"]),
    "questions": ("Questions per agent",
                  """SELECT agent_id, sum(questions)::bigint AS questions FROM centralcloud.stats_questions
                      WHERE day > current_date - %(days)s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20""",
                  ["agent_id", "questions"]),
    "patterns": ("Top patterns",
                 """SELECT rank, key, kind, instances, total_occurrences, confidence
                      FROM centralcloud.patterns ORDER BY rank LIMIT 10""",
                 ["rank", "key", "kind", "instances", "total_occurrences", "confidence"]),
    "llm": ("LLM usage and cost per day",
            """SELECT day::text AS day, model, calls, errors, prompt_tokens + completion_tokens AS tokens, round(cost, 4) AS cost
                 FROM centralcloud.stats_llm WHERE day > current_date - %(days)s ORDER BY day, model""",
            ["day", "model", "calls", "errors", "tokens", "cost"]),
}


def collect(conn: psycopg.Connection, days: int) -> dict[str, list[dict]]:
    """Every section's rows for the last DAYS days."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    return {name: conn.execute(q, {"days": days}).fetchall() for name, (_t, q, _c) in QUERIES.items()}


def refresh_days(conn: psycopg.Connection, first: date, last: date) -> dict:
    """Recompute the statistics of UTC days FIRST..LAST alone (e.g. restored from cold storage)."""
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(last + timedelta(days=1), time(), UTC)
    return conn.execute("SELECT centralcloud.refresh_statistics(%s, %s) AS r", (since, until)).fetchone()["r"]


def plot(data: dict[str, list[dict]], path: Path, days: int) -> None:
    """The same sections as charts in one PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"Orchestrator statistics, last {days} day(s)")

    def series(rows, x, group, y):
        out: dict[str, dict] = {}
        for r in rows:
            out.setdefault(str(r[group]), {})[r[x]] = float(r[y] or 0)
        return out

    def empty(ax, title):
        ax.set_title(title)
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey")

    def lines(ax, rows: list[dict], group: str, y: str, title: str, marker: str = "o", suffix: str = "",
              fontsize: int = 7) -> None:
        """One line per GROUP over the days, with a legend; "no data yet" when ROWS is empty."""
        if not rows:
            empty(ax, title)
            return
        for name, pts in sorted(series(rows, "day", group, y).items()):
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], marker=marker, label=name + suffix)
        ax.legend(fontsize=fontsize)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)

    lines(axes[0][0], data["messages"], "msg_type", "messages", "Messages per type per day")
    lines(axes[0][1], data["latency"], "queue_name", "p95_ms", "p95 queue latency per queue", ".", " p95", 6)
    if data["latency"]:
        axes[0][1].set_yscale("symlog")
        axes[0][1].set_ylabel("ms")

    ax = axes[0][2]
    if data["approvals"]:
        ax.bar([str(r["day"]) for r in data["approvals"]], [float(r["rate"] or 0) for r in data["approvals"]])
        ax.set_ylim(0, 1)
        ax.set_title("Approval rate per day")
        ax.tick_params(axis="x", rotation=30)
    else:
        empty(ax, "Approval rate per day")

    def ranked(ax, rows: list[dict], label: str, value: str, title: str) -> None:
        """Horizontal bars, first row on top."""
        if not rows:
            empty(ax, title)
            return
        ax.barh([r[label] for r in rows][::-1], [r[value] for r in rows][::-1])
        ax.set_title(title)

    ranked(axes[1][0], data["questions"], "agent_id", "questions", "Questions per agent")
    ranked(axes[1][1], data["patterns"], "key", "total_occurrences", "Top patterns (occurrences)")

    lines(axes[1][2], data["llm"], "model", "cost", "LLM cost per day")

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
