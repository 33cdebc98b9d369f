"""The settings table: precedence, validation, and that every setting is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings, load_settings, settings_table_markdown
from gateway.core.settings_table import SETTINGS


def test_the_dataclass_takes_its_fields_and_defaults_from_the_table() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
    built, loaded = Settings(), load_settings(env={})
    for setting in SETTINGS:
        value = getattr(built, setting.name)
        if isinstance(value, Path):  # folders: the working directory's, resolved on loading
            value = value.resolve()
        assert value == getattr(loaded, setting.name), setting.name


def test_defaults_then_env_then_cli() -> None:
    s = load_settings(env={})
    assert s.port == 8000 and s.durability == "power"
    s = load_settings(env={"GATEWAY_PORT": "9000"})
    assert s.port == 9000
    s = load_settings(env={"GATEWAY_PORT": "9000"}, overrides={"port": "9100"})
    assert s.port == 9100


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ({"GATEWAY_PORT": "-1"}, "positive"),
        ({"GATEWAY_DURABILITY": "maybe"}, "power, process"),
        ({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33"}, "GATEWAY_TRUSTED_PROXIES"),
        ({"GATEWAY_RELOAD": "perhaps"}, "true or false"),
        ({"GATEWAY_NO_SUCH_THING": "1"}, "unknown setting"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert needle in str(info.value)


def test_paths_are_resolved() -> None:
    s = load_settings(env={"GATEWAY_DATA_DIR": "relative/dir"})
    assert s.data_dir.is_absolute()


def test_the_generated_table_documents_every_setting() -> None:
    # The README holds this table (`python -m gateway.cli.docs --check` in `make lint`).
    rows = settings_table_markdown().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [s.env for s in SETTINGS]
    for setting, row in zip(SETTINGS, rows, strict=True):
        assert f"`{setting.flag}`" in row and setting.help in row
