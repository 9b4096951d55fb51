"""Security commands: ``tidings acl generate|apply`` (least-privilege Redis users),
``tidings keys list|init|rotate|retire|reencrypt|rewrap|erase-subject`` (the message
encryption keyring) and ``tidings tokens create|list|revoke`` (API tokens); each
operation on the server authorised and audited.

Every ``tidings`` start (``tidings worker`` too) imports this module, so what needs
cryptography or PyJWT is imported by the command that uses it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..core.settings import load_settings
from ..security.acl import AclUser, Role, apply, generate
from ..security.keyring import Keyring, new_key
from ..security.tokens import TokenRecord

if TYPE_CHECKING:
    from ..security.reencrypt import Reencrypted
from .authz import authorized, on_queue
from .support import (
    EXIT_USAGE,
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    emit_json,
    load_app,
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

TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="TIDINGS_TOKEN", help="Act as this token's principal (default: the "
    "local operator, who holds the server credentials).")]


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
        async with authorized(app, "admin", "acl.apply", acl_user.name, role=role.value,
                              queues=queue or []) as operation:
            operation.detail["left_out"] = await apply(app.broker.client, [acl_user])

    run(app, body)
    shown = "(from stdin)" if password_stdin else password
    if json:
        emit_json({"user": acl_user.name, "role": role.value, "password": shown})
    else:
        typer.echo(f"user {acl_user.name} ({role.value}) applied; password: {shown}")


# -- tidings keys: the encryption keyring --------------------------------------------------

keys_cli = Cli(help="Message encryption keys: list, rotate, retire, re-encrypt dead letters, "
                    "subject keys.")

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
    _change_ring(file, json, lambda ring: ring.rotated(key_id))


@keys_cli.command("retire")
def keys_retire(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
                file: FileOption = None, json: JsonOption = False) -> None:
    """Remove a key: what it encrypted can no longer be read (re-encrypt first)."""
    _change_ring(file, json, lambda ring: ring.without(key_id))


def _change_ring(file: Path | None, json: bool, change: Callable[[Keyring], Keyring]) -> None:
    path = _ring_file(file)
    ring = change(Keyring.load(path))
    ring.save(path)
    _show_ring(ring, json)


@keys_cli.command("erase-subject")
def keys_erase_subject(subject: Annotated[str, typer.Argument(metavar="SUBJECT")],
                       token: TokenOption = None) -> None:
    """Delete a subject's data key: all its messages become unreadable (crypto-shredding)."""
    app = load_app(None)

    async def body() -> bool:
        from ..security.encryption import Encryption

        async with authorized(app, "keys:erase", "keys.erase_subject", subject, token):
            if not await app.extension(Encryption).subjects.erase(subject):
                raise CommandFailed(f"no data key of subject {subject!r} (never made, or "
                                    "erased)")
        return True

    run(app, body)
    typer.echo(f"erased the data key of {subject}")


@keys_cli.command("rewrap")
def keys_rewrap(file: FileOption = None, token: TokenOption = None) -> None:
    """Wrap every subject's data key with the active key (before retiring an old one)."""
    app = load_app(None)
    ring = Keyring.load(_ring_file(file)) if file else None

    async def body() -> int:
        from ..security.encryption import Encryption

        async with authorized(app, "keys:manage", "keys.rewrap", "subjects", token) as op:
            encryption = app.extension(Encryption)
            if ring is not None:
                encryption.use(ring)
            done = op.detail["rewrapped"] = await encryption.subjects.rewrap()
        return done

    typer.echo(f"wrapped {run(app, body)} subject data key(s) with the active key")


@keys_cli.command("reencrypt")
def keys_reencrypt(queue: Annotated[str, typer.Argument(metavar="QUEUE")],
                   app_spec: AppOption = None, file: FileOption = None,
                   token: TokenOption = None, json: JsonOption = False) -> None:
    """Encrypt the dead letters of QUEUE again with the active key."""
    app = load_app(app_spec)
    ring = Keyring.load(_ring_file(file)) if file else None

    async def body() -> Reencrypted:
        from ..security.encryption import Encryption
        from ..security.reencrypt import reencrypt_dead_letters

        async with on_queue(app, queue, "keys:reencrypt", "keys.reencrypt", token=token) as q:
            done = await reencrypt_dead_letters(q, ring or app.extension(Encryption).keys)
        return done

    result = run(app, body)
    if json:
        emit_json({"rewritten": result.rewritten, "current": result.current,
                   "skipped": [{"id": i, "reason": r} for i, r in result.skipped]})
    else:
        typer.echo(f"re-encrypted {result.rewritten} dead letter(s); {result.current} "
                   f"already current; {len(result.skipped)} skipped")
        for message_id, reason in result.skipped:
            typer.echo(f"  skipped {message_id}: {reason}")


# -- tidings tokens: API tokens -------------------------------------------------------------

tokens_cli = Cli(help="API tokens for the HTTP API and --token: create, list, revoke.")


@tokens_cli.command("create")
def tokens_create(
        name: Annotated[str, typer.Option("--name", help="Who or what the token is for.")],
        scope: Annotated[list[str], typer.Option(
            "--scope", metavar="SCOPE", help="A permission (repeat): publish:email, "
            "consume:*, dlq:replay:sms, admin.")],
        expires: Annotated[str | None, typer.Option(
            "--expires", metavar="DURATION", help="Lifetime: 3600, 90m, 12h, 30d.")] = None,
        token: TokenOption = None, json: JsonOption = False) -> None:
    """Create a token; it is printed once and only its hash is kept."""
    app = load_app(None)
    lifetime = None if expires is None else _duration(expires)

    async def body() -> tuple[str, TokenRecord]:
        from ..security.auth import Authenticator

        async with authorized(app, "tokens:manage", "tokens.create", name, token) as op:
            made = await app.extension(Authenticator).tokens.create(name, scope, lifetime)
            op.detail.update(token_id=made[1].id, scopes=list(made[1].scopes))
        return made

    secret, record = run(app, body)
    if json:
        emit_json({**record.as_dict(), "token": secret})
    else:
        typer.echo(f"token {record.id} ({record.name}): {secret}")


@tokens_cli.command("list")
def tokens_list(token: TokenOption = None, json: JsonOption = False) -> None:
    """The tokens: id, name, scopes, expiry (never the secrets)."""
    app = load_app(None)

    async def body() -> list[TokenRecord]:
        from ..security.auth import Authenticator

        async with authorized(app, "tokens:manage", "tokens.list", "", token):
            return await app.extension(Authenticator).tokens.list()

    records = run(app, body)
    if json:
        emit_json([r.as_dict() for r in records])
        return
    for r in records:
        typer.echo(f"{r.id}  {r.name}  {','.join(r.scopes)}  expires "
                   f"{'never' if r.expires_at is None else int(r.expires_at)}")


@tokens_cli.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(metavar="TOKEN_ID")],
                  token: TokenOption = None) -> None:
    """Revoke a token at once."""
    app = load_app(None)

    async def body() -> bool:
        from ..security.auth import Authenticator

        async with authorized(app, "tokens:manage", "tokens.revoke", token_id, token):
            if not await app.extension(Authenticator).tokens.revoke(token_id):
                raise CommandFailed(f"no token {token_id!r}")
        return True

    run(app, body)
    typer.echo(f"revoked {token_id}")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration (3600, 90m, 12h, 30d)",
                                 param_hint="--expires") from None
    if not value > 0 or value == float("inf"):
        raise typer.BadParameter(f"{text!r} must be > 0", param_hint="--expires")
    return value
