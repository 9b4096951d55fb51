"""The Redis engine: the server connection and its checks, the Lua scripts, the embedded
server. Built on :mod:`tidings.core` only."""
