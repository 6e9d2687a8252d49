"""`orchestrator instance ...`: Singularity instances, the operator's side (own database, role, schedules,
reply and inbox queues)."""

from __future__ import annotations

import click

from orchestrator.infra.config import settings
from orchestrator.infra.output import fail, json_option, table

instance_opt = click.option("--instance", default="default", show_default=True,
                            help="Singularity instance (database singularity_<id>; default = singularity).")


def _call(fn, *args, **kw):
    """FN(settings, ...): a UserError or database error reaches the CLI's one error path (cli.main.Cli)."""
    return fn(settings(), *args, **kw)


@click.group()
def instance() -> None:
    """Singularity instances: each its own database, role, schedules, outbox and reply queues."""


@instance.command("add")
@click.argument("instance_id")
def instance_add(instance_id: str) -> None:
    """Create instance INSTANCE_ID (database singularity_<id>); safe to run again."""
    from orchestrator.infra.instances import add_instance

    db = _call(add_instance, instance_id, progress=click.echo)
    click.echo(f"instance {instance_id}: database {db}, role svc_singularity_{instance_id}")


@instance.command("list")
@json_option
def instance_list() -> None:
    """Registered instances."""
    from orchestrator.infra.instances import list_instances

    table(_call(list_instances), ["instance_id", "database", "role", "exists", "queues", "outbox", "created_at"])


@instance.command("remove")
@click.argument("instance_id")
@click.option("--yes", is_flag=True, help="Really drop the database and everything in it.")
def instance_remove(instance_id: str, yes: bool) -> None:
    """Drop instance INSTANCE_ID: schedules, CDC slot, database, queues, role."""
    from orchestrator.infra.instances import remove_instance

    if not yes:
        fail(f"this drops database singularity_{instance_id} and its queues; add --yes to do it")
    _call(remove_instance, instance_id)
    click.echo(f"instance {instance_id} removed")


@instance.command("rotate-key")
@instance_opt
@click.option("--no-reencrypt", is_flag=True, help="Keep old sessions under their old key.")
def instance_rotate_key(instance: str, no_reencrypt: bool) -> None:
    """Add a new session-encryption key (new key id) and re-encrypt sessions with it."""
    from orchestrator.infra.instances import rotate_key

    r = _call(rotate_key, instance, reencrypt=not no_reencrypt)
    click.echo(f"instance {instance}: new key id {r['key_id']}; {r['reencrypted']} sessions re-encrypted")
