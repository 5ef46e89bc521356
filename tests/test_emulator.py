import numpy as np
import pytest

from server.core.emulator import EmulatorSession
from server.core.palette import to_rgb

GAMES = ["space_invaders", "ms_pacman", "montezuma_revenge", "enduro", "seaquest"]


def _run(emu, actions):
    return [(emu.step(int(a)), emu.screen().tobytes()) for a in actions]


@pytest.mark.parametrize("rom", GAMES)
def test_palette_matches_ale_rgb(rom):
    emu = EmulatorSession(rom, seed=3)
    rng = np.random.default_rng(1)
    for i in range(400):
        emu.step(int(rng.integers(0, 18)))
        if i % 40 == 0:
            np.testing.assert_array_equal(to_rgb(emu.screen()), emu.screen_rgb())


@pytest.mark.parametrize("rom", GAMES)
def test_reset_reaches_the_same_state_as_a_fresh_load(rom):
    """Why one loaded emulator can serve many episodes: reset(seed) == a fresh load with that seed."""
    actions = np.random.default_rng(2).integers(0, 18, 600)
    reused = EmulatorSession(rom, seed=11)
    _run(reused, actions[:333])
    reused.reset(seed=42)
    fresh = EmulatorSession(rom, seed=42)
    assert _run(reused, actions) == _run(fresh, actions)


def test_the_screen_right_after_a_reset_is_the_fresh_one():
    """A client reconnecting before the first tick of an episode gets a keyframe of this screen, not the last one
    of the previous episode (ALE's screen buffer is not part of a restored state)."""
    reused = EmulatorSession("space_invaders", seed=1)
    _run(reused, np.random.default_rng(4).integers(0, 18, 300))
    reused.reset(seed=2)
    assert reused.screen().tobytes() == EmulatorSession("space_invaders", seed=2).screen().tobytes()


def test_sticky_actions_reload_with_the_new_seed():
    actions = np.random.default_rng(3).integers(0, 18, 400)
    reused = EmulatorSession("space_invaders", seed=1, repeat_action_probability=0.25)
    _run(reused, actions[:100])
    reused.reset(seed=7)
    fresh = EmulatorSession("space_invaders", seed=7, repeat_action_probability=0.25)
    assert _run(reused, actions) == _run(fresh, actions)


def test_spec_records_what_recreates_the_emulator():
    emu = EmulatorSession("pong", seed=5, repeat_action_probability=0.1)
    spec = emu.spec.to_json()
    assert spec["rom_id"] == "pong" and spec["seed"] == 5 and spec["repeat_action_probability"] == 0.1
    assert spec["frame_skip"] == 1 and spec["full_action_space"] is True
    assert len(spec["rom_md5"]) == 32 and spec["version"]


def test_game_sound_is_512_samples_per_frame():
    emu = EmulatorSession("space_invaders", seed=1)
    emu.step(1)
    audio = emu.audio()
    assert audio.shape == (512,) and audio.dtype == np.uint8


def test_the_ale_seed_is_derived_as_gymnasium_derives_it():
    """AtariEnv.reset(seed=s) reports the ALE seed it set; the recorder's reset_gym(s) gives ALE the same one."""
    import ale_py
    import gymnasium as gym

    from server.core.emulator import gym_ale_seed

    gym.register_envs(ale_py)
    env = gym.make("ALE/SpaceInvaders-v5")
    for s in (0, 1, 12345, 2**31 - 2):
        _, info = env.reset(seed=s)
        assert gym_ale_seed(s) == int(np.int32(info["seeds"][1]))
    env.close()
    emu = EmulatorSession("space_invaders", seed=1, repeat_action_probability=0.25)
    emu.reset_gym(77)
    assert emu.spec.seed == gym_ale_seed(77) and emu.spec.gym_seed == 77
