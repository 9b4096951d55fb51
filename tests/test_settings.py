"""The settings object: environment variables, per-environment files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings import ConfigError
from tidings.settings import load_settings


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDINGS_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("TIDINGS_WORKER_CONCURRENCY", "12")
    settings = load_settings()
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.worker_concurrency == 12


def test_per_environment_file_is_selected_by_tidings_env(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    (tmp_path / "tidings.staging.toml").write_text('key_prefix = "stg"\nshutdown_grace = 5\n')
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TIDINGS_ENV", "staging")
    settings = load_settings()
    assert (settings.key_prefix, settings.shutdown_grace) == ("stg", 5)
    monkeypatch.setenv("TIDINGS_SHUTDOWN_GRACE", "7")
    assert load_settings().shutdown_grace == 7  # env beats the file


def test_missing_environment_file_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TIDINGS_ENV", "prod")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "TIDINGS_ENV"


@pytest.mark.parametrize(("name", "value", "field"), [
    ("TIDINGS_REDIS_URL", "http://x", "TIDINGS_REDIS_URL"),
    ("TIDINGS_WORKER_CONCURRENCY", "0", "TIDINGS_WORKER_CONCURRENCY"),
    ("TIDINGS_SHUTDOWN_GRACE", "soon", "TIDINGS_SHUTDOWN_GRACE"),
])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      name: str, value: str, field: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == field
