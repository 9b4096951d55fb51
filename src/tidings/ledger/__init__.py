"""The PostgreSQL side of tidings: message ledger and trace, transactional outbox, audit
trail, retention, GDPR erasure and the S3 archive (see the README's "Ledger" section)."""

from .extension import Ledger
from .trace import MessageTrace, TraceEvent

__all__ = ["Ledger", "MessageTrace", "TraceEvent"]
