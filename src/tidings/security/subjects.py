"""Per-subject data keys (envelope encryption), so erasing a subject shreds its messages.

A message published with the header ``subject`` (a user id, say) into an encrypted queue
is encrypted with that subject's own data key instead of the keyring's; the data key is
random, stored in Redis only wrapped (AES-256-GCM) by the keyring's active key, under
``<prefix>:security:subject-keys``. :meth:`SubjectKeys.erase` deletes it: every message
of the subject, in the lanes, the DLQ or an archive, can no longer be decrypted by
anyone (GDPR erasure by crypto-shredding); a worker dead-letters them as "erased".

Publishing is synchronous past this point, so a producer loads the keys of the subjects
it is about to publish for first (``await subjects.prepare([...])``, which creates the
missing ones); workers fetch them on demand and keep them ``ttl`` seconds.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import WatchError

from ..core.errors import ValidationError
from ..core.stored import text
from ..queues.host import ExtensionHost
from .keyring import KEY_BYTES, KeyProvider, new_key

if TYPE_CHECKING:
    from collections.abc import Callable

SUBJECT_HEADER = "subject"
KEY_PREFIX = "s:"  # the enc-key header of a subject's message: "s:<subject>"
NONCE = 12


def _aad(subject: str) -> bytes:
    return b"tidings-subject-key:" + subject.encode()


class SubjectKeys:
    """The data keys of subjects: created, cached, fetched on demand, erased."""

    def __init__(self, app: ExtensionHost, ring: Callable[[], KeyProvider],
                 ttl: float = 60.0) -> None:
        self.app = app
        self._ring = ring
        self.ttl = ttl
        self._cache: dict[str, tuple[bytes, float]] = {}

    @property
    def _key(self) -> str:
        return f"{self.app.key_space.prefix}:security:subject-keys"

    def cached(self, subject: str) -> bytes | None:
        """The subject's data key if loaded and fresh (no I/O: for the publish path)."""
        found = self._cache.get(subject)
        if found is None or self.app.clock.monotonic() - found[1] > self.ttl:
            return None
        return found[0]

    async def prepare(self, subjects: Iterable[str]) -> None:
        """Load (creating what is missing) the data keys of ``subjects``."""
        wanted = [s for s in dict.fromkeys(subjects) if self.cached(s) is None]
        for subject in wanted:
            _check(subject)
        if not wanted:
            return
        await self.app.connect()
        client = self.app.broker.client
        pipe = client.pipeline(transaction=False)
        for subject in wanted:  # HSETNX: a concurrent producer's key wins, ours is dropped
            pipe.hsetnx(self._key, subject, self._wrap(subject, new_key()))
        await pipe.execute()
        await self._fetch(wanted)

    async def load(self, subject: str) -> bytes | None:
        """The subject's data key, fetched if not cached; None if erased (or never made)."""
        key = self.cached(subject)
        if key is None:
            await self._fetch([subject])
            key = self.cached(subject)
        return key

    async def erase(self, subject: str) -> bool:
        """Delete the subject's data key: its messages become unreadable everywhere."""
        self._cache.pop(subject, None)
        await self.app.connect()
        return bool(await self.app.broker.client.hdel(self._key, subject))

    async def rewrap(self) -> int:
        """Wrap every subject's data key with the keyring's active key (after a rotation,
        before the old key is retired); returns how many were wrapped again."""
        await self.app.connect()
        client = self.app.broker.client
        active_id, _ = self._ring().active()
        done = 0
        async for subject, raw in client.hscan_iter(self._key):
            name = text(subject)
            if orjson.loads(raw).get("kek") == active_id:
                continue
            key = self._unwrap(name, text(raw))
            # Only if unchanged meanwhile (not erased, not wrapped again by another run).
            if await _replace_if(client, self._key, name, raw, self._wrap(name, key)):
                done += 1
        return done

    async def _fetch(self, subjects: list[str]) -> None:
        stored = await self.app.broker.client.hmget(self._key, subjects)
        now = self.app.clock.monotonic()
        for subject, raw in zip(subjects, stored, strict=True):
            if raw is None:
                self._cache.pop(subject, None)
                continue
            self._cache[subject] = (self._unwrap(subject, text(raw)), now)

    def _wrap(self, subject: str, key: bytes) -> bytes:
        kek_id, kek = self._ring().active()
        nonce = new_key()[:NONCE]
        sealed = AESGCM(kek).encrypt(nonce, key, _aad(subject))
        return orjson.dumps({"kek": kek_id, "w": base64.b64encode(nonce + sealed).decode()})

    def _unwrap(self, subject: str, raw: str) -> bytes:
        doc = orjson.loads(raw)
        kek = self._ring().get(str(doc.get("kek", "")))
        if kek is None:
            raise ValidationError("keyring", f"the key {doc.get('kek')!r} that wraps subject "
                                  f"{subject!r}'s data key is not in the keyring")
        blob = base64.b64decode(doc["w"])
        try:
            key = AESGCM(kek).decrypt(blob[:NONCE], blob[NONCE:], _aad(subject))
        except InvalidTag:
            raise ValidationError("keyring", f"subject {subject!r}'s data key does not "
                                  "unwrap: altered") from None
        if len(key) != KEY_BYTES:
            raise ValidationError("keyring", f"subject {subject!r}'s data key is malformed")
        return key


def _check(subject: str) -> None:
    if not isinstance(subject, str) or not 0 < len(subject) <= 256:
        raise ValidationError("subject", f"must be a string of 1 to 256 characters, got "
                              f"{subject!r}")


async def _replace_if(client: Any, key: str, field: str, old: bytes, new: bytes) -> bool:
    """Set ``field`` to ``new`` if it still holds ``old`` (WATCH/MULTI: one round trip
    more, for a command run once per rotation)."""
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        if await pipe.hget(key, field) != old:
            await pipe.unwatch()
            return False
        pipe.multi()
        pipe.hset(key, field, new)
        try:
            await pipe.execute()
        except WatchError:
            return False
    return True
