"""JSON logging: every line is one JSON object, whatever the message or its fields hold."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings import ConfigError
from tidings.observability.logs import configure_logging

AWKWARD = ['he said "stop"', "two\nlines\r\n", "unicode\u2028line\x85breaks\u2029",
           "back\\slash \\n \\u0041", "naïve café ☕ 日本", "tab\tand \x00 nul",
           '{"event": "forged"}', "'single'"]


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; the root logger and structlog are restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("DEBUG", json=True, stream=buffer)
    yield buffer
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    """Every line of the buffer as JSON (orjson.loads raises on a line that is not)."""
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize("text", AWKWARD)
def test_stdlib_record_is_one_valid_json_line_whatever_the_message(
        out: io.StringIO, text: str) -> None:
    logging.getLogger("tidings.worker").warning("message: %s", text)
    [line] = lines(out)
    assert line["event"] == f"message: {text}"
    assert line["level"] == "warning" and line["logger"] == "tidings.worker"


@pytest.mark.parametrize("text", AWKWARD)
def test_structlog_line_is_valid_json_whatever_the_fields_hold(
        out: io.StringIO, text: str) -> None:
    structlog.get_logger("tidings").warning(text, reason=text, error={"message": text})
    [line] = lines(out)
    assert line["event"] == text and line["reason"] == text
    assert line["error"] == {"message": text} and line["level"] == "warning"


def test_exception_traceback_is_a_field_of_the_same_line(out: io.StringIO) -> None:
    try:
        raise RuntimeError('bad "thing"\nhappened')
    except RuntimeError:
        logging.getLogger("tidings.worker").exception("handler crashed")
        structlog.get_logger("tidings").exception("event crashed")
    first, second = lines(out)
    for line, event in ((first, "handler crashed"), (second, "event crashed")):
        assert line["event"] == event and line["level"] == "error"
        assert 'RuntimeError: bad "thing"\nhappened' in str(line["exception"])
        assert str(line["exception"]).startswith("Traceback (most recent call last):")


def test_values_json_cannot_hold_are_logged_as_text(out: io.StringIO) -> None:
    structlog.get_logger("tidings").info("odd", big=2**100, key={(1, 2): "x"},
                                          broken="\udc80", obj=object())
    [line] = lines(out)
    assert line["big"] == str(2**100) and "\\udc80" in str(line["broken"])
    assert "object object" in str(line["obj"])


def test_a_record_whose_arguments_do_not_fit_is_still_a_json_line(out: io.StringIO) -> None:
    # Through our handler alone: pytest's own capture handler raises on such a record.
    [handler] = [h for h in logging.getLogger().handlers
                 if isinstance(h, logging.StreamHandler) and h.stream is out]
    handler.handle(logging.getLogger("tidings").makeRecord(
        "tidings", logging.ERROR, __file__, 1, "%s and %s", ("only one",), None))
    [line] = lines(out)
    assert line["event"] == "%s and %s" and "TypeError" in str(line["log_error"])


def test_configuring_again_replaces_the_handler(out: io.StringIO) -> None:
    again = io.StringIO()
    configure_logging("INFO", json=True, stream=again)
    logging.getLogger("tidings").info("once")
    logging.getLogger("tidings").debug("filtered")
    assert out.getvalue() == "" and [line["event"] for line in lines(again)] == ["once"]


def test_unknown_level_is_a_config_error_listing_the_levels() -> None:
    with pytest.raises(ConfigError) as info:
        configure_logging("bogus")
    assert info.value.field == "TIDINGS_LOG_LEVEL"
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in info.value.reason


@settings(max_examples=200, deadline=None)
@given(message=st.text(), value=st.one_of(st.text(), st.integers(), st.floats(),
                                          st.binary(), st.none()))
def test_any_text_makes_valid_json_lines(message: str, value: object) -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("DEBUG", json=True, stream=buffer)
    try:
        logging.getLogger("tidings.fuzz").info(message)
        logging.getLogger("tidings.fuzz").info("%s", value)
        structlog.get_logger("tidings").info(message, value=value)
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert len(lines(buffer)) == 3
