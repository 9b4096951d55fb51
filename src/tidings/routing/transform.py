"""Applying a binding's transform to one payload: pure functions of the message.

Steps run in a fixed order (see :class:`~tidings.routing.rules.Transform`); each works on
a copy, so the published payload (and every other binding's copy) is never changed. A
step that fails raises :class:`~tidings.routing.expressions.TransformError` naming it;
the router dead-letters that copy with the reason instead of sending it in the wrong
shape.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from .expressions import TransformError
from .rules import CompiledBinding

TransformFunction = Callable[[Any, Mapping[str, Any]], Any]
_MISSING = object()


def get_path(value: Any, path: str) -> Any:
    """The value at dotted ``path`` in nested dicts, or a sentinel if absent."""
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def set_path(value: dict[str, Any], path: str, new: Any, step: str) -> None:
    """Set dotted ``path`` in ``value``, making the dicts on the way."""
    *parents, last = path.split(".")
    for part in parents:
        child = value.setdefault(part, {})
        if not isinstance(child, dict):
            raise TransformError(step, f"{path!r}: {part!r} holds a {type(child).__name__}, "
                                 "not an object")
        value = child
    value[last] = new


def pop_path(value: dict[str, Any], path: str) -> Any:
    *parents, last = path.split(".")
    for part in parents:
        value = value.get(part)  # type: ignore[assignment]
        if not isinstance(value, dict):
            return _MISSING
    return value.pop(last, _MISSING)


def apply_transform(compiled: CompiledBinding, variables: Mapping[str, Any],
                    functions: Mapping[str, TransformFunction]) -> Any:
    """The payload ``compiled``'s binding sends, from the message ``variables``
    (``payload``, ``headers``, ``topic``, ``routing_key``, ``priority``)."""
    transform = compiled.binding.transform
    payload = variables["payload"]
    if transform is not None:
        payload = payload if compiled.select is None else compiled.select.apply(payload)
        if transform.rename or transform.defaults or compiled.templates:
            payload = _reshape(payload, compiled, variables)
        if transform.function is not None:
            payload = _call(transform.function, payload, variables, functions)
    if compiled.schema is not None:
        compiled.schema.check(payload)
    return payload


def _reshape(payload: Any, compiled: CompiledBinding, variables: Mapping[str, Any]) -> Any:
    transform = compiled.binding.transform
    assert transform is not None
    if not isinstance(payload, dict):
        raise TransformError("rename", f"the payload is a {type(payload).__name__}; rename, "
                             "defaults and templates need an object")
    out = copy.deepcopy(payload)
    for source, target in transform.rename.items():
        found = pop_path(out, source)
        if found is not _MISSING:
            set_path(out, target, found, "rename")
    for path, default in transform.defaults.items():
        if get_path(out, path) is _MISSING:
            set_path(out, path, copy.deepcopy(default), "defaults")
    for path, template in compiled.templates.items():
        set_path(out, path, template.render(dict(variables), f"templates.{path}"), "templates")
    return out


def _call(name: str, payload: Any, variables: Mapping[str, Any],
          functions: Mapping[str, TransformFunction]) -> Any:
    function = functions.get(name)
    if function is None:
        raise TransformError("function", f"no transform function {name!r} is registered in "
                             "this process (app.topics.transform)")
    try:
        return function(copy.deepcopy(payload), variables)
    except Exception as exc:
        raise TransformError("function", f"{name}: {type(exc).__name__}: {exc}") from None
