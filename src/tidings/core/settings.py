"""The one settings object: environment variables ``TIDINGS_*`` and per-environment files.

Precedence, highest first: explicit arguments, ``TIDINGS_*`` variables, the file
``tidings.<TIDINGS_ENV>.toml`` (or ``tidings.toml`` when TIDINGS_ENV is unset) found in
``TIDINGS_CONFIG_DIR`` (default: the working directory), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from redis.asyncio.connection import parse_url

from .api_settings import ApiSettings
from .bridge_settings import BridgeSettings
from .cluster import is_cluster_url, parse_cluster_url
from .dashboard_settings import DashboardSettings
from .errors import ConfigError, SettingsFileError
from .ledger_settings import LedgerSettings
from .routing_settings import RoutingSettings
from .security_settings import SecuritySettings
from .sentinel import is_sentinel_url, parse_sentinel_url
from .thresholds import AlertSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
URL_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


def settings_file() -> Path:
    directory = Path(os.environ.get("TIDINGS_CONFIG_DIR", "."))
    env = os.environ.get("TIDINGS_ENV")
    return directory / (f"tidings.{env}.toml" if env else "tidings.toml")


def check_server_url(value: str) -> str:
    """Validate a server URL with redis-py's own parser; returns it with valkey -> redis.

    redis-py accepts some URLs it then misreads (a database path that is not a number is
    silently database 0), so what it leaves out is checked here too. Messages never repeat
    the URL, which may hold a password.
    """
    if is_sentinel_url(value):
        parse_sentinel_url(value)  # raises what is wrong with it
        return value
    if is_cluster_url(value):
        parse_cluster_url(value)
        return value
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in URL_SCHEMES:
        found = f"unknown scheme {scheme + sep!r}" if sep else "no scheme"
        raise ValueError(f"{found}; use redis://host:port/db, rediss:// (TLS), "
                         "unix:///path/to/socket, valkey://, valkeys://, "
                         "redis+sentinel://host:26379,host:26379/master-name/db or "
                         "redis+cluster://host:6379,host:6379/")
    url = "redis" + value[len("valkey"):] if scheme.lower().startswith("valkey") else value
    if "," in urlsplit(url).netloc:
        raise ValueError("a comma-separated host list is only for sentinels "
                         "(redis+sentinel://host:26379,host:26379/master-name) or a cluster "
                         "(redis+cluster://host:6379,host:6379/)")
    try:
        options = parse_url(url)
        port = urlsplit(url).port  # parse_url reads it only for redis:// and rediss://
    except ValueError as exc:
        raise ValueError(f"not a valid server URL: {exc}") from None
    if scheme.lower() == "unix":
        if not options.get("path"):
            raise ValueError("a unix:// URL needs the socket path: unix:///path/to/redis.sock")
        return url
    path = urlsplit(url).path.strip("/")
    if (path and "db" not in options) or int(options.get("db", 0)) < 0:
        raise ValueError(f"database {path or options.get('db')!r} is not a database number "
                         "(the path is the number: redis://host:6379/0)")
    if port == 0:
        raise ValueError("port 0 is not a server port")
    return url


def check_log_level(value: Any) -> str:
    """A logging level name (case-insensitive), upper-cased."""
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {value!r}; the levels are {', '.join(LOG_LEVELS)}")
    return level


class Settings(BaseSettings):
    """Process-wide settings. Queue behaviour is configured per queue (QueueConfig)."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="forbid",
                                      env_nested_delimiter="__")

    env: str = "development"
    redis_url: str | None = Field(
        None, description="Server URL; unset means start the embedded server."
    )
    data_dir: Path = Field(Path(".tidings"), description="Embedded server data and AOF.")
    key_prefix: str = Field("tidings", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    worker_concurrency: int = Field(256, ge=1, le=100_000)
    shutdown_grace: float = Field(25.0, ge=0)
    connect_retries: int = Field(5, ge=0)
    connect_backoff: float = Field(0.1, gt=0)
    socket_timeout: float = Field(10.0, gt=0)
    # Producer backpressure from the server's used memory, as a share of its maxmemory:
    # publishes slow down from memory_slow_at and are refused from memory_refuse_at.
    memory_slow_at: float = Field(0.85, gt=0, le=1)
    memory_refuse_at: float = Field(0.95, gt=0, le=1)
    log_level: str = "INFO"
    log_json: bool = True
    # Observability (tidings.observability): the worker's HTTP server, tracing, alerts.
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="/metrics, /livez, /readyz; unset: off")
    metrics_host: str = "0.0.0.0"
    metrics_fleet: bool = Field(True, description="one worker also serves fleet metrics")
    liveness_deadline: float = Field(60.0, gt=0, description="fetch loop age for /livez")
    tracing: bool = False
    alert_evaluator: bool = False
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    analytics_stream: str | None = Field(None, pattern=r"^[^\s]{1,200}$")
    analytics_url: str | None = None
    # PostgreSQL ledger, outbox, audit, retention, archive (tidings.ledger); reads its own
    # TIDINGS_DATABASE_URL, TIDINGS_DB_SCHEMA ... variables.
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)  # tidings bridge ...
    api: ApiSettings = Field(default_factory=ApiSettings)  # the HTTP API (tidings.api)

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_server_url(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return check_log_level(value)

    @field_validator("memory_refuse_at")
    @classmethod
    def _refuse_after_slowing(cls, value: float, info: ValidationInfo) -> float:
        slow_at = info.data.get("memory_slow_at")
        if slow_at is not None and value < slow_at:
            raise ValueError(f"must be >= memory_slow_at ({slow_at})")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=settings_file())
        return (init_settings, env_settings, toml)


def _read_file(path: Path) -> dict[str, Any]:
    """The settings file's keys ({} without a file); a file that cannot be read is an error."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:  # its message gives the line and column
        raise SettingsFileError(str(path), "file", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsFileError(str(path), "file", f"cannot be read: {exc.strerror}") from None


def _set_in_environment(name: str) -> bool:
    wanted = f"TIDINGS_{name}".upper()
    return any(key.upper() == wanted for key in os.environ)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings.

    A bad value raises ConfigError naming where it came from: the variable
    (``TIDINGS_REDIS_URL``) for an argument or the environment, or the file and its key
    (:class:`SettingsFileError`) for a value in the settings file.
    """
    path = settings_file()
    if os.environ.get("TIDINGS_ENV") and not path.exists():
        raise ConfigError("TIDINGS_ENV", f"settings file {path} does not exist")
    in_file = _read_file(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        reason = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            reason = f"unknown setting; the settings are {', '.join(Settings.model_fields)}"
        elif name not in ("redis_url", "database_url", "ledger.database_url") and isinstance(
                first.get("input"), str | int | float):
            reason = f"{reason} (got {first['input']!r})"  # never the URL: it may hold a password
        top = str(first["loc"][0]) if first["loc"] else ""
        if top in in_file and top not in overrides and not _set_in_environment(top):
            raise SettingsFileError(str(path), name, reason) from None
        if len(first["loc"]) > 1:  # a field of a nested setting (alerts.queues.email ...)
            inner = ".".join(str(part) for part in first["loc"][1:])
            raise ConfigError(f"TIDINGS_{top.upper()}", f"{inner}: {reason}") from None
        raise ConfigError(f"TIDINGS_{name.upper()}", reason) from None
