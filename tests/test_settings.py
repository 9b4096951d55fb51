"""The settings object: environment variables, per-environment files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings import ConfigError, Tidings
from tidings.core.errors import SettingsFileError
from tidings.core.settings import load_settings


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


@pytest.mark.parametrize(("url", "reason"), [
    ("redis://127.0.0.1:notaport/0", "notaport"),
    ("redis://127.0.0.1:99999/0", "out of range"),
    ("redis://10.0.0.1:6379,10.0.0.2:6379/0", "only for sentinels"),
    ("redis://127.0.0.1:6379/zero", "not a database number"),
    ("redis://127.0.0.1:6379/-1", "not a database number"),
    ("redis://127.0.0.1:6379/0?db=x", "db"),
    ("memcached://127.0.0.1:11211", "unknown scheme 'memcached://'"),
    ("127.0.0.1:6379", "no scheme"),
    ("unix://", "socket path"),
])
def test_malformed_server_url_is_a_config_error_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, reason: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDINGS_REDIS_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "TIDINGS_REDIS_URL"
    assert reason in info.value.reason


def test_server_url_given_as_an_argument_is_checked_the_same_way(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Tidings("redis://user:s3cret@127.0.0.1:notaport/0")
    assert info.value.field == "TIDINGS_REDIS_URL" and "notaport" in info.value.reason
    assert "s3cret" not in str(info.value)  # the reason never repeats the password


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/2",
                                 "redis://user:p%40ss@h/1", "unix:///tmp/redis.sock",
                                 "redis://h:6379/", "redis://h"])
def test_well_formed_server_urls_are_accepted(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDINGS_REDIS_URL", url)
    assert load_settings().redis_url == url


def test_valkey_schemes_mean_redis_schemes(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDINGS_REDIS_URL", "valkeys://h:6380/1")
    assert load_settings().redis_url == "rediss://h:6380/1"


def test_unknown_log_level_names_the_variable_and_the_valid_levels(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIDINGS_LOG_LEVEL", "bogus")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "TIDINGS_LOG_LEVEL"
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in info.value.reason
    monkeypatch.setenv("TIDINGS_LOG_LEVEL", "warning")
    assert load_settings().log_level == "WARNING"


def test_malformed_settings_file_names_the_file_line_and_column(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text('key_prefix = "app"\nredis_url = redis://oops\n')
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SettingsFileError) as info:
        load_settings()
    assert isinstance(info.value, ConfigError) and info.value.path == str(path)
    assert str(path) in str(info.value) and "line 2, column 13" in str(info.value)


@pytest.mark.parametrize(("body", "key"), [
    ('redis_url = "redis://h:notaport/0"\n', "redis_url"),
    ("worker_concurrency = 0\n", "worker_concurrency"),
    ('log_level = "loud"\n', "log_level"),
    ("no_such_setting = 1\n", "no_such_setting"),
])
def test_bad_value_in_the_settings_file_names_the_file_and_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text(body)
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SettingsFileError) as info:
        load_settings()
    assert info.value.field == key and info.value.path == str(path)
    assert "TIDINGS_" not in str(info.value) and f"{path}: {key}: " in str(info.value)


def test_bad_environment_value_still_names_the_variable_when_a_file_sets_it_too(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tidings.toml").write_text("worker_concurrency = 8\n")
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("TIDINGS_WORKER_CONCURRENCY", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert not isinstance(info.value, SettingsFileError)
    assert info.value.field == "TIDINGS_WORKER_CONCURRENCY"
