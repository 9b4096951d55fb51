"""Message ids: ULIDs (Crockford base32, 26 characters) that sort by creation time."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters
_id_lock = threading.Lock()
_last_id = [0, 0]  # milliseconds, random part of the last id made in this process


def new_message_id(ms: int | None = None) -> str:
    """A ULID for creation time ``ms`` (Unix milliseconds; default: now, by the system
    clock) that sorts by creation time.

    Monotonic within a process: ids made in the same millisecond increment the random part,
    so a batch keeps its order. Hand-written because python-ulid costs 2-4x as much, and
    this runs once per published message.
    """
    global _stamp, _high
    if ms is None:
        ms = time.time_ns() // 1_000_000
    with _id_lock:
        if ms <= _last_id[0]:  # same millisecond (or the clock stepped back)
            ms, rand = _last_id[0], _last_id[1] + 1
            if rand > _RAND_MASK:  # the random part ran over: carry into the time part
                ms, rand = ms + 1, 0
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id[0], _last_id[1] = ms, rand
        if ms != _stamp[0]:
            _stamp = (ms, _time_digits(ms))
        # Ids of one millisecond differ in their last digits only: the first 12 of the 16
        # random digits (its top 60 bits) are made once for a run of them.
        top = rand >> 20
        if top != _high[0]:
            pairs = _PAIRS
            _high = (top, "".join([pairs[(top >> s) & 1023] for s in (50, 40, 30, 20, 10, 0)]))
        head = _stamp[1] + _high[1]
    return head + _PAIRS[(rand >> 10) & 1023] + _PAIRS[rand & 1023]


def _time_digits(ms: int) -> str:
    """The first 10 digits of a ULID: its 48-bit timestamp, five 10-bit pairs."""
    return "".join(_PAIRS[(ms >> shift) & 1023] for shift in range(40, -1, -10))


_RAND_MASK = (1 << 80) - 1
_stamp: tuple[int, str] = (-1, "")  # the last millisecond and its timestamp digits
_high: tuple[int, str] = (-1, "")  # the last top 60 random bits and their digits


# base64.b32encode's alphabet, mapped onto Crockford's by bytes.translate.
_FROM_RFC4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def new_message_ids_at(created_ms: int, n: int) -> Iterator[str]:
    """``n`` ULIDs for one instant ``created_ms``, made in bulk.

    For producers that stamp a whole batch with one creation time (campaign chunks), where
    :func:`new_message_id` per id would cost more than anything else per message: the 80
    random bits of each id are exactly 16 base32 digits, which ``b32encode`` produces in C.
    Unlike :func:`new_message_id`, ids of one batch are not ordered among themselves.
    """
    stamp = _time_digits(created_ms)
    digits = base64.b32encode(os.urandom(10 * n)).translate(_FROM_RFC4648).decode()
    for i in range(0, 16 * n, 16):
        yield stamp + digits[i:i + 16]




def random_token() -> str:
    """A short random name part (consumer names, epochs)."""
    return os.urandom(6).hex()
