"""Topic routing: publish to a topic, and rules stored in Redis decide which queues get a
copy, in what shape (see the README's "Routing" section).

``app.topics`` is the app's :class:`Topics`; the rules are :class:`Binding` s in a
versioned :class:`RuleSet`.
"""

from .rules import Binding, RuleSet, Transform
from .send import Delivery
from .store import AuditEntry
from .topics import RouteResult, Topics

__all__ = ["AuditEntry", "Binding", "Delivery", "RouteResult", "RuleSet", "Topics", "Transform"]
