import pytest

from server.errors import ConfigError
from server.games import resolve_game
from server.settings import Settings
from server.settings_sources import load_settings


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


@pytest.mark.parametrize(
    "old,rom",
    [
        ("spaceinvaders", "space_invaders"),
        ("mspacman", "ms_pacman"),
        ("revenge", "montezuma_revenge"),
        ("enduro", "enduro"),
        ("seaquest", "seaquest"),
    ],
)
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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"async_mode": "asyncio"},
        {"codec": "png"},
        {"max_demonstrators": 0},
        {"repeat_action_probability": 1.5},
        {"episode_time_limit_s": -1},
        {"certfile": "/etc/hostname"},  # a certificate without its key
        {"certfile": "/nonexistent.pem", "keyfile": "/nonexistent.key"},
        {"max_rtt_ms": -1},
        {"completion_url": "app.prolific.com/submissions/complete"},
    ],
)
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Settings(**kwargs)


def test_secret_key_is_not_printed():
    assert "hunter2" not in repr(Settings(secret_key="hunter2hunter2"))


def test_scripts_take_the_store_as_the_server_does():
    """scripts/*.py share the server's store options: flags over STORE_URL / S3_BUCKET / SPOOL_DIR / CACHE_DIR /
    S3_ENDPOINT_URL over the defaults."""
    import argparse

    from server.settings_sources import add_store_arguments, store_settings

    p = argparse.ArgumentParser()
    add_store_arguments(p)
    assert store_settings(p.parse_args([]), environ={}).store == "./recordings"
    env = {"S3_BUCKET": "old-bucket", "SPOOL_DIR": "/var/spool/a", "S3_ENDPOINT_URL": "http://127.0.0.1:9000"}
    s = store_settings(p.parse_args([]), environ=env)
    assert (s.store, s.spool, s.cache, s.s3_endpoint_url) == (
        "s3://old-bucket",
        "/var/spool/a",
        "./cache",
        "http://127.0.0.1:9000",
    )
    s = store_settings(
        p.parse_args(["--store", "s3://b/p", "--cache", "/c", "--endpoint-url", "http://x:1"]),
        environ={**env, "STORE_URL": "s3://env/p"},
    )
    assert (s.store, s.spool, s.cache, s.s3_endpoint_url) == ("s3://b/p", "/var/spool/a", "/c", "http://x:1")
    with pytest.raises(ConfigError):
        store_settings(p.parse_args(["--store", "s3://"]), environ={})


def test_going_online_settings(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    env = {"TLS_CERTFILE": str(cert), "TLS_KEYFILE": str(key), "MAX_RTT_MS": "180", "ALLOW_REPEAT": "1"}
    s = load_settings(["--min-window", "1000x600", "--completion-url", "https://x.org/?cc={code}"], env)
    assert s.tls() and s.certfile == str(cert) and s.max_rtt_ms == 180 and s.allow_repeat
    assert s.min_window == (1000, 600)
    s = load_settings(["--max-rtt-ms", "0", "--declined-code", "D1", "--screened-url", "https://x.org/s"], env)
    assert s.max_rtt_ms == 0 and s.declined_code == "D1" and s.screened_url == "https://x.org/s"
    assert not load_settings([], {}).tls()
    cfg = load_settings(["--study", "--failure-code", "F1", "--completion-url", "https://x.org/?cc={code}"], {})
    cfg = cfg.study_config()
    assert cfg.outcome("failed") == {"kind": "failed", "code": "F1", "url": None}
    assert cfg.outcome("completed", "C9") == {"kind": "completed", "code": "C9", "url": "https://x.org/?cc=C9"}
    assert cfg.consent_html.startswith("<h1>Consent to take part")


def test_the_researcher_settings_of_issue_19():
    s = load_settings(
        ["--trust-loopback", "--stuck-after-s", "60", "--drain-timeout-s", "30", "--log-level", "debug"], {}
    )
    assert s.trust_loopback and s.stuck_after_s == 60 and s.upload_drain_s == 30 and s.log_level == "DEBUG"
    assert load_settings(["--upload-drain", "5"], {}).upload_drain_s == 5  # the old flag's name still works
    env = {"TRUST_LOOPBACK": "1", "TRUSTED_PROXIES": "127.0.0.1, ::1", "STUCK_AFTER_S": "90", "DRAIN_TIMEOUT_S": "3"}
    s = load_settings([], env)
    assert s.trust_loopback and s.trusted_proxies == ("127.0.0.1", "::1") and s.stuck_after_s == 90
    assert not load_settings([], {}).trust_loopback  # no loopback exception unless asked for
    for bad in ({"log_level": "LOUD"}, {"stuck_after_s": 0}, {"upload_drain_s": -1}):
        with pytest.raises(ConfigError):
            Settings(**bad)


def test_the_generated_token_survives_every_flag_and_a_replace():
    from dataclasses import replace

    for argv in ([], ["--study"], ["--port", "6000"], ["--log-level", "WARNING", "--game", "pong"]):
        s = load_settings(argv, {})
        assert s.token_generated() and replace(s, port=1).token_generated(), argv
        assert not replace(s, researcher_token="mine").token_generated()
    assert not load_settings(["--study"], {"RESEARCHER_TOKEN": "mine"}).token_generated()
    assert "mine" not in repr(load_settings([], {"RESEARCHER_TOKEN": "mine"}))
