"""The bottom layer: the envelope, queue configuration, settings, errors, lifecycle events.

Nothing here imports any other part of tidings; everything else builds on it.
"""
