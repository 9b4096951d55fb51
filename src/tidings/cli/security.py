"""Security commands: ``tidings acl generate|apply`` (least-privilege Redis users).

``generate`` prints the ``ACL SETUSER`` lines of a role, for a DBA or a config file;
``apply`` runs them on the server TIDINGS_REDIS_URL names (as a user allowed to run
``ACL SETUSER``) and prints the password once, for the deployment's secret store.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..core.settings import load_settings
from ..security.acl import AclUser, Role, apply, generate
from .support import Cli, JsonOption, emit_json, load_app, run

acl_cli = Cli(help="Least-privilege Redis ACL users for tidings' roles.")

RoleOption = Annotated[Role, typer.Option("--role", help="What the user does.")]
QueueOption = Annotated[list[str] | None, typer.Option(
    "--queue", "-q", metavar="QUEUE", help="A queue the role may use (repeat; '*': all).")]
UserOption = Annotated[str | None, typer.Option(
    "--user", help="The ACL user name (default tidings-ROLE).")]
PrefixOption = Annotated[str | None, typer.Option(
    "--prefix", help="The key prefix (default TIDINGS_KEY_PREFIX).")]
PasswordOption = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from stdin instead of generating one.")]


def _user(role: Role, queue: list[str] | None, user: str | None, prefix: str | None,
          password_stdin: bool) -> tuple[AclUser, str]:
    key_prefix = prefix or load_settings().key_prefix
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    return generate(role, key_prefix, queue or [], user=user, password=password or None)


@acl_cli.command("generate")
def generate_command(role: RoleOption, queue: QueueOption = None, user: UserOption = None,
                     prefix: PrefixOption = None, password_stdin: PasswordOption = False,
                     json: JsonOption = False) -> None:
    """Print the ACL SETUSER line of a role (the password is in it: keep it secret)."""
    acl_user, _ = _user(role, queue, user, prefix, password_stdin)
    if json:
        emit_json({"user": acl_user.name, "role": role.value, "command": acl_user.setuser()})
    else:
        typer.echo(acl_user.line())


@acl_cli.command("apply")
def apply_command(role: RoleOption, queue: QueueOption = None, user: UserOption = None,
                  prefix: PrefixOption = None, password_stdin: PasswordOption = False,
                  json: JsonOption = False) -> None:
    """Create (or reset) the role's user on the server; prints its name and password."""
    acl_user, password = _user(role, queue, user, prefix, password_stdin)
    app = load_app(None)

    async def body() -> None:
        await apply(app.broker.client, [acl_user])

    run(app, body)
    shown = "(from stdin)" if password_stdin else password
    if json:
        emit_json({"user": acl_user.name, "role": role.value, "password": shown})
    else:
        typer.echo(f"user {acl_user.name} ({role.value}) applied; password: {shown}")
