"""Security commands: ``tidings acl generate|apply`` (least-privilege Redis users) and
``tidings keys list|init|rotate|retire|reencrypt`` (the message encryption keyring).

``generate`` prints the ``ACL SETUSER`` lines of a role, for a DBA or a config file;
``apply`` runs them on the server TIDINGS_REDIS_URL names (as a user allowed to run
``ACL SETUSER``) and prints the password once, for the deployment's secret store.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..core.settings import load_settings
from ..security.acl import AclUser, Role, apply, generate
from ..security.encryption import Encryption
from ..security.keyring import Keyring, new_key
from ..security.reencrypt import Reencrypted, reencrypt_dead_letters
from .support import (
    EXIT_USAGE,
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    emit_json,
    load_app,
    resolve_queue,
    run,
)

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


# -- tidings keys: the encryption keyring --------------------------------------------------

keys_cli = Cli(help="Message encryption keys: list, rotate, retire, re-encrypt dead letters.")

FileOption = Annotated[Path | None, typer.Option(
    "--file", help="The keyring file (default TIDINGS_SECURITY__KEYRING_FILE).")]


def _ring_file(file: Path | None) -> Path:
    path = file or load_settings().security.keyring_file
    if path is None:
        raise CommandFailed("no keyring file: give --file or set "
                            "TIDINGS_SECURITY__KEYRING_FILE", EXIT_USAGE)
    return path


def _show_ring(ring: Keyring, json: bool) -> None:
    if json:
        emit_json({"active": ring.active_id, "ids": ring.ids})
    else:
        for key_id in ring.ids:
            typer.echo(f"{key_id}{'  (active)' if key_id == ring.active_id else ''}")


@keys_cli.command("list")
def keys_list(file: FileOption = None, json: JsonOption = False) -> None:
    """The key ids of the ring, the active one marked (never the keys)."""
    _show_ring(Keyring.load(_ring_file(file)), json)


@keys_cli.command("init")
def keys_init(file: FileOption = None, key_id: Annotated[str, typer.Option(
        "--id", help="The first key's id.")] = "k1", json: JsonOption = False) -> None:
    """Create a keyring file (0600) with one new random key."""
    path = _ring_file(file)
    if path.exists():
        raise CommandFailed(f"{path} exists: use 'tidings keys rotate'")
    ring = Keyring({key_id: new_key()}, key_id)
    ring.save(path)
    _show_ring(ring, json)


@keys_cli.command("rotate")
def keys_rotate(file: FileOption = None, key_id: Annotated[str | None, typer.Option(
        "--id", help="The new key's id (default: generated).")] = None,
                json: JsonOption = False) -> None:
    """Add a new random key and make it active; the old keys still decrypt."""
    path = _ring_file(file)
    ring = Keyring.load(path).rotated(key_id)
    ring.save(path)
    _show_ring(ring, json)


@keys_cli.command("retire")
def keys_retire(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
                file: FileOption = None, json: JsonOption = False) -> None:
    """Remove a key: what it encrypted can no longer be read (re-encrypt first)."""
    path = _ring_file(file)
    ring = Keyring.load(path).without(key_id)
    ring.save(path)
    _show_ring(ring, json)


@keys_cli.command("reencrypt")
def keys_reencrypt(queue: Annotated[str, typer.Argument(metavar="QUEUE")],
                   app_spec: AppOption = None, file: FileOption = None,
                   json: JsonOption = False) -> None:
    """Encrypt the dead letters of QUEUE again with the active key."""
    app = load_app(app_spec)
    ring = Keyring.load(_ring_file(file)) if file else None

    async def body() -> Reencrypted:
        found = await resolve_queue(app, queue)
        keys = ring or app.extension(Encryption).keys
        return await reencrypt_dead_letters(found, keys)

    result = run(app, body)
    if json:
        emit_json({"rewritten": result.rewritten, "current": result.current,
                   "skipped": [{"id": i, "reason": r} for i, r in result.skipped]})
    else:
        typer.echo(f"re-encrypted {result.rewritten} dead letter(s); {result.current} "
                   f"already current; {len(result.skipped)} skipped")
        for message_id, reason in result.skipped:
            typer.echo(f"  skipped {message_id}: {reason}")
