"""The one settings object: environment variables ``TIDINGS_*`` and per-environment files.

Precedence, highest first: explicit arguments, ``TIDINGS_*`` variables, the file
``tidings.<TIDINGS_ENV>.toml`` (or ``tidings.toml`` when TIDINGS_ENV is unset) found in
``TIDINGS_CONFIG_DIR`` (default: the working directory), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError


def settings_file() -> Path:
    directory = Path(os.environ.get("TIDINGS_CONFIG_DIR", "."))
    env = os.environ.get("TIDINGS_ENV")
    return directory / (f"tidings.{env}.toml" if env else "tidings.toml")


class Settings(BaseSettings):
    """Process-wide settings. Queue behaviour is configured per queue (QueueConfig)."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="forbid")

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
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://", "unix://", "valkey://", "valkeys://")):
            raise ValueError("must start with redis://, rediss://, unix://, valkey:// or valkeys://")
        return value.replace("valkey", "redis", 1) if value.startswith("valkey") else value

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


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings; a bad value raises ConfigError naming the field."""
    path = settings_file()
    if os.environ.get("TIDINGS_ENV") and not path.exists():
        raise ConfigError("TIDINGS_ENV", f"settings file {path} does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"TIDINGS_{field.upper()}", first["msg"]) from None
