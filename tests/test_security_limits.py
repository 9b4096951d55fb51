"""Input limits at the entry points, and a fuzz test of the decryption path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tidings
from tidings import Tidings, ValidationError
from tidings.core.message import MAX_HEADER_NAME, MAX_HEADER_VALUE, MAX_HEADERS, Message
from tidings.security.encryption import DecryptionError, decrypt_payload, encrypt_payload
from tidings.security.keyring import Keyring, new_key

RING = Keyring({"k1": new_key(), "k2": new_key()}, "k1")


@pytest.mark.parametrize(("headers", "words"), [
    ({f"h{i}": "x" for i in range(MAX_HEADERS + 1)}, f"at most {MAX_HEADERS}"),
    ({"n" * (MAX_HEADER_NAME + 1): "x"}, f"1 to {MAX_HEADER_NAME} characters"),
    ({"": "x"}, "1 to"),
    ({"big": "v" * (MAX_HEADER_VALUE + 1)}, f"at most {MAX_HEADER_VALUE}"),
])
async def test_header_limits_are_validation_errors_naming_headers(
        app: Tidings, headers: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        await app.queue("email").publish("x", headers=headers)
    assert info.value.field == "headers" and words in str(info.value)


def test_the_cli_refuses_bad_queue_names_in_one_line(cli_env: dict[str, str]) -> None:
    result = tidings(cli_env, "acl", "generate", "--role", "consumer", "-q", "bad name!",
                     code=2)
    assert result.stderr.count("\n") == 1 and "is not a queue name" in result.stderr


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                    | st.text(max_size=20) | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
HEADERS = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=4)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(payload=JSON | st.binary(max_size=64), headers=HEADERS, data=st.data())
def test_decryption_round_trips_and_any_change_is_a_decryption_error(
        payload: Any, headers: dict[str, str], data: st.DataObject) -> None:
    message = Message("01JABCDEF", "email", payload, dict(headers))
    encrypt_payload(RING, "email", message)
    assert decrypt_payload(RING, message) == payload
    sealed: bytes = message.payload
    change = data.draw(st.sampled_from(["payload", "header", "id", "queue", "key", "junk"]))
    if change == "payload":
        at = data.draw(st.integers(0, len(sealed) - 1))
        message.payload = sealed[:at] + bytes([sealed[at] ^ data.draw(st.integers(1, 255))]) \
            + sealed[at + 1:]
    elif change == "header":
        message.headers[data.draw(st.text(min_size=1, max_size=4))] = "x"
        if message.headers == {**headers, "enc": "aes-256-gcm", "enc-key": "k1"}:
            return  # the drawn header was there with that value: nothing changed
    elif change == "id":
        message.id = "01JOTHER"
    elif change == "queue":
        message.queue = "sms"
    elif change == "key":
        message.headers["enc-key"] = data.draw(st.sampled_from(["k2", "gone", ""]))
    else:
        message.payload = data.draw(JSON | st.binary(max_size=40))
    with pytest.raises(DecryptionError):
        decrypt_payload(RING, message)
