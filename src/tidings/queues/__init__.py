"""Queues: publishing, delayed-message control, dead letters and the operator views
(stats, inspect). Built on :mod:`tidings.core` and :mod:`tidings.engine`."""
