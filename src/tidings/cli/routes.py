"""``tidings routes ...``: see and change the routing rules from a shell.

Every change is a new version of the rule set, audited (``history``) and picked up by
every producer without a restart. Registered on the main command in cli/main.py.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .output import show_record, show_table
from .support import (
    AppOption,
    Cli,
    JsonOption,
    console,
    emit_json,
    load_app,
    read_payload,
    run,
)

# tidings.routing (CEL, JMESPath, Jinja2, JSON Schema: about 0.1 s) is imported by the
# commands that use it, not by every `tidings` start.
if TYPE_CHECKING:
    from ..routing.rules import Binding

routes_cli = Cli(help="Topic routing rules: list, add, remove, test, history, rollback.")
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The binding's name.")]
JsonArg = Annotated[str | None, typer.Option(
    help="JSON (inline, @file or - for stdin).")]


def _actor() -> str:
    from ..routing.store import default_actor

    return f"cli:{default_actor()}"


def _json_option(value: str | None) -> Any:
    return None if value is None else read_payload(value)


def _summary(binding: Binding) -> list[Any]:
    shaped = [k for k in ("transform", "schema") if getattr(binding, k) is not None]
    extras = [f"{k}={getattr(binding, k)}" for k in ("priority", "delay", "ttl")
              if getattr(binding, k) is not None]
    return [binding.name, binding.topic, binding.queue, binding.filter or "-",
            " ".join(extras + shaped) or "-"]


@routes_cli.command("list")
def routes_list(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """The current rule set: its version and every binding, in order."""
    app = load_app(app_spec)
    rules = run(app, app.topics.rules)
    if json:
        emit_json(rules.to_dict())
        return
    typer.echo(f"version {rules.version}; unrouted messages: {rules.unrouted}"
               + (f" (dead letters of {rules.unrouted_queue})" if rules.unrouted == "queue"
                  else ""))
    show_table(console, ["name", "topic", "queue", "filter", "options"],
               [_summary(b) for b in rules.bindings], ids=["name"])


@routes_cli.command("add")
def routes_add(
    name: NameArg,
    topic: Annotated[str, typer.Argument(help="Topic pattern: * one word, # any number.")],
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue copies go to.")],
    filter: Annotated[str | None, typer.Option(
        "--filter", help="CEL expression over payload, headers, topic, routing_key, "
                         "priority.")] = None,
    priority: Annotated[str | None, typer.Option(help="high, normal or low.")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before the copy is due.")] = None,
    ttl: Annotated[float | None, typer.Option(help="Seconds the copy lives.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Jinja2 template of the copy's idempotency key.")] = None,
    transform: JsonArg = None,
    schema: JsonArg = None,
    replace: Annotated[bool, typer.Option(help="Replace a binding of that name.")] = False,
    app_spec: AppOption = None,
) -> None:
    """Add a binding (refused with the field and reason if any part is invalid)."""
    options = {"filter": filter, "priority": priority, "delay": delay, "ttl": ttl,
               "idempotency_key": idempotency_key, "transform": _json_option(transform),
               "schema": _json_option(schema)}
    app = load_app(app_spec)
    rules = run(app, lambda: app.topics.bind(
        name, topic, queue, replace_existing=replace, actor=_actor(),
        **{k: v for k, v in options.items() if v is not None}))
    typer.echo(f"{name}: {topic} -> {queue}; rules version {rules.version}")


@routes_cli.command("remove")
def routes_remove(name: NameArg, app_spec: AppOption = None) -> None:
    """Remove a binding."""
    app = load_app(app_spec)
    rules = run(app, lambda: app.topics.unbind(name, actor=_actor()))
    typer.echo(f"{name}: removed; rules version {rules.version}")


@routes_cli.command("unrouted")
def routes_unrouted(
    action: Annotated[str, typer.Argument(help="queue (dead-letter them) or drop (count).")],
    queue: Annotated[str | None, typer.Option(help="The queue whose dead letters hold "
                                                   "them.")] = None,
    app_spec: AppOption = None,
) -> None:
    """What becomes of a message no binding takes."""
    app = load_app(app_spec)
    rules = run(app, lambda: app.topics.set_unrouted(action, queue, actor=_actor()))
    typer.echo(f"unrouted: {rules.unrouted}; rules version {rules.version}")


@routes_cli.command("test")
def routes_test(
    topic: Annotated[str, typer.Argument(help="The topic to publish to.")],
    payload: Annotated[str, typer.Argument(help="JSON payload (inline, @file or -).")],
    headers: JsonArg = None,
    routing_key: Annotated[str | None, typer.Option(help="The routing key.")] = None,
    priority: Annotated[str, typer.Option(help="high, normal or low.")] = "normal",
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Which bindings a message would match and what each queue would receive (nothing is
    published)."""
    app = load_app(app_spec)
    data = read_payload(payload)
    found = run(app, lambda: app.topics.test(topic, data, headers=_json_option(headers),
                                             routing_key=routing_key, priority=priority))
    if json:
        emit_json(found)
        return
    show_record(console, {"rules version": found["version"], "matched":
                          ", ".join(found["matched"]) or "-",
                          "filtered out": ", ".join(found["filtered_out"]) or "-"})
    for name, error in found["filter_errors"].items():
        typer.echo(f"filter of {name} failed (a non-match): {error}")
    rows = [[c["binding"], c["queue"], c["priority"], _compact(c["payload"])]
            for c in found["copies"]]
    rows += [[d["binding"] or "-", f"{d['queue']} (dead letter)", d["reason"], d["error"]]
             for d in found["dead_lettered"]]
    show_table(console, ["binding", "queue", "priority", "payload"], rows)
    if found["dropped"]:
        typer.echo("no binding takes it: it would be counted and dropped")


@routes_cli.command("publish")
def routes_publish(
    topic: Annotated[str, typer.Argument(help="The topic to publish to.")],
    payload: Annotated[str, typer.Argument(help="JSON payload (inline, @file or -).")],
    headers: JsonArg = None,
    routing_key: Annotated[str | None, typer.Option(help="The routing key.")] = None,
    priority: Annotated[str, typer.Option(help="high, normal or low.")] = "normal",
    idempotency_key: Annotated[str | None, typer.Option(
        help="Publishing this key again adds no copies.")] = None,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Publish to a topic: one copy per matching binding, in one atomic write."""
    app = load_app(app_spec)
    data = read_payload(payload)
    result = run(app, lambda: app.topics.publish(
        topic, data, headers=_json_option(headers), routing_key=routing_key,
        priority=priority, idempotency_key=idempotency_key))
    if json:
        emit_json({"message_id": result.message_id, "version": result.version,
                   "deliveries": [dataclasses.asdict(d) for d in result.deliveries],
                   "dead_lettered": [dataclasses.asdict(d) for d in result.dead_lettered],
                   "dropped": result.dropped})
        return
    typer.echo(f"{result.message_id}: rules version {result.version}")
    for d in result.deliveries:
        typer.echo(f"  {d.binding} -> {d.queue} {d.message_id}"
                   + ("" if d.new else " (already published)"))
    for d in result.dead_lettered:
        typer.echo(f"  dead letter of {d.queue}: {d.reason}: {d.error}")
    if result.dropped:
        typer.echo("  no binding takes it: counted and dropped")


@routes_cli.command("reroute")
def routes_reroute(
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 1000,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Route the unrouted queue's dead letters again under the current rules."""
    app = load_app(app_spec)
    done = run(app, lambda: app.topics.reroute_unrouted(limit))
    if json:
        emit_json(dataclasses.asdict(done))
        return
    typer.echo(f"{done.routed} routed, {done.unrouted} still unrouted, {done.skipped} "
               "skipped (not topic messages)")


def _compact(value: Any) -> str:
    import orjson

    return orjson.dumps(value, default=str).decode()


@routes_cli.command("history")
def routes_history(limit: Annotated[int, typer.Option(min=1, help="How many changes.")] = 20,
                   app_spec: AppOption = None, json: JsonOption = False) -> None:
    """The latest changes of the rules, newest first: who, what, when."""
    app = load_app(app_spec)
    entries = run(app, lambda: app.topics.history(limit))
    if json:
        emit_json([e.to_dict() for e in entries])
        return
    show_table(console, ["version", "at", "actor", "action", "detail"],
               [[e.version, e.at.strftime("%Y-%m-%d %H:%M:%S UTC"), e.actor, e.action,
                 e.detail] for e in entries])


@routes_cli.command("rollback")
def routes_rollback(
    version: Annotated[int, typer.Argument(min=0, help="The version to go back to.")],
    app_spec: AppOption = None,
) -> None:
    """Save the rules as they were at VERSION as a new version."""
    app = load_app(app_spec)
    rules = run(app, lambda: app.topics.rollback(version, actor=_actor()))
    typer.echo(f"rules of version {version} restored as version {rules.version}")


@routes_cli.command("stats")
def routes_stats(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Routing counters of the whole fleet: published, routed, unrouted, per binding."""
    app = load_app(app_spec)
    stats = run(app, app.topics.routing_stats)
    if json:
        emit_json(stats)
        return
    show_table(console, ["counter", "value"], [[k, v] for k, v in stats.items()])
