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
# The names CEL's comprehension macros bind (``items.exists(i, i.price > 10)``: ``i``).
_MACRO_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
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

    ``uses``: the variables it reads, each with the field paths it reads of it when it
    only ever reads fields (``payload.user.region``: ``("user", "region")``), else None
    (all of it). Converting the message to CEL values is most of a filter's cost, so a
    message's context holds only what its filters read.
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
        names = set(self._program.variables()) - set(_MACRO_BOUND.findall(source))
        unknown = sorted(names - VARIABLES)
        if unknown:
            raise RouteError(field, f"unknown name {unknown[0]!r}; a filter may use "
                             f"{', '.join(sorted(VARIABLES))}")
        self.source = source
        self.uses: Needs = {name: None for name in names}
        for name in ("payload", "headers"):
            if name in self.uses:
                self.uses[name] = _field_paths(source, name)

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


Path = tuple[str, ...]
Needs = dict[str, frozenset[Path] | None]


def _field_paths(source: str, name: str) -> frozenset[Path] | None:
    """The field paths ``source`` reads of variable ``name`` if every use of it is a field
    access (``name.a.b``; a method call ends a path), else None."""
    uses = re.findall(rf"(?<![\w.]){name}(?!\w)", source)
    chain = rf"(?<![\w.]){name}((?:\s*\.\s*[A-Za-z_]\w*(?!\w|\s*\())+)"
    paths = [tuple(re.findall(r"[A-Za-z_]\w*", m.group(1))) for m in re.finditer(chain, source)]
    if len(paths) != len(uses):
        return None
    return frozenset(paths)


def merge_needs(filters: list[Filter]) -> Needs:
    """What a set of filters reads (see :attr:`Filter.uses`)."""
    needs: Needs = {}
    for item in filters:
        for name, paths in item.uses.items():
            known = needs.get(name, frozenset())
            needs[name] = None if known is None or paths is None else known | paths
    return needs


Tree = dict[str, Any]  # field -> its subtree, or None: all of it


def context_plan(needs: Needs) -> dict[str, Tree | None]:
    """``needs`` as trees of fields to copy (None: the whole variable), computed once per
    topic so each message's context is a plain walk."""
    return {name: None if paths is None else _tree(paths) for name, paths in needs.items()}


def _tree(paths: frozenset[Path]) -> Tree | None:
    if () in paths:
        return None
    heads: dict[str, set[Path]] = {}
    for path in paths:
        heads.setdefault(path[0], set()).add(path[1:])
    return {key: _tree(frozenset(rest)) for key, rest in heads.items()}


def _take(value: Any, tree: Tree) -> Any:
    """The parts of nested dicts ``value`` that ``tree`` reaches."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in tree.items():
        if key in value:
            found = value[key]
            out[key] = found if sub is None else _take(found, sub)
    return out


def filter_context(variables: dict[str, Any], plan: dict[str, Tree | None]) -> Any:
    """The CEL context of one message (only what ``plan`` names, see
    :func:`context_plan`), built once and shared by every filter it meets."""
    values: dict[str, Any] = {}
    for name, tree in plan.items():
        value = variables[name]
        values[name] = value if tree is None else _take(value, tree)
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
