"""Every exception tidings raises (the error tree lives in :mod:`tidings.core.errors`)."""

from .core.errors import *  # noqa: F403 - the public home of the error tree
from .core.errors import __all__  # noqa: F401
