"""Apps loaded by each library's own worker CLI for the start-up measurement.

Each reads its setup from the environment (base.Ctx.from_env) and marks its first
handler call (base.mark_started).
"""
