"""The committed OpenAPI document (``docs/openapi.json``): ``make openapi`` rewrites it
with ``python -m tidings.api.openapi docs/openapi.json``; a test checks it is current."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def document() -> bytes:
    """The API's OpenAPI document as stable JSON (sorted keys, indented, one newline)."""
    import fastapi
    import pydantic

    from ..app import Tidings
    from .app import create_api

    schema = create_api(Tidings()).openapi()
    # How a document renders (allOf wrappers, titles) varies with these versions; the test
    # compares byte for byte only with the versions that wrote the committed one.
    schema["info"]["x-generated-with"] = {"fastapi": fastapi.__version__,
                                          "pydantic": pydantic.VERSION}
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json").write_bytes(document())
