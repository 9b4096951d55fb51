"""Message-level encryption: payloads are AES-256-GCM ciphertext in Redis, plaintext only
in the producer and the handler.

A queue declared with ``encryption="aes-256-gcm"`` gets this middleware. Its
``before_publish`` replaces the payload with ``nonce || ciphertext+tag`` (bytes) and adds
the headers ``enc`` (the algorithm) and ``enc-key`` (the key id); the associated data is
the queue, the message id and every header, so a ciphertext moved to another message or
queue, or headers changed, fail to decrypt. Its ``around_handler`` decrypts for the
handler and puts the ciphertext back afterwards, so a retry, a dead letter or a replay
write ciphertext again: Redis, the DLQ and whatever archives them never see the payload.

A message that does not decrypt (tampered, moved, a key id not in the ring, not
encrypted at all) is dead-lettered with the reason, and the worker goes on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..core.errors import ConfigError, DeadLetter, ValidationError
from ..core.message import Message, check_payload
from ..core.middleware import Call, Middleware, WorkerView
from ..queues.host import ExtensionHost
from .keyring import KeyProvider, Keyring
from .subjects import KEY_PREFIX, SUBJECT_HEADER, SubjectKeys

ALGORITHM = "aes-256-gcm"
ALGORITHM_HEADER, KEY_HEADER = "enc", "enc-key"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """Why a message does not decrypt (becomes the dead letter's reason)."""


def associated_data(queue: str, message_id: str, headers: dict[str, str]) -> bytes:
    """What the ciphertext is bound to: queue, message id and every header, in order.

    The envelope keeps the headers' order through every re-encoding (retry, dead letter,
    replay), so order is bound too instead of sorting (half the cost of this function).
    """
    return msgpack.packb((queue, message_id, headers), use_bin_type=True)


def encrypt_payload(keys: KeyProvider, queue: str, message: Message,
                    key: tuple[str, bytes] | None = None) -> None:
    """Encrypt ``message``'s payload in place with the active key (or ``key``: an id and
    a key, a subject's data key)."""
    check_payload(message.payload)  # the same errors as a plaintext publish
    key_id, key_bytes = key or keys.active()
    headers = message.headers
    headers[ALGORITHM_HEADER] = ALGORITHM
    headers[KEY_HEADER] = key_id
    nonce = _nonce()
    sealed = _cipher(key_bytes).encrypt(nonce, msgpack.packb(message.payload, use_bin_type=True),
                                  associated_data(queue, message.id, headers))
    message.payload = nonce + sealed


def decrypt_payload(keys: KeyProvider, message: Message, subject_key: bytes | None = None
                    ) -> Any:
    """The plaintext payload of ``message``; DecryptionError saying why not.
    ``subject_key``: the data key of the message's subject, if it has one (and it exists)."""
    headers = message.headers
    algorithm = headers.get(ALGORITHM_HEADER)
    if algorithm is None:
        raise DecryptionError("not encrypted: the queue requires aes-256-gcm")
    if algorithm != ALGORITHM:
        raise DecryptionError(f"unknown encryption {algorithm!r}")
    key_id = headers.get(KEY_HEADER, "")
    key = subject_key if key_id.startswith(KEY_PREFIX) else keys.get(key_id)
    if key is None and key_id.startswith(KEY_PREFIX):
        raise DecryptionError(f"the data key of subject {key_id[len(KEY_PREFIX):]!r} is "
                              "erased (or was never made)")
    if key is None:
        raise DecryptionError(f"key {key_id!r} is not in the keyring (missing or erased)")
    sealed = message.payload
    if type(sealed) is not bytes or len(sealed) < NONCE_BYTES + 16:
        raise DecryptionError("the payload is not a ciphertext")
    try:
        plaintext = _cipher(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                         associated_data(message.queue, message.id, headers))
    except InvalidTag:
        raise DecryptionError(f"authentication failed with key {key_id!r}: the ciphertext, "
                              "or the queue, id or headers it is bound to, was altered") from None
    return msgpack.unpackb(plaintext, raw=False, strict_map_key=False)


_ciphers: dict[bytes, AESGCM] = {}  # the key schedule once per key, not per message


def _cipher(key: bytes) -> AESGCM:
    cipher = _ciphers.get(key)
    if cipher is None:
        if len(_ciphers) > 64:  # a ring is a handful of keys; a KMS may hand out more
            _ciphers.clear()
        cipher = _ciphers[key] = AESGCM(key)
    return cipher


def _nonce() -> bytes:
    # Random 96-bit nonces, straight from the OS (thread-safe; no buffer two threads could
    # cut the same nonce from): safe far beyond 2**32 messages a key.
    return os.urandom(NONCE_BYTES)


class Encryption(Middleware):
    """The app's encryption of the queues declared with ``encryption="aes-256-gcm"``.

    Made once per app (``app.extension(Encryption)``); the keyring comes from the settings
    unless one is given with :meth:`use` (a KMS adapter, say).
    """

    innermost = True  # encrypts after every header is set; decrypts next to the handler

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app
        self._keys: KeyProvider | None = None
        self._names: set[str] = set()  # queues encrypted by name (ordered queues)
        self.subjects = SubjectKeys(app, lambda: self.keys)
        app.add_middleware(self)

    def protect(self, *queues: str) -> None:
        """Encrypt these queues too: for ordered queues (``OrderedQueue``), which have no
        ``encryption`` option of their own. Producers and workers must both say so."""
        self._names.update(queues)

    def use(self, keys: KeyProvider) -> None:
        """Encrypt and decrypt with ``keys`` instead of the settings' keyring."""
        self._keys = keys

    @property
    def keys(self) -> KeyProvider:
        if self._keys is None:
            ring = Keyring.from_settings(self.app.settings.security)
            if ring is None:
                raise ConfigError("TIDINGS_SECURITY__KEYRING_FILE", "a queue has encryption="
                                  "'aes-256-gcm' but no keys are set (KEYRING_FILE or KEYS)")
            self._keys = ring
        return self._keys

    async def on_worker_start(self, worker: WorkerView) -> None:
        """A worker of an encrypted queue without keys stops at once (ConfigError), instead
        of failing every message it fetches."""
        if any(self._encrypted(name) for name in worker.queue_names):
            _ = self.keys

    def _encrypted(self, queue: str) -> bool:
        if queue in self._names:
            return True
        declared = self.app.queues.get(queue)
        return declared is not None and declared.config.encryption == ALGORITHM

    def before_publish(self, queue: str, message: Message) -> None:
        if not self._encrypted(queue):
            return
        subject = message.headers.get(SUBJECT_HEADER)
        if subject is None:
            encrypt_payload(self.keys, queue, message)
            return
        key = self.subjects.cached(subject)
        if key is None:
            raise ValidationError("headers", f"subject {subject!r}: its data key is not "
                                  "loaded; await app.extension(Encryption).subjects.prepare("
                                  "[...]) before publishing")
        encrypt_payload(self.keys, queue, message, (KEY_PREFIX + subject, key))

    async def _subject_key(self, message: Message) -> bytes | None:
        key_id = message.headers.get(KEY_HEADER, "")
        if not key_id.startswith(KEY_PREFIX):
            return None
        return await self.subjects.load(key_id[len(KEY_PREFIX):])

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        if type(message) is not Message:  # a batch
            return await self._around_batch(message, call_next)  # type: ignore[arg-type]
        if not self._encrypted(message.queue):
            return await call_next()
        sealed = message.payload
        # Only a subject's message awaits its key (no coroutine per message otherwise).
        subject_key = (await self._subject_key(message)
                       if message.headers.get(KEY_HEADER, "").startswith(KEY_PREFIX) else None)
        try:
            message.payload = decrypt_payload(self.keys, message, subject_key)
        except DecryptionError as exc:
            raise DeadLetter(f"decryption failed: {exc}") from None
        try:
            return await call_next()
        finally:  # what is settled (retried, dead-lettered) is the ciphertext again
            message.payload = sealed

    async def _around_batch(self, messages: list[Message], call_next: Call) -> Any:
        if not messages or not self._encrypted(messages[0].queue):
            return await call_next()
        sealed = [m.payload for m in messages]
        try:
            await self._open(messages)
            return await call_next()
        finally:
            for item, payload in zip(messages, sealed, strict=True):
                item.payload = payload

    async def _open(self, messages: Sequence[Message]) -> None:
        for item in messages:
            try:
                item.payload = decrypt_payload(self.keys, item, await self._subject_key(item))
            except DecryptionError as exc:
                item.dead_letter(f"decryption failed: {exc}")  # the rest of the batch runs
                item.payload = None
