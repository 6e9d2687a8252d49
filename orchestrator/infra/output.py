"""What the CLI prints: tables, one-line JSON, and errors that say what to do (never a traceback).
Every command group (the main CLI and each service's) uses these, so output looks the same everywhere."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import NoReturn

import click
from tabulate import tabulate


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


JSON_KEY = "orchestrator.json_tables"   # click context meta: the tables of a command run with --json


def json_option(f: Callable) -> Callable:
    """Adds --json to a command (or a group that prints when run alone): its tables are printed as JSON instead,
    one array of objects, or an object of arrays by table name when it prints several; other lines are left out."""

    @click.option("--json", "as_json", is_flag=True,
                  help="Print JSON instead of a table (an array of objects; several tables: an object of arrays).")
    @functools.wraps(f)
    def wrapper(*args, as_json: bool = False, **kw):
        if not as_json:
            return f(*args, **kw)
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is not None:  # a group given --json runs its subcommand as usual
            return f(*args, **kw)
        tables = ctx.meta[JSON_KEY] = {}
        try:
            out = f(*args, **kw)
        finally:
            del ctx.meta[JSON_KEY]
        click.echo(json.dumps(next(iter(tables.values())) if len(tables) == 1 else tables, default=str))
        return out

    return wrapper


def json_mode() -> bool:
    """True inside a command run with --json (plain lines are then left out)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and JSON_KEY in ctx.meta


def say(text: str = "") -> None:
    """A line of text beside a table: printed, except under --json (the output is then JSON only)."""
    if not json_mode():
        click.echo(text)


def json_value(v):
    """One cell as JSON: timestamps as ISO 8601, decimals as numbers."""
    if isinstance(v, Decimal):
        return float(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def table(rows: list[dict], cols: list[str], name: str | None = None) -> None:
    """ROWS as a table of COLS through tabulate ("(none)" when empty); under --json collected as NAME."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and JSON_KEY in ctx.meta:
        tables = ctx.meta[JSON_KEY]
        tables[name or f"table{len(tables) + 1}"] = [{c: json_value(r.get(c)) for c in cols} for r in rows]
        return
    if not rows:
        click.echo("(none)")
        return
    click.echo(tabulate([[fmt(r.get(c)) for c in cols] for r in rows], headers=cols, tablefmt="simple",
                        disable_numparse=True))


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
