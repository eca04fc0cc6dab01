"""Settings: read from the environment in one place, and documented under the same names."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from stocks.config import ENV_NAMES, Settings

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = secrets.token_hex(8)  # made per run: no password is written in this file


def readme_settings() -> set[str]:
    """The variable names in the README's settings table (first column, `NAME` cells)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_the_readme_lists_exactly_the_settings_the_code_reads():
    assert readme_settings() == set(ENV_NAMES.values())


def test_no_module_but_config_reads_the_environment():
    readers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if path.name != "config.py"
        and re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text())
    ]
    assert readers == []


def test_from_env_parses_each_kind_and_empty_means_default():
    settings = Settings.from_env(
        {
            "REDIS_URL": f"redis://:{PASSWORD}@db:6380/0",
            "STOCKS_API_KEYS": " a, ,b ",
            "STOCKS_WORKER_TIMEOUT": "2.5",
            "STOCKS_MAX_ATTEMPTS": "5",
            "STOCKS_ACCESS_LOG": "1",
            "STOCKS_DATA_DIR": "/data",
            "STOCKS_BATCH_MAX": "",
        }
    )
    assert settings.redis_url == f"redis://:{PASSWORD}@db:6380/0"
    assert settings.api_keys == ("a", "b")
    assert settings.worker_timeout == 2.5 and settings.max_attempts == 5
    assert settings.access_log is True and settings.data_dir == Path("/data")
    assert settings.batch_max == Settings().batch_max
    assert Settings.from_env({}, local_password=Path("/nonexistent")) == Settings()


def test_the_password_of_the_local_redis_is_found_when_redis_url_is_unset(tmp_path):
    kept = tmp_path / "redis.password"
    kept.write_text(f"{PASSWORD}/+\n")  # as written by stocks run, plus two URL specials
    assert Settings.from_env({}, local_password=kept).redis_url == (
        f"redis://:{PASSWORD}%2F%2B@127.0.0.1:6379"
    )
    given = {"REDIS_URL": "redis://db:6379"}
    assert Settings.from_env(given, local_password=kept).redis_url == "redis://db:6379"


def test_a_bad_value_names_the_variable():
    with pytest.raises(SystemExit, match="STOCKS_MAX_ATTEMPTS"):
        Settings.from_env({"STOCKS_MAX_ATTEMPTS": "three"})


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().max_attempts = 9  # type: ignore[misc]
