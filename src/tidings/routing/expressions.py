"""The expression languages of routing rules, each a real library, none ``eval``:

- filters: CEL (Common Expression Language, the ``common-expression-language`` package, a
  Rust implementation), over ``payload``, ``headers``, ``topic``, ``routing_key`` and
  ``priority``;
- projections: JMESPath (``jmespath``);
- text templates: Jinja2 in its sandbox, with undefined names an error;
- target shapes: JSON Schema (``jsonschema``).

Each is compiled once, when a rule is saved or loaded; a compile error is a
:class:`~tidings.errors.RouteError` naming the rule's field and, where the library gives
it, the line and column.
"""

from __future__ import annotations

import re
from typing import Any

import cel
import jmespath
import jsonschema
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from jmespath.exceptions import JMESPathError

from ..core.errors import RouteError

VARIABLES = frozenset({"payload", "headers", "topic", "routing_key", "priority"})
_CEL_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")
# ``payload`` as a name (not part of a longer one), and ``payload.<field>``: when every use
# is a field access, a filter's context needs only those fields of the payload.
_PAYLOAD_ANY = re.compile(r"(?<![\w.])payload(?!\w)")
_PAYLOAD_FIELD = re.compile(r"(?<![\w.])payload\s*\.\s*([A-Za-z_]\w*)")
_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class FilterError(Exception):
    """A filter that could not be evaluated on one message (a missing field, a type
    mismatch, a result that is not a bool): a non-match, counted."""


class TransformError(Exception):
    """A transform that failed on one message: ``step`` names the part that failed."""

    def __init__(self, step: str, reason: str) -> None:
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


class Filter:
    """A compiled CEL boolean expression.

    ``uses``: the variables it reads; for ``payload``, the top-level fields it reads when
    it only ever reads fields (``payload.user.x``), else None (all of it). Converting the
    message to CEL values is most of a filter's cost, so a message's context holds only
    what its filters read.
    """

    __slots__ = ("_program", "source", "uses")

    def __init__(self, source: str, field: str) -> None:
        if not isinstance(source, str) or not source.strip():
            raise RouteError(field, "must be a non-empty CEL expression")
        try:
            self._program = cel.compile(source)
        except ValueError as exc:
            found = _CEL_POSITION.search(str(exc))
            if found is None:
                raise RouteError(field, f"invalid CEL expression: {exc}") from None
            raise RouteError(field, f"invalid CEL expression: {found.group(3)}",
                             line=int(found.group(1)), column=int(found.group(2))) from None
        unknown = sorted(set(self._program.variables()) - VARIABLES)
        if unknown:
            raise RouteError(field, f"unknown name {unknown[0]!r}; a filter may use "
                             f"{', '.join(sorted(VARIABLES))}")
        self.source = source
        self.uses: dict[str, frozenset[str] | None] = {
            name: None for name in self._program.variables()}
        if "payload" in self.uses and len(_PAYLOAD_ANY.findall(source)) == len(
                fields := _PAYLOAD_FIELD.findall(source)):
            self.uses["payload"] = frozenset(fields)

    def matches(self, context: Any) -> bool:
        """The expression's value on ``context`` (a ``cel.Context``); FilterError if it
        fails or is not a bool."""
        try:
            value = self._program.execute(context)
        except Exception as exc:  # the library raises KeyError, TypeError, ValueError ...
            raise FilterError(f"{type(exc).__name__}: {exc}") from None
        if type(value) is not bool:
            raise FilterError(f"the filter gave {type(value).__name__} {value!r}, not a bool")
        return value


Needs = dict[str, frozenset[str] | None]


def merge_needs(filters: list[Filter]) -> Needs:
    """What a set of filters reads (see :attr:`Filter.uses`)."""
    needs: Needs = {}
    for item in filters:
        for name, fields in item.uses.items():
            if name not in needs:
                needs[name] = fields
            else:
                known = needs[name]
                needs[name] = None if known is None or fields is None else known | fields
    return needs


def filter_context(variables: dict[str, Any], needs: Needs) -> Any:
    """The CEL context of one message (only what ``needs`` names), built once and shared
    by every filter it meets."""
    values: dict[str, Any] = {}
    for name, fields in needs.items():
        value = variables[name]
        if fields is not None and isinstance(value, dict):
            value = {k: value[k] for k in fields if k in value}
        values[name] = value
    return cel.Context(values)


class Projection:
    """A compiled JMESPath expression."""

    __slots__ = ("_expr", "source")

    def __init__(self, source: str, field: str) -> None:
        if not isinstance(source, str) or not source.strip():
            raise RouteError(field, "must be a non-empty JMESPath expression")
        try:
            self._expr = jmespath.compile(source)
        except JMESPathError as exc:
            position = getattr(exc, "lex_position", None)
            reason = getattr(exc, "msg", None) or str(exc).splitlines()[0]
            raise RouteError(field, f"invalid JMESPath expression: {reason}", line=1,
                             column=None if position is None else position + 1) from None
        self.source = source

    def apply(self, value: Any) -> Any:
        try:
            return self._expr.search(value)
        except JMESPathError as exc:
            raise TransformError("select", str(exc)) from None


class Template:
    """A compiled Jinja2 template (sandboxed; an undefined name fails the render)."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str, field: str) -> None:
        if not isinstance(source, str):
            raise RouteError(field, "must be a Jinja2 template string")
        try:
            self._template = _JINJA.from_string(source)
        except TemplateSyntaxError as exc:
            raise RouteError(field, f"invalid template: {exc.message}", line=exc.lineno) from None
        self.source = source

    def render(self, variables: dict[str, Any], step: str) -> str:
        try:
            return self._template.render(variables)
        except TemplateError as exc:
            raise TransformError(step, f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a filter of the template failed on this message's data
            raise TransformError(step, f"{type(exc).__name__}: {exc}") from None


class Schema:
    """A checked JSON Schema and its validator."""

    __slots__ = ("_validator", "source")

    def __init__(self, source: Any, field: str) -> None:
        if not isinstance(source, dict):
            raise RouteError(field, "must be a JSON Schema object")
        kind = jsonschema.validators.validator_for(source)
        try:
            kind.check_schema(source)
        except jsonschema.SchemaError as exc:
            path = "/".join(str(p) for p in exc.path)
            raise RouteError(field, f"invalid JSON Schema at {path or '(root)'}: "
                             f"{exc.message}") from None
        self._validator = kind(source)
        self.source = source

    def check(self, value: Any) -> None:
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            raise TransformError("schema", f"at {error.json_path}: {error.message}")
