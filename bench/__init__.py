"""tidings benchmark: ``python -m bench`` compares tidings with the same work in raw redis-py."""
