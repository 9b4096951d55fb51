"""Routing rules as data: bindings (topic pattern -> queue, with a filter and a transform)
and the rule set that holds them, checked and compiled once when made.

A rule set is plain JSON in Redis (see :mod:`.store`); :meth:`RuleSet.from_dict` checks
every field and compiles every expression, so a bad rule is refused when it is saved (a
:class:`~tidings.errors.RouteError` naming ``bindings[NAME].FIELD``), never met by a
publish.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.config import QUEUE_NAME_PATTERN
from ..core.errors import RouteError, ValidationError
from ..core.message import Priority, check_payload
from .expressions import Filter, Projection, Schema, Template

_WORD = r"[A-Za-z0-9_\-]+"
_TOPIC = re.compile(rf"^{_WORD}(?:\.{_WORD})*$")
_PATTERN_WORD = re.compile(rf"^(?:{_WORD}|\*|#)$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_PATH = re.compile(r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$")
UNROUTED_QUEUE = "unrouted"


def check_topic(topic: Any, what: str = "topic") -> str:
    """``topic`` if it is dot-separated words (letters, digits, ``_``, ``-``)."""
    if not isinstance(topic, str) or len(topic) > 255 or not _TOPIC.match(topic):
        raise ValidationError(what, "must be dot-separated words of letters, digits, _ and - "
                              f"(e.g. order.shipped), at most 255 characters; got {topic!r}")
    return topic


class TopicPattern:
    """An AMQP topic pattern: ``*`` is exactly one word, ``#`` zero or more.

    Matched word by word over the set of topic positions reachable so far (at most
    words x pattern words steps), not by a regex: ``#.#.#.x`` as a regex backtracks
    exponentially on a long topic that does not match.
    """

    __slots__ = ("_literal", "source", "words")

    def __init__(self, source: str, words: list[str]) -> None:
        self.source = source
        self.words = tuple(w for i, w in enumerate(words)
                           if not (w == "#" and i and words[i - 1] == "#"))  # "#.#" is "#"
        self._literal = None if {"*", "#"} & set(self.words) else source

    def matches(self, topic: str) -> bool:
        if self._literal is not None:
            return topic == self._literal
        words = topic.split(".")
        count = len(words)
        reach = {0}  # topic positions the pattern words so far can have consumed
        for word in self.words:
            if word == "#":
                reach = set(range(min(reach), count + 1))
            else:
                reach = {i + 1 for i in reach if i < count and word in ("*", words[i])}
                if not reach:
                    return False
        return count in reach


def compile_pattern(pattern: Any, field_name: str) -> TopicPattern:
    """``pattern`` checked (RouteError naming ``field_name``) and ready to match."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
        raise RouteError(field_name, f"must be a topic pattern like order.* or marketing.#; "
                         f"got {pattern!r}")
    words = pattern.split(".")
    for word in words:
        if not _PATTERN_WORD.match(word):
            raise RouteError(field_name, f"bad word {word!r} in pattern {pattern!r}: a word "
                             "is letters, digits, _ and -, or * (one word) or # (any number)")
    return TopicPattern(pattern, words)


def _seconds(value: Any, field_name: str, *, zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        raise RouteError(field_name, f"must be a number of seconds {'>=' if zero else '>'} 0, "
                         f"got {value!r}")
    return float(value)


def _text(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise RouteError(f"{where}.{key}", f"must be a string, got {value!r}")
    return value


def _paths(value: Any, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RouteError(field_name, "must be an object of dotted field paths")
    for key in value:
        if not isinstance(key, str) or not _PATH.match(key):
            raise RouteError(field_name, f"{key!r} is not a dotted field path (user.phone)")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Transform:
    """How a binding reshapes the payload for its queue, applied in this order:

    ``select`` (a JMESPath projection of the payload), ``rename`` (dotted path -> dotted
    path), ``defaults`` (dotted path -> value, where absent), ``templates`` (dotted path ->
    Jinja2 template over ``payload``, ``headers``, ``topic``, ``routing_key``, the
    payload as it was published), then ``function``: a callable registered by name with
    ``app.topics.transform(name)``.
    """

    select: str | None = None
    rename: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)
    function: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"select": self.select, "rename": self.rename,
                               "defaults": self.defaults, "templates": self.templates,
                               "function": self.function}
        return {k: v for k, v in out.items() if v}

    @classmethod
    def from_dict(cls, data: Any, field_name: str) -> Transform:
        if not isinstance(data, dict):
            raise RouteError(field_name, "must be an object")
        unknown = set(data) - {"select", "rename", "defaults", "templates", "function"}
        if unknown:
            raise RouteError(f"{field_name}.{sorted(unknown)[0]}", "unknown transform step; "
                             "the steps are select, rename, defaults, templates, function")
        rename = _paths(data.get("rename"), f"{field_name}.rename")
        for source, target in rename.items():
            if not isinstance(target, str) or not _PATH.match(target):
                raise RouteError(f"{field_name}.rename", f"{source!r} -> {target!r}: the "
                                 "target is not a dotted field path")
        defaults = _paths(data.get("defaults"), f"{field_name}.defaults")
        try:
            check_payload(defaults)
        except ValidationError as exc:
            raise RouteError(f"{field_name}.defaults", exc.reason) from None
        function = data.get("function")
        if function is not None and (not isinstance(function, str) or not _NAME.match(function)):
            raise RouteError(f"{field_name}.function", f"must be a registered name, got "
                             f"{function!r}")
        return cls(data.get("select"), rename, defaults,
                   _paths(data.get("templates"), f"{field_name}.templates"), function)


@dataclass(frozen=True, slots=True)
class Binding:
    """A topic pattern bound to a queue, with what its copies carry.

    ``filter``: a CEL expression over ``payload``, ``headers``, ``topic``,
    ``routing_key`` and ``priority``; the copy goes only where it is true. ``priority``,
    ``delay``, ``ttl`` (seconds) override the publish's. ``idempotency_key``: a Jinja2
    template of the copy's key (default: the published message's key, else its id), always
    scoped by the binding's name. ``schema``: the JSON Schema the transformed payload must
    satisfy.
    """

    name: str
    topic: str
    queue: str
    filter: str | None = None
    priority: str | None = None
    delay: float | None = None
    ttl: float | None = None
    idempotency_key: str | None = None
    transform: Transform | None = None
    schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "topic": self.topic, "queue": self.queue}
        for key in ("filter", "priority", "delay", "ttl", "idempotency_key", "schema"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.transform is not None:
            out["transform"] = self.transform.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Binding:
        if not isinstance(data, dict):
            raise RouteError("bindings", f"a binding must be an object, got {data!r}")
        name = data.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RouteError("bindings[].name", "must be 1-100 letters, digits, _ . -; got "
                             f"{name!r}")
        where = f"bindings[{name}]"
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise RouteError(f"{where}.{sorted(unknown)[0]}", "unknown field")
        queue = data.get("queue")
        if not isinstance(queue, str) or not re.match(QUEUE_NAME_PATTERN, queue):
            raise RouteError(f"{where}.queue", f"must be a queue name, got {queue!r}")
        priority = data.get("priority")
        if priority is not None:
            try:
                priority = Priority.parse(priority).name.lower()
            except ValidationError as exc:
                raise RouteError(f"{where}.priority", exc.reason) from None
        topic = data.get("topic")
        compile_pattern(topic, f"{where}.topic")  # refuses what is not a pattern string
        assert isinstance(topic, str)
        transform = data.get("transform")
        return cls(name=name, topic=topic, queue=queue,
                   filter=_text(data, "filter", where), priority=priority,
                   delay=_seconds(data.get("delay"), f"{where}.delay", zero=True),
                   ttl=_seconds(data.get("ttl"), f"{where}.ttl", zero=False),
                   idempotency_key=_text(data, "idempotency_key", where),
                   transform=None if transform is None else Transform.from_dict(
                       transform, f"{where}.transform"),
                   schema=data.get("schema"))


class CompiledBinding:
    """A binding with its pattern and expressions compiled (what a publish runs)."""

    __slots__ = ("binding", "counter", "filter", "idempotency", "pattern", "schema", "select",
                 "templates")

    def __init__(self, binding: Binding) -> None:
        where = f"bindings[{binding.name}]"
        self.binding = binding
        self.counter = f"routed:{binding.name}"  # its copies' routing counter
        self.pattern = compile_pattern(binding.topic, f"{where}.topic")
        self.filter = None if binding.filter is None else Filter(binding.filter,
                                                                 f"{where}.filter")
        self.idempotency = None if binding.idempotency_key is None else Template(
            binding.idempotency_key, f"{where}.idempotency_key")
        transform = binding.transform
        self.select = None if transform is None or transform.select is None else Projection(
            transform.select, f"{where}.transform.select")
        self.templates = {} if transform is None else {
            path: Template(source, f"{where}.transform.templates.{path}")
            for path, source in transform.templates.items()}
        self.schema = None if binding.schema is None else Schema(binding.schema,
                                                                 f"{where}.schema")

    def matches_topic(self, topic: str) -> bool:
        return self.pattern.matches(topic)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One version of the rules: the bindings in order, and what becomes of a message no
    binding takes (``unrouted``: ``"queue"``, dead-lettered with its reason in the dead-
    letter queue of ``unrouted_queue``; or ``"drop"``, counted as ``dropped``)."""

    version: int = 0
    bindings: tuple[Binding, ...] = ()
    unrouted: str = "queue"
    unrouted_queue: str = UNROUTED_QUEUE
    compiled: tuple[CompiledBinding, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [b.name for b in self.bindings]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise RouteError(f"bindings[{duplicate}].name", "two bindings have this name")
        if self.unrouted not in ("queue", "drop"):
            raise RouteError("unrouted", f"must be 'queue' or 'drop', got {self.unrouted!r}")
        if not isinstance(self.unrouted_queue, str) or not re.match(QUEUE_NAME_PATTERN,
                                                                    self.unrouted_queue):
            raise RouteError("unrouted_queue", f"must be a queue name, got "
                             f"{self.unrouted_queue!r}")
        if not self.compiled and self.bindings:
            object.__setattr__(self, "compiled",
                               tuple(CompiledBinding(b) for b in self.bindings))

    def binding(self, name: str) -> Binding | None:
        return next((b for b in self.bindings if b.name == name), None)

    def matching(self, topic: str) -> list[CompiledBinding]:
        """The bindings whose pattern matches ``topic``, in rule order (filters not run)."""
        return [c for c in self.compiled if c.matches_topic(topic)]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "unrouted": self.unrouted,
                "unrouted_queue": self.unrouted_queue,
                "bindings": [b.to_dict() for b in self.bindings]}

    @classmethod
    def from_dict(cls, data: Any) -> RuleSet:
        if not isinstance(data, dict):
            raise RouteError("rules", "must be an object")
        bindings = data.get("bindings", [])
        if not isinstance(bindings, list):
            raise RouteError("bindings", "must be a list")
        version = data.get("version", 0)
        if type(version) is not int or version < 0:
            raise RouteError("version", f"must be an int >= 0, got {version!r}")
        return cls(version, tuple(Binding.from_dict(b) for b in bindings),
                   data.get("unrouted", "queue"), data.get("unrouted_queue", UNROUTED_QUEUE))
