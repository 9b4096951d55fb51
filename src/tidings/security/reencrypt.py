"""Re-encryption of dead letters with the active key, after a rotation.

Messages in the lanes drain by themselves (they are read with whichever key wrote
them); dead letters may stay for weeks, so they are re-encrypted in place, a batch per
script call, before the old key is retired. A dead letter that does not decrypt (its key
already gone, tampered) is left as it is and counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.message import encode
from ..engine.scripts import LIBRARY, Arg
from ..queues.queue import Queue
from .encryption import KEY_HEADER, DecryptionError, decrypt_payload, encrypt_payload
from .keyring import KeyProvider
from .subjects import KEY_PREFIX

DLQ_REENCRYPT = LIBRARY["dlq_reencrypt"]


@dataclass
class Reencrypted:
    """What a re-encryption did: entries rewritten, already current, and left as they were."""

    rewritten: int = 0
    current: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (message id, why)


async def reencrypt_dead_letters(queue: Queue, keys: KeyProvider, batch: int = 100
                                 ) -> Reencrypted:
    """Encrypt every dead letter of ``queue`` not under the active key with it."""
    active_id, _ = keys.active()
    result = Reencrypted()
    args: list[Arg] = []  # all found first: rewritten entries go to the stream's end
    async for entry in queue.dlq.scan():
        message = entry.message
        if message is None:
            result.skipped.append((entry.message_id, entry.decode_error or "undecodable"))
            continue
        key_id = message.headers.get(KEY_HEADER, "")
        if key_id == active_id or key_id.startswith(KEY_PREFIX):  # a subject's: its own key
            result.current += 1
            continue
        try:
            message.payload = decrypt_payload(keys, message)
        except DecryptionError as exc:
            result.skipped.append((entry.message_id, str(exc)))
            continue
        encrypt_payload(keys, queue.name, message)
        args += [entry.entry_id, encode(message, check=False)]
    for start in range(0, len(args), 2 * batch):
        result.rewritten += int(await queue.app.broker.call(
            DLQ_REENCRYPT, queue.keys.script_keys, args[start:start + 2 * batch]))
    return result
