"""``python -m bench.peers``: tidings beside other Redis-backed job queues (see __main__)."""
