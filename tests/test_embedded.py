"""The embedded server: real valkey/redis-server processes in temporary directories."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
import redis

from tidings.engine.embedded import (
    EmbeddedServerError,
    ensure_server,
    find_server_binary,
    server_status,
    stop_server,
)

pytestmark = pytest.mark.embedded_only

STARTS = ("Valkey is starting", "Redis is starting")


def _binaries() -> list[object]:
    system = shutil.which("redis-server")
    return [
        pytest.param(None, id="default"),
        pytest.param(
            system,
            id="redis-server",
            marks=pytest.mark.skipif(system is None, reason="no redis-server on PATH"),
        ),
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    stop_server(path)


@pytest.fixture(params=_binaries())
def binary(request: pytest.FixtureRequest) -> str | None:
    value: str | None = request.param
    return value


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _starts(data_dir: Path) -> int:
    log = (data_dir / "server.log").read_text()
    return sum(log.count(marker) for marker in STARTS)


def test_find_server_binary_is_executable() -> None:
    path = find_server_binary()
    assert os.access(path, os.X_OK)
    assert Path(path).name in ("valkey-server", "redis-server")


def test_second_ensure_reuses_the_running_server(data_dir: Path, binary: str | None) -> None:
    url = ensure_server(data_dir, binary=binary)
    assert url == f"unix://{data_dir.absolute() / 'redis.sock'}"
    first = server_status(data_dir)
    assert first["alive"] and first["pid"] and first["version"]
    if binary is not None:
        assert first["binary"] == binary

    assert ensure_server(data_dir, binary=binary) == url
    assert server_status(data_dir)["pid"] == first["pid"]
    assert _starts(data_dir) == 1


def test_server_is_private_and_durable(data_dir: Path, binary: str | None) -> None:
    with _client(ensure_server(data_dir, binary=binary)) as client:
        config = {
            key: client.config_get(key)[key]
            for key in ("port", "appendonly", "appendfsync", "save", "maxmemory-policy")
        }
    assert config == {
        "port": "0",
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "",
        "maxmemory-policy": "noeviction",
    }
    assert stat.S_IMODE((data_dir / "redis.sock").stat().st_mode) == 0o700
    assert (data_dir / "appendonly").is_dir()


def test_data_survives_stop_and_start(data_dir: Path, binary: str | None) -> None:
    url = ensure_server(data_dir, binary=binary)
    with _client(url) as client:
        client.set("greeting", "hello")
        client.xadd("stream", {"n": "1"})
    pid = server_status(data_dir)["pid"]

    assert stop_server(data_dir) is True
    assert server_status(data_dir)["alive"] is False
    assert not (data_dir / "redis.sock").exists()

    assert ensure_server(data_dir, binary=binary) == url
    assert server_status(data_dir)["pid"] != pid
    with _client(url) as client:
        assert client.get("greeting") == "hello"
        assert client.xlen("stream") == 1


def test_restart_after_crash_keeps_fsynced_data(data_dir: Path) -> None:
    url = ensure_server(data_dir, appendfsync="always")
    with _client(url) as client:
        client.set("k", "v")
    pid = server_status(data_dir)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server_status(data_dir)["pid"] is not None and time.monotonic() < deadline:
        time.sleep(0.01)

    # The pidfile and socket of the killed server are left behind; startup must cope.
    assert (data_dir / "server.pid").exists()
    assert ensure_server(data_dir) == url
    with _client(url) as client:
        assert client.get("k") == "v"


def test_concurrent_threads_start_one_server(data_dir: Path) -> None:
    barrier = Barrier(4)

    def start(_: int) -> str:
        barrier.wait()
        return ensure_server(data_dir)

    with ThreadPoolExecutor(4) as pool:
        urls = set(pool.map(start, range(4)))
    assert len(urls) == 1
    assert _starts(data_dir) == 1


def test_concurrent_processes_start_one_server(data_dir: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tidings.engine.embedded import ensure_server, server_status\n"
        "while time.time() < float(sys.argv[2]): time.sleep(0.001)\n"
        "url = ensure_server(Path(sys.argv[1]))\n"
        "print(url, server_status(Path(sys.argv[1]))['pid'])\n"
    )
    at = str(time.time() + 2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(data_dir), at], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert len(set(outputs)) == 1, outputs
    assert _starts(data_dir) == 1


def test_stricter_fsync_request_is_applied_to_a_running_server(data_dir: Path) -> None:
    url = ensure_server(data_dir)
    ensure_server(data_dir, appendfsync="always")
    ensure_server(data_dir, appendfsync="no")  # never weakens what another user asked for
    with _client(url) as client:
        assert client.config_get("appendfsync")["appendfsync"] == "always"


def test_stop_returns_false_when_nothing_runs(tmp_path: Path, data_dir: Path) -> None:
    assert stop_server(tmp_path / "never-created") is False
    assert not (tmp_path / "never-created").exists()
    assert stop_server(tmp_path) is False
    ensure_server(data_dir)
    assert stop_server(data_dir) is True
    assert stop_server(data_dir) is False


def test_file_in_place_of_data_dir_raises(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(EmbeddedServerError, match="data directory"):
        ensure_server(not_a_dir)
    with pytest.raises(EmbeddedServerError, match="data directory"):
        ensure_server(not_a_dir / "below")


def test_startup_failure_reports_the_server_log(data_dir: Path, binary: str | None) -> None:
    (data_dir / "appendonly").mkdir(parents=True)
    (data_dir / "appendonly" / "appendonly.aof.manifest").write_text("not a manifest\n")
    started = time.monotonic()
    with pytest.raises(EmbeddedServerError, match=r"(?i)manifest") as caught:
        ensure_server(data_dir, binary=binary)
    assert "server.log" in str(caught.value)
    assert time.monotonic() - started < 5  # a dead server is noticed, not waited out
    assert server_status(data_dir)["alive"] is False


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        ensure_server(tmp_path, appendfsync="sometimes")
    with pytest.raises(EmbeddedServerError, match="too long"):
        ensure_server(tmp_path / ("x" * 120))
    with pytest.raises(EmbeddedServerError, match="could not run"):
        ensure_server(tmp_path / "d", binary=str(tmp_path / "no-such-server"))
