"""StudyFlow's transitions without a server: stages, the stored record, and the refusals."""

import json

import pytest

from server.errors import BadMessage
from server.games import resolve_game
from server.study import (
    CONSENT,
    DECLINED,
    DONE,
    EPISODES,
    FREE,
    INSTRUCTIONS,
    MICCHECK,
    PRACTICE,
    EpisodePlan,
    Participants,
    StudyConfig,
    StudyFlow,
)

STUDY = StudyConfig(enabled=True, consent_text="Agree?", practice_s=30.0, play_s=120.0, completion_code="DONE42")


def make_flow(tmp_path, cfg=STUDY, episode_time_limit_s=None):
    games = iter(["breakout", "spaceinvaders"])
    return StudyFlow(
        cfg,
        Participants(tmp_path),
        "spaceinvaders",
        lambda: resolve_game(next(games)),
        episode_time_limit_s,
    )


def stored(tmp_path, pid):
    return json.loads((tmp_path / ".study" / f"{pid}.json").read_text())


def refused(fn, *args) -> str:
    with pytest.raises(BadMessage) as e:
        fn(*args)
    return e.value.code


def test_without_a_study_everyone_plays_freely(tmp_path):
    flow = make_flow(tmp_path, StudyConfig())
    assert not flow.enabled
    view = flow.hello(None)
    assert view["stage"] == FREE and view["game"]["name"] == "spaceinvaders"
    assert refused(flow.consent, None, True) == "no_participant"
    assert refused(flow.instructions_done, None) == "no_participant"
    assert list((tmp_path / ".study").iterdir()) == []


def test_hello_before_consent_stores_nothing(tmp_path):
    flow = make_flow(tmp_path)
    view = flow.hello("P1")
    assert view["stage"] == CONSENT and view["consent_text"] == "Agree?" and view["participant"] == "P1"
    assert list((tmp_path / ".study").iterdir()) == []
    assert refused(flow.consent, None, True) == "no_participant"  # no hello on this connection


def test_declining_stores_nothing(tmp_path):
    flow = make_flow(tmp_path)
    assert flow.consent("P1", False) == {"stage": DECLINED}
    assert list((tmp_path / ".study").iterdir()) == []


def test_the_whole_flow(tmp_path):
    flow = make_flow(tmp_path)
    assert refused(flow.instructions_done, "P1") == "no_participant"
    assert refused(flow.plan_episode, "P1") == "no_participant"

    view = flow.consent("P1", True)
    assert view["stage"] == INSTRUCTIONS and view["game"]["name"] == "breakout"  # the rotation's next game
    rec = stored(tmp_path, "P1")
    assert rec["stage"] == INSTRUCTIONS and rec["game"] == "breakout" and "consented" in rec
    assert flow.consent("P1", False)["stage"] == INSTRUCTIONS  # consent given stays given
    assert refused(flow.plan_episode, "P1") == "wrong_stage"

    assert flow.mic_ok("P1", {"label": "USB"})["stage"] == INSTRUCTIONS  # not at this stage: no change
    assert flow.instructions_done("P1")["stage"] == MICCHECK
    assert flow.instructions_done("P1")["stage"] == MICCHECK  # a repeat changes nothing
    assert flow.mic_ok("P1", {"label": "USB"})["stage"] == PRACTICE
    assert stored(tmp_path, "P1")["audio"] == {"label": "USB"}

    assert flow.plan_episode("P1") == EpisodePlan("P1", "breakout", True, 30.0, False)
    assert flow.episode_ended("P1", True, 1800, None)["stage"] == EPISODES

    assert flow.plan_episode("P1") == EpisodePlan("P1", "breakout", False, 120.0, True)
    view = flow.episode_ended("P1", False, 60 * 50, "breakout_P1_1")
    assert view["stage"] == EPISODES and view["progress"]["remaining_s"] == 70.0
    assert flow.plan_episode("P1").time_limit_s == 70.0
    view = flow.episode_ended("P1", False, 60 * 70, "breakout_P1_2")
    assert view["stage"] == DONE and view["code"] == "DONE42"
    rec = stored(tmp_path, "P1")
    assert rec["trajectories"] == ["breakout_P1_1", "breakout_P1_2"] and rec["episodes"] == 2 and "completed" in rec
    assert refused(flow.plan_episode, "P1") == "wrong_stage"
    assert flow.hello("P1")["code"] == "DONE42"  # a return visit shows the code again


def test_no_practice_goes_straight_to_the_episodes(tmp_path):
    flow = make_flow(tmp_path, StudyConfig(enabled=True, practice_s=0, episodes=2))
    flow.consent("P2", True)
    flow.instructions_done("P2")
    assert flow.mic_ok("P2", None)["stage"] == EPISODES
    assert "audio" not in stored(tmp_path, "P2")
    assert flow.plan_episode("P2").time_limit_s is None  # the study counts episodes
    flow.episode_ended("P2", False, 10, "spaceinvaders_P2_1")
    assert flow.episode_ended("P2", False, 10, None)["stage"] == DONE
    assert stored(tmp_path, "P2")["trajectories"] == ["spaceinvaders_P2_1"]  # an unrecorded episode counts, unlisted


def test_the_server_episode_limit_caps_a_study_episode(tmp_path):
    flow = make_flow(tmp_path, STUDY, episode_time_limit_s=45.0)
    flow.consent("P3", True)
    flow.instructions_done("P3")
    flow.mic_ok("P3", None)
    assert flow.plan_episode("P3").time_limit_s == 30.0  # practice keeps its own length
    flow.episode_ended("P3", True, 10, None)
    assert flow.plan_episode("P3").time_limit_s == 45.0
    flow = make_flow(tmp_path, StudyConfig(enabled=True, practice_s=0, episodes=3), episode_time_limit_s=45.0)
    flow.consent("P4", True)
    flow.instructions_done("P4")
    flow.mic_ok("P4", None)
    assert flow.plan_episode("P4").time_limit_s == 45.0


def test_an_episode_of_a_deleted_participant_is_not_counted(tmp_path):
    flow = make_flow(tmp_path)
    flow.consent("P5", True)
    Participants(tmp_path).delete("P5")
    assert flow.episode_ended("P5", False, 100, "x") is None
    assert not (tmp_path / ".study" / "P5.json").exists()
