"""What the CLI prints: tables, one-line JSON, and errors that say what to do (never a traceback).
Every command group (the main CLI and each service's) uses these, so output looks the same everywhere."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import NoReturn

import click


class UserError(RuntimeError):
    """A refusal whose message says what to do: the CLI prints it as it is (no traceback)."""


def fail(msg: str, code: int = 1) -> NoReturn:
    """Print `error: MSG` on stderr and exit CODE."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def sql_error_text(e: BaseException) -> str:
    """A database error as its message and hint (our SQL puts the fix in the hint)."""
    diag = getattr(e, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(e)).strip()
    hint = diag.message_hint if diag else None
    return f"{text} ({hint})" if hint else text


def fmt(v) -> str:
    """One table cell."""
    if v is None:
        return "-"
    if isinstance(v, dict | list):
        return json.dumps(v)[:80]
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def table(rows: list[dict], cols: list[str]) -> None:
    """ROWS as an aligned text table of COLS ("(none)" when empty)."""
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    click.echo("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        click.echo("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))


def json_line(v) -> str:
    """One value as JSON text for the terminal; what cannot be encoded is shown as its reason."""
    try:
        return json.dumps(v, ensure_ascii=True, default=str)
    except (RecursionError, ValueError, TypeError) as e:
        return f"<cannot be shown: {type(e).__name__}>"


def sql_rows(connect: Callable, sql: str, params: tuple = ()) -> list[dict]:
    """Run SQL on a connection from CONNECT(); a database error ends the command with its message and fix."""
    import psycopg

    try:
        with connect() as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []
    except psycopg.Error as e:
        fail(sql_error_text(e))


def call(fn: Callable, *args, **kw):
    """FN(*ARGS, **KW); a UserError or a database error ends the command with its message and fix."""
    import psycopg

    try:
        return fn(*args, **kw)
    except UserError as e:
        fail(str(e))
    except psycopg.Error as e:
        fail(sql_error_text(e))
