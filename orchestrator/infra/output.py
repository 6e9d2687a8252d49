"""What the CLI prints: tables, one-line JSON, and errors that say what to do (never a traceback).
Every command group (the main CLI and each service's) uses these, so output looks the same everywhere."""

from __future__ import annotations

import json
import re
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
    """Run SQL on a connection from CONNECT(). A database error goes up to the CLI's one error path
    (orchestrator.cli.main.Cli), which prints its message and fix."""
    with connect() as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


# libpq's words for a failed connection attempt: where it tried and why it failed
CONNECT_RE = re.compile(r'connection to server (?:at "(?P<host>[^"]+)"(?: \([^)]*\))?, port (?P<port>\d+)'
                        r'|on socket "(?P<sock>[^"]+)")\s+failed:\s*(?P<why>[^\n]*)')


def connection_problem(e: BaseException, external: bool | None) -> str:
    """A failed connection (psycopg.OperationalError, a pool timeout) as where, why and the fix. EXTERNAL: a
    server configured by env (True), the embedded cluster (False), not known (None: the settings are bad)."""
    text = str(e).strip()
    m = CONNECT_RE.search(text)
    if m and m["host"]:
        where = f"the database server at {m['host']}:{m['port']}"
    elif m:
        where = f"the database server on socket {m['sock']}"
    else:
        where = "the database server"
    why = (m["why"] if m else (text.splitlines() or [type(e).__name__])[0]).strip()
    why = re.sub(r"^FATAL:\s*", "", why)
    if "password authentication failed" in why or "no password" in why:
        fix = ("the role's password is not the one the server has: run `orchestrator migrate` (it sets them), or set "
               "PGPASSWORD_<ROLE> / the URL's password to the right one")
    elif re.search(r'database "[^"]+" does not exist', why):
        fix = "run `orchestrator migrate` first (it creates the databases)"
    elif external:
        fix = ("start that server, or point SHARED_QUEUE_DB_URL (or SHARED_QUEUE_HOST/PORT), DB_HOST/DB_PORT and "
               "the *_DB_URL settings at one that runs; `orchestrator doctor` checks each piece")
    elif external is False:
        fix = "the embedded cluster is not running: start it with `make db` (or `orchestrator db start`)"
    else:
        fix = "start the server, then `orchestrator doctor` checks each piece"
    return f"cannot connect to {where}: {why}. Fix: {fix}"


def explain(e: BaseException, external: bool | None = None) -> str | None:
    """What to print for an error a user can fix (a failed connection, a refused value, a file that cannot be
    written), or None for anything else (a bug)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, psycopg.OperationalError | PoolTimeout) and not getattr(e, "sqlstate", None):
        return connection_problem(e, external)
    if isinstance(e, psycopg.Error):
        return sql_error_text(e)
    if isinstance(e, OSError) and e.filename:
        return (f"{e.strerror or e}: {e.filename}. Fix: name a file in a folder that exists and that you may write "
                "to (or create the folder first)")
    return None
