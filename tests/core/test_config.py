"""Settings files (I/O wrapper around the pure model): relative paths, clear errors."""

from __future__ import annotations

import pytest

from arcod.config import load_definitions, load_settings
from arcod.core.errors import ArcodError


def write(tmp_path, settings: str, assets: str = '[assets."a"]\ncommand = ["true"]\n'):
    (tmp_path / "arcod.toml").write_text(settings)
    (tmp_path / "assets.toml").write_text(assets)
    return tmp_path / "arcod.toml"


def test_paths_are_relative_to_the_config_file(tmp_path):
    settings = load_settings(write(tmp_path, 'definitions = ["assets.toml"]\n'))
    assert settings.state_dir == tmp_path / ".arcod"
    assert settings.socket_path == tmp_path / ".arcod" / "arcod.sock"
    assert list(load_definitions(settings).assets) == ["a"]


@pytest.mark.parametrize("text, words", [
    ('definitions = ["assets.toml"]\nmax_concurent_runs = 3\n', "max_concurrent_runs"),
    ('definitions = "assets.toml"\n', "definitions"),
    ('definitions = []\n', "empty"),
    ('definitions = ["assets.toml"]\nmax_concurrent_runs = 0\n', "at least 1"),
    ('definitions = ["assets.toml"\n', "not valid TOML"),
    ('definitions = ["missing.toml"]\n', "not found"),
])
def test_bad_settings_are_clear(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ArcodError) as info:
        load_definitions(load_settings(path))
    assert words in info.value.message
