"""What every ``tidings`` command shares: exit codes, error lines, loading the app, options.

Every failure ends as one line on stderr and an exit code from one table (a traceback only
with ``--debug``):

====  =========================================================================
code  meaning
====  =========================================================================
0     done
1     not found, or nothing done (no such message, queue, schedule; refused)
2     usage error: a bad argument, option, setting or app module
3     server unavailable or unusable (unreachable, misconfigured, no durability)
4     permission: the server refused the credentials or a command
5     internal error: a bug in tidings (run again with ``--debug``, report it)
====  =========================================================================
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from redis import exceptions as redis_errors
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from ..app import Tidings
from ..core.errors import (
    AccessDeniedError,
    BrokerUnavailableError,
    DatabaseUnavailableError,
    DurabilityError,
    EmbeddedServerError,
    InvalidTokenError,
    NotAuthorizedError,
    ServerConfigError,
    TidingsError,
    UnknownQueueError,
    UntrustedCertificateError,
    ValidationError,
)
from ..queues.queue import Queue


def _click_exceptions() -> Any:
    """Click's exceptions: typer >= 0.2x carries its own click, older typer uses click."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


_click_errors = _click_exceptions()

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_PERMISSION, EXIT_BUG = range(6)

console = Console()  # results (stdout)
err_console = Console(stderr=True)  # errors and progress
_debug = {"on": False}  # set by the --debug option of the root command

AppOption = Annotated[str | None, typer.Option(
    "--app", envvar="TIDINGS_APP", metavar="MODULE:APP",
    help="Your Tidings app (its queues and their settings).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


class CommandFailed(Exception):
    """A command could not do what it was asked; ``code`` is its exit code."""

    def __init__(self, message: str, code: int = EXIT_NOTHING) -> None:
        self.code = code
        super().__init__(message)


def set_debug(on: bool) -> None:
    _debug["on"] = on


def explain(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit code that report ``exc``."""
    if isinstance(exc, CommandFailed):
        return str(exc), exc.code
    if isinstance(exc, AccessDeniedError | redis_errors.AuthenticationError
                  | redis_errors.NoPermissionError):
        return (f"{exc} (check the user and password in TIDINGS_REDIS_URL and the server's "
                "ACL)"), EXIT_PERMISSION
    if isinstance(exc, InvalidTokenError | NotAuthorizedError):
        return str(exc), EXIT_PERMISSION
    if isinstance(exc, BrokerUnavailableError | redis_errors.ConnectionError
                  | redis_errors.TimeoutError):
        return (f"{exc} (is the server running? TIDINGS_REDIS_URL names it; unset, tidings "
                "uses the embedded server of this directory)"), EXIT_UNAVAILABLE
    if isinstance(exc, EmbeddedServerError | ServerConfigError | DurabilityError
                  | UntrustedCertificateError | DatabaseUnavailableError):
        return str(exc), EXIT_UNAVAILABLE
    if isinstance(exc, ValidationError):
        return str(exc), EXIT_NOTHING if isinstance(exc, UnknownQueueError) else EXIT_USAGE
    if isinstance(exc, TidingsError):
        return str(exc), EXIT_NOTHING
    return (f"unexpected {type(exc).__name__}: {exc} (a bug in tidings? Run the command "
            "again with --debug for the traceback, and report it)"), EXIT_BUG


def report(message: str) -> None:
    """Print one error line on stderr (never wrapped: scripts read it whole)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)


def fail(exc: BaseException) -> NoReturn:
    message, code = explain(exc)
    report(message)
    raise typer.Exit(code)


def _usage_failed(exc: typer.BadParameter | Any) -> NoReturn:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    report(f"{exc.format_message()}{hint}")
    raise typer.Exit(EXIT_USAGE)


def _handled(call: Callable[[], T]) -> T:
    try:
        return call()
    except _click_errors.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed: not an error
            raise
        _usage_failed(exc)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if _debug["on"]:
            raise
        fail(exc)


class _Behaviour:
    """What tidings commands and groups add: one error line and an exit code instead of a
    traceback, and help without a ``<bool>`` type next to flags (they take no value)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        parse = super().parse_args  # type: ignore[misc]
        return _handled(lambda: parse(ctx, args))

    def invoke(self, ctx: Any) -> Any:
        invoke = super().invoke  # type: ignore[misc]
        return _handled(lambda: invoke(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        super().format_help(ctx, formatter)  # type: ignore[misc]


class Command(_Behaviour, TyperCommand):
    """A tidings command (see :class:`_Behaviour`)."""


class Group(_Behaviour, TyperGroup):
    """A tidings command group (see :class:`_Behaviour`)."""


class Cli(typer.Typer):
    """A Typer whose commands and groups are :class:`Command` and :class:`Group`."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("cls", Group)
        options.setdefault("no_args_is_help", True)
        super().__init__(**options)

    def command(self, *args: Any, **options: Any) -> Callable[[F], F]:
        options.setdefault("cls", Command)
        decorator: Callable[[F], F] = super().command(*args, **options)
        return decorator


# -- loading the app and running a command ---------------------------------------------------


def load_app(spec: str | None, hint: str = "--app") -> Tidings:
    """Import ``module:attr`` (``hint`` names the option or argument it came from).

    Without a spec: a plain app with default queue settings.
    """
    if not spec:
        return Tidings()
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not all(part.isidentifier() for part in module_name.split(".")) or not attr.isidentifier():
        raise typer.BadParameter(f"{spec!r} is not MODULE:APP (a module and the name of its "
                                 "Tidings app, e.g. myapp:app)", param_hint=hint)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise typer.BadParameter(f"no module {module_name!r} in {os.getcwd()} or on "
                                     "PYTHONPATH", param_hint=hint) from None
        raise _import_failed(spec, exc, hint) from None
    except TidingsError:
        raise  # a bad setting met while the module built its app: reported as itself
    except Exception as exc:
        if _debug["on"]:
            raise
        raise _import_failed(spec, exc, hint) from None
    app = getattr(module, attr, None)
    if app is None:
        raise typer.BadParameter(f"module {module_name!r} has no attribute {attr!r}",
                                 param_hint=hint)
    if not isinstance(app, Tidings):
        raise typer.BadParameter(f"{spec!r} is a {type(app).__name__}, not a Tidings app",
                                 param_hint=hint)
    return app


def _import_failed(spec: str, exc: BaseException, hint: str) -> typer.BadParameter:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}"
    return typer.BadParameter(f"importing {spec!r} failed{where}: {type(exc).__name__}: "
                              f"{exc}", param_hint=hint)


def run(app: Tidings, body: Callable[[], Awaitable[T]]) -> T:
    """Connect ``app``, run ``body`` and close; errors reach the command's error handling."""

    async def main() -> T:
        async with app:
            return await body()

    return asyncio.run(main())


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


# -- arguments --------------------------------------------------------------------------------


def finite(value: float | None) -> float | None:
    """Option callback: numbers of seconds and rates must be finite (no nan, no inf)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive(value: float | None) -> float | None:
    """Option callback: a finite number above zero (a rate)."""
    if finite(value) is not None and value is not None and value <= 0:
        raise typer.BadParameter(f"{value} is not above zero")
    return value


def read_payload(text: str) -> Any:
    """The JSON of a payload argument: inline, ``-`` for stdin, or ``@path`` for a file."""
    if text == "-":
        raw = sys.stdin.buffer.read()
        source = "stdin"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {str(path)!r}: {exc.strerror}",
                                     param_hint="PAYLOAD") from None
        source = str(path)
    else:
        raw, source = text.encode(), ""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where = f" in {source}" if source else ""
        raise typer.BadParameter(f"not JSON{where}: {exc}", param_hint="PAYLOAD") from None


def suggest(name: str, candidates: Sequence[str] | set[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


async def resolve_queue(app: Tidings, name: str) -> Queue:
    """The plain queue ``name``, known to the app or the server; refused otherwise.

    Reads only, so a typo leaves nothing behind; the refusal suggests the closest names.
    """
    from ..ordering.queue import stored_ordered_names

    found = await app.find_queue(name)
    if found is not None:
        return found
    if name in await stored_ordered_names(app):
        raise CommandFailed(f"{name!r} is an ordered queue: see 'tidings ordered --help'",
                            EXIT_USAGE)
    known = set(await app.queue_names())
    listing = ", ".join(sorted(known)) or "none yet"
    raise CommandFailed(f"unknown queue {name!r}{suggest(name, known)}; known queues: "
                        f"{listing} (a queue is known once an app that declares it has "
                        "connected, or with --app MODULE:APP)")


def print_count(verb: str, count: int, json: bool,
                skipped: Sequence[dict[str, str]] = ()) -> None:
    """``replayed 3`` (or ``{"replayed": 3}``); nothing done exits with code 1.

    ``skipped``: entries left as they were (``entry_id``, ``message_id``, ``reason``),
    each named on stderr (or listed under ``"skipped"`` in the JSON).
    """
    if json:
        emit_json({verb: count, **({"skipped": list(skipped)} if skipped else {})})
    else:
        for item in skipped[:_SHOWN]:
            name = item["message_id"] or f"entry {item['entry_id']}"
            err_console.print(f"skipped {escape(name)}: {escape(item['reason'])}",
                              soft_wrap=True, highlight=False)
        if len(skipped) > _SHOWN:
            err_console.print(f"... and {len(skipped) - _SHOWN} more (--json lists them all)")
        typer.echo(f"{verb} {count}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if not count:
        raise typer.Exit(EXIT_NOTHING)


_SHOWN = 20  # skipped entries named on stderr
