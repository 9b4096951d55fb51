"""Keys for message encryption: a keyring of AES-256 keys by id, one of them active.

The active key encrypts new messages; every key in the ring decrypts, so after a
rotation (a new active key) the messages already written stay readable until they are
re-encrypted (``tidings keys reencrypt``) and the old key can be retired. Keys come from
the settings (``TIDINGS_SECURITY__KEYS="k2:<base64>,k1:<base64>"``, the first active) or
a keyring file (``TIDINGS_SECURITY__KEYRING_FILE``, JSON, written 0600 by ``tidings keys
rotate``); an external KMS plugs in as any object with the :class:`KeyProvider` methods.
Key material is never logged, printed, or part of an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ..core.errors import ConfigError
from ..core.security_settings import SecuritySettings

KEY_BYTES = 32  # AES-256
KEY_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class KeyProvider(Protocol):
    """Where encryption keys come from (a keyring, or a KMS adapter)."""

    def active(self) -> tuple[str, bytes]:
        """The id and key new messages are encrypted with."""

    def get(self, key_id: str) -> bytes | None:
        """The key of ``key_id`` (None: unknown, or erased)."""


class Keyring:
    """AES-256 keys by id; ``active_id`` encrypts. Only ids are ever shown (``repr``)."""

    __slots__ = ("_keys", "active_id")

    def __init__(self, keys: Mapping[str, bytes], active_id: str) -> None:
        for key_id, key in keys.items():
            if not KEY_ID.match(key_id):
                raise ConfigError("keyring", f"key id {key_id!r} must match {KEY_ID.pattern}")
            if len(key) != KEY_BYTES:
                raise ConfigError("keyring", f"key {key_id!r} is {len(key)} bytes; "
                                  f"aes-256-gcm needs {KEY_BYTES}")
        if active_id not in keys:
            raise ConfigError("keyring", f"the active key {active_id!r} is not in the ring")
        self._keys = dict(keys)
        self.active_id = active_id

    def __repr__(self) -> str:
        return f"Keyring(active={self.active_id!r}, ids={sorted(self._keys)})"

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def active(self) -> tuple[str, bytes]:
        return self.active_id, self._keys[self.active_id]

    def get(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def rotated(self, key_id: str | None = None) -> Keyring:
        """A ring with a new random key, active; the old keys stay for decryption."""
        key_id = key_id or f"k{len(self._keys) + 1}-{secrets.token_hex(3)}"
        if key_id in self._keys:
            raise ConfigError("key_id", f"{key_id!r} is already in the ring")
        return Keyring({**self._keys, key_id: new_key()}, key_id)

    def without(self, key_id: str) -> Keyring:
        """The ring without ``key_id`` (retire a key; its messages become unreadable)."""
        if key_id == self.active_id:
            raise ConfigError("key_id", f"{key_id!r} is the active key: rotate first")
        if key_id not in self._keys:
            raise ConfigError("key_id", f"no key {key_id!r} in the ring")
        return Keyring({k: v for k, v in self._keys.items() if k != key_id}, self.active_id)

    # -- storage ------------------------------------------------------------------------

    def to_json(self) -> str:
        keys = {k: base64.b64encode(v).decode() for k, v in self._keys.items()}
        return json.dumps({"active": self.active_id, "keys": keys}, indent=2)

    def save(self, path: Path) -> None:
        """Write the ring to ``path`` (mode 0600), atomically: a reader sees old or new."""
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(self.to_json())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            doc = json.loads(path.read_text())
            keys = {str(k): _b64(str(k), str(v)) for k, v in doc["keys"].items()}
            return cls(keys, str(doc["active"]))
        except FileNotFoundError:
            raise ConfigError("TIDINGS_SECURITY__KEYRING_FILE", f"no such file: {path}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError("TIDINGS_SECURITY__KEYRING_FILE",
                              f"{path} is not a keyring ({type(exc).__name__}: {exc})") from None

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """``"id:base64,id:base64"``; the first key is the active one."""
        keys: dict[str, bytes] = {}
        for item in (part.strip() for part in text.split(",") if part.strip()):
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise ConfigError("TIDINGS_SECURITY__KEYS", "each key is id:base64 (comma-"
                                  "separated, the first one active)")
            keys[key_id] = _b64(key_id, encoded)
        if not keys:
            raise ConfigError("TIDINGS_SECURITY__KEYS", "no key given")
        return cls(keys, next(iter(keys)))

    @classmethod
    def from_settings(cls, security: SecuritySettings) -> Keyring | None:
        """The ring the settings name (a file wins over inline keys), or None."""
        if security.keyring_file is not None:
            return cls.load(security.keyring_file)
        if security.keys is not None:
            return cls.parse(security.keys.get_secret_value())
        return None


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _b64(key_id: str, encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("keyring", f"key {key_id!r} is not base64") from None
