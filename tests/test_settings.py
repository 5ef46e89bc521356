import pytest

from server.errors import ConfigError
from server.games import resolve_game
from server.settings import Settings, load_settings


def test_defaults():
    s = load_settings([], {})
    assert s.port == 5000 and s.store == "./recordings" and s.async_mode == "eventlet" and s.codec == "xor"
    assert s.games == ("spaceinvaders",) and s.repeat_action_probability == 0.0 and s.episode_time_limit_s is None
    assert len(s.secret_key) == 64


def test_environment_then_command_line():
    env = {"ROM": "mspacman", "PORT": "6000", "CODEC": "jpeg", "EPISODE_TIME_LIMIT": "300"}
    s = load_settings([], env)
    assert s.games == ("mspacman",) and s.port == 6000 and s.codec == "jpeg" and s.episode_time_limit_s == 300
    s = load_settings(["--port", "7000", "--game", "enduro"], env)
    assert s.port == 7000 and s.games == ("enduro",) and s.codec == "jpeg"


@pytest.mark.parametrize("old,rom", [("spaceinvaders", "space_invaders"), ("mspacman", "ms_pacman"),
                                     ("revenge", "montezuma_revenge"), ("enduro", "enduro"), ("seaquest", "seaquest")])
def test_old_names_and_rom_ids(old, rom):
    assert resolve_game(old).rom == rom
    assert resolve_game(rom).name == old


def test_games_list_accepts_rom_ids_and_normalises():
    s = load_settings(["--games", "space_invaders,pong,revenge"], {})
    assert s.games == ("spaceinvaders", "pong", "revenge")


def test_unknown_game_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        load_settings(["--game", "notagame"], {})
    assert "mspacman" in str(e.value) and "pong" in str(e.value)


@pytest.mark.parametrize("kwargs", [{"async_mode": "asyncio"}, {"codec": "png"}, {"max_demonstrators": 0},
                                    {"repeat_action_probability": 1.5}, {"episode_time_limit_s": -1}])
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Settings(**kwargs)


def test_secret_key_is_not_printed():
    assert "hunter2" not in repr(Settings(secret_key="hunter2hunter2"))
