"""Private server processes for tests that need a server configured their own way.

Each runs on a free port of 127.0.0.1, without persistence, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_server(binary: str, *options: str, ready_url: str | None = None,
                   timeout: float = 10.0) -> Iterator[int]:
    """Run ``binary`` on a free port with ``options``; yields the port.

    ``ready_url`` (``{port}`` filled in) is pinged until it answers; by default the plain
    TCP port is.
    """
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", *(o.format(port=port) for o in options)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = (ready_url or "redis://127.0.0.1:{port}/0").format(port=port)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"{binary} exited with {proc.returncode}:\n{output}")
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as probe:
                    probe.ping()
                break
            except redis.AuthenticationError:
                break  # it answers; the test is about refusing us
            except (redis.ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (by its PID); SIGKILL it if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
