"""`orchestrator nexus ...`: providers, models, routes, budgets, the call log and HITL users."""

from __future__ import annotations

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, json_option, say, sql_rows, table


def _owner():
    """The nexus owner's connection (configuration is the operator's)."""
    from orchestrator.infra.db import connect, owner_conninfo

    return connect(owner_conninfo(settings(), "nexus"))


def _run(sql: str, params: tuple = ()) -> list[dict]:
    return sql_rows(_owner, sql, params)


def _show(sql: str, cols: list[str], params: tuple = (), name: str | None = None) -> None:
    table(_run(sql, params), cols, name=name)


@click.group()
def nexus() -> None:
    """Nexus: LLM providers, models, routes, budgets, call log, HITL users."""


# -- providers -----------------------------------------------------------------------------
@nexus.group(invoke_without_command=True)
@click.pass_context
@json_option
def providers(ctx: click.Context) -> None:
    """List providers (subcommands: set, remove)."""
    if ctx.invoked_subcommand is None:
        _show("SELECT * FROM nexus.providers ORDER BY name",
              ["name", "kind", "base_url", "api_key_env", "timeout_s", "max_retries", "backoff_ms", "enabled"])


@providers.command("set")
@click.argument("name")
@click.option("--kind", type=click.Choice(["openai", "anthropic", "gemini", "offline"]), required=True)
@click.option("--base-url", default=None, help="openai: .../v1 (OpenAI, vLLM, Ollama, llama.cpp); "
              "anthropic: https://api.anthropic.com; gemini: https://generativelanguage.googleapis.com")
@click.option("--key-env", default=None, help="NAME of the environment variable holding the API key (never the key).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per attempt.")
@click.option("--retries", default=2, show_default=True, help="Retries on 429/5xx/timeouts before the next model.")
@click.option("--backoff-ms", default=500, show_default=True, help="First backoff; doubles per retry.")
@click.option("--disabled", is_flag=True, help="Keep it configured but skip it in routes.")
def providers_set(name, kind, base_url, key_env, timeout, retries, backoff_ms, disabled) -> None:
    """Add or change provider NAME."""
    _run("SELECT nexus.set_provider(%s, %s, %s, %s, %s::float8, %s::int, %s::int, %s)",
         (name, kind, base_url, key_env, timeout, retries, backoff_ms, not disabled))
    click.echo(f"provider {name} set")


@providers.command("remove")
@click.argument("name")
def providers_remove(name) -> None:
    """Remove provider NAME (and its models and their route entries)."""
    gone = _run("SELECT nexus.remove_provider(%s) AS r", (name,))
    click.echo(f"provider {name} removed" if gone and gone[0]["r"] else f"no provider {name}")


# -- models ------------------------------------------------------------------------------
@nexus.group(invoke_without_command=True)
@click.pass_context
@json_option
def models(ctx: click.Context) -> None:
    """List models (subcommand: set)."""
    if ctx.invoked_subcommand is None:
        _show("SELECT * FROM nexus.models ORDER BY name",
              ["name", "provider", "remote_model", "cost_in_per_1k", "cost_out_per_1k", "max_tokens"])


@models.command("set")
@click.argument("name")
@click.option("--provider", required=True)
@click.option("--remote", default=None, help="The provider's model name (default: NAME).")
@click.option("--cost-in", default=0.0, show_default=True, help="Cost per 1000 prompt tokens.")
@click.option("--cost-out", default=0.0, show_default=True, help="Cost per 1000 completion tokens.")
@click.option("--max-tokens", default=1024, show_default=True, help="Default max_tokens for requests without one.")
def models_set(name, provider, remote, cost_in, cost_out, max_tokens) -> None:
    """Add or change model NAME served by PROVIDER."""
    _run("SELECT nexus.set_model(%s, %s, %s, %s::numeric, %s::numeric, %s::int)", (name, provider, remote or name, cost_in, cost_out, max_tokens))
    click.echo(f"model {name} set")


# -- routes ------------------------------------------------------------------------------
@nexus.group(invoke_without_command=True)
@click.pass_context
@json_option
def routes(ctx: click.Context) -> None:
    """List routes (subcommand: set)."""
    if ctx.invoked_subcommand is None:
        _show("SELECT * FROM nexus.route_list ORDER BY task_type", ["task_type", "models"])


@routes.command("set")
@click.argument("task_type")
@click.argument("models_", metavar="MODEL...", nargs=-1)
def routes_set(task_type, models_) -> None:
    """Route TASK_TYPE ('*' for every other) to MODEL, then the fallbacks in order (none: remove)."""
    _run("SELECT nexus.set_route(%s, %s)", (task_type, list(models_)))
    click.echo(f"route {task_type}: {' -> '.join(models_) or '(removed)'}")


# -- budgets -----------------------------------------------------------------------------
@nexus.group(invoke_without_command=True)
@click.pass_context
@json_option
def budget(ctx: click.Context) -> None:
    """Budgets and today's use (subcommand: set)."""
    if ctx.invoked_subcommand is None:
        _show("SELECT agent_id, daily_tokens, daily_cost FROM nexus.budgets ORDER BY 1",
              ["agent_id", "daily_tokens", "daily_cost"], name="budgets")
        say("")
        _show("SELECT * FROM nexus.budget_today ORDER BY agent_id",
              ["agent_id", "day", "tokens", "daily_tokens", "cost", "daily_cost"], name="today")


@budget.command("set")
@click.argument("agent_id")
@click.option("--tokens", type=int, default=None, help="Daily token limit (none: unlimited).")
@click.option("--cost", type=float, default=None, help="Daily cost limit (none: unlimited).")
def budget_set(agent_id, tokens, cost) -> None:
    """Set AGENT_ID's daily limits ('*' for every agent without its own)."""
    _run("SELECT nexus.set_budget(%s, %s::bigint, %s::numeric)", (agent_id, tokens, cost))
    click.echo(f"budget {agent_id}: tokens {tokens or 'unlimited'}, cost {cost or 'unlimited'} per day")


# -- call log ------------------------------------------------------------------------------
@nexus.command()
@click.option("--limit", default=20, show_default=True)
@json_option
def calls(limit: int) -> None:
    """The most recent LLM calls: provider, model, tokens, latency, cost, status, error."""
    _show("SELECT * FROM nexus.recent_calls LIMIT %s", ["created_at", "request_id", "agent_id", "model", "attempt",
          "tokens_in", "tokens_out", "latency_ms", "cost", "status", "error"], (limit,))


# -- users ---------------------------------------------------------------------------------
@nexus.group()
def user() -> None:
    """People who may sign in to the HITL page."""


@user.command("add")
@click.argument("username")
@click.option("--password", envvar="NEXUS_USER_PASSWORD", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The password (env NEXUS_USER_PASSWORD; prompted when absent).")
def user_add(username: str, password: str) -> None:
    """Add USERNAME (or change their password)."""
    from orchestrator.nexus.passwords import hash_password

    try:
        h = hash_password(password)
    except ValueError as e:
        fail(str(e))
    _run("SELECT nexus.user_set(%s, %s)", (username, h))
    click.echo(f"user {username} can sign in")


@user.command("remove")
@click.argument("username")
def user_remove(username: str) -> None:
    """Remove USERNAME and their sessions."""
    gone = _run("SELECT nexus.user_remove(%s) AS r", (username,))
    click.echo(f"user {username} removed" if gone and gone[0]["r"] else f"no user {username}")


@user.command("unblock")
@click.argument("username", required=False)
@click.option("--addr", help="An address: forget the failed sign-ins from there (an IPv6 address: its /64).")
def user_unblock(username: str | None, addr: str | None) -> None:
    """Forget failed sign-ins so the page stops holding them back: USERNAME's from anywhere, every name's
    from --addr, or (both given) USERNAME's from --addr."""
    import ipaddress

    if not username and not addr:
        fail("name a user (orchestrator nexus user unblock NAME) or an address (--addr 203.0.113.7)")
    try:
        ip = ipaddress.ip_address(addr) if addr else None
    except ValueError:
        fail(f"--addr {addr!r} is not an IP address (e.g. 203.0.113.7 or 2001:db8::1)")
    n = _run("SELECT nexus.signin_unblock(%s, %s) AS n", (username or None, ip))[0]["n"]
    who = " and ".join(x for x in (f"user {username}" if username else "", f"address {addr}" if addr else "") if x)
    click.echo(f"{who}: {n} failed sign-in(s) forgotten")
