"""StudyFlow's transitions without a server: stages, the stored record, and the refusals."""

import json

import pytest

from server.errors import BadMessage
from server.games import resolve_game
from server.spool import Spool
from server.study import (
    CONSENT,
    DECLINED,
    DONE,
    EPISODES,
    FAILED,
    FREE,
    INSTRUCTIONS,
    MICCHECK,
    PRACTICE,
    SCREENED,
    EpisodePlan,
    Outcome,
    Participants,
    StudyConfig,
    StudyFlow,
    StudyLog,
    entry_failures,
    render_markdown,
)

STUDY = StudyConfig(enabled=True, consent_text="Agree?", practice_s=30.0, play_s=120.0, completion_code="DONE42")


def make_flow(tmp_path, cfg=STUDY, episode_time_limit_s=None):
    games = iter(["breakout", "spaceinvaders"])
    return StudyFlow(
        cfg,
        Participants(Spool(tmp_path).study_dir),
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


def test_declining_stores_nothing_but_the_outcome_in_the_study_log(tmp_path):
    flow = make_flow(tmp_path)
    flow.hello("P1", {"platform": "prolific", "study_id": "S1", "session_id": "X1"})
    view = flow.consent("P1", False)
    assert view == {"stage": DECLINED, "outcome": {"kind": "declined", "code": None, "url": None}}
    assert [p.name for p in (tmp_path / ".study").iterdir()] == ["log.jsonl"]
    (line,) = StudyLog(Spool(tmp_path).study_log).read()
    assert line["event"] == "declined" and line["participant"] == "P1", line
    assert line["study_id"] == "S1" and line["session_id"] == "X1" and line["platform"] == "prolific", line


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
    Participants(Spool(tmp_path).study_dir).delete("P5")
    assert flow.episode_ended("P5", False, 100, "x") is None
    assert not (tmp_path / ".study" / "P5.json").exists()


GOOD = {"rtt_ms": 40.0, "refresh_hz": 60.0, "window": [1366, 657], "user_agent": "test"}
OUTCOMES = {
    "completed": Outcome("", "https://app.prolific.com/submissions/complete?cc={code}"),
    "declined": Outcome("DECL1", ""),
    "screened": Outcome("SCR1", "https://example.org/screened?cc={code}"),
    "failed": Outcome("FAIL1", ""),
}
ONLINE = StudyConfig(
    enabled=True, practice_s=0, episodes=1, completion_code="DONE42", outcomes=OUTCOMES, max_rtt_ms=150
)


def test_entry_checks_apply_the_thresholds_here_not_in_the_page():
    cfg = StudyConfig(enabled=True, max_rtt_ms=100, min_refresh_hz=50, min_window=(800, 500))
    assert entry_failures(GOOD | {"rtt_ms": 40.0}, [], cfg) == []
    assert entry_failures(GOOD | {"rtt_ms": 140.0}, [], cfg) == ["rtt"]
    assert entry_failures(GOOD | {"refresh_hz": 30.0, "window": [700, 900]}, [], cfg) == ["window", "refresh"]
    assert entry_failures({}, ["insecure", "bogus"], cfg) == ["insecure", "window", "refresh", "rtt"]
    assert entry_failures(GOOD | {"window": "big", "rtt_ms": True}, ["browser"], cfg) == ["browser", "window", "rtt"]


def test_passed_entry_checks_and_the_platform_go_into_the_record_and_meta(tmp_path):
    flow = make_flow(tmp_path, ONLINE)
    flow.hello("P6", {"platform": "prolific", "study_id": "S6", "session_id": "X6"})
    view = flow.entry_checks("P6", GOOD, [], False)
    assert view["stage"] == CONSENT and view["entry"] == {"ok": True, "reasons": []}
    assert view["checks"] == {"max_rtt_ms": 150, "min_refresh_hz": 50.0, "min_window": [800, 520]}
    assert list((tmp_path / ".study").iterdir()) == []  # nothing stored before consent
    flow.consent("P6", True)
    rec = stored(tmp_path, "P6")
    assert rec["entry_checks"] == GOOD and rec["recruitment"]["study_id"] == "S6", rec
    info = flow.client_info("P6")
    assert info == {"recruitment": {"platform": "prolific", "study_id": "S6", "session_id": "X6"}, "entry_checks": GOOD}
    assert [e["event"] for e in StudyLog(Spool(tmp_path).study_log).read()] == ["consented"]


def test_a_failed_entry_check_is_explained_then_screens_out_with_only_the_reason_logged(tmp_path):
    flow = make_flow(tmp_path, ONLINE)
    flow.hello("P7", {"platform": "prolific", "study_id": "S7", "session_id": "X7"})
    slow = GOOD | {"rtt_ms": 400.0}
    view = flow.entry_checks("P7", slow, [], False)  # first: what to change, nothing decided
    assert view["stage"] == CONSENT and view["entry"] == {"ok": False, "reasons": ["rtt"]}
    view = flow.entry_checks("P7", slow, [], True)  # nothing can be changed
    assert view == {
        "stage": SCREENED,
        "reasons": ["rtt"],
        "outcome": {"kind": "screened", "code": "SCR1", "url": "https://example.org/screened?cc=SCR1"},
    }
    assert [p.name for p in (tmp_path / ".study").iterdir()] == ["log.jsonl"]
    (line,) = StudyLog(Spool(tmp_path).study_log).read()
    assert line["event"] == "screened" and line["reasons"] == ["rtt"] and line["study_id"] == "S7"
    assert "rtt_ms" not in json.dumps(line) and "user_agent" not in json.dumps(line)  # the reason only


def test_completion_url_carries_the_code_and_a_completed_participant_is_told_so(tmp_path):
    cfg = StudyConfig(enabled=True, practice_s=0, episodes=1, outcomes=OUTCOMES)  # a code generated per participant
    flow = make_flow(tmp_path, cfg)
    flow.consent("P8", True)
    flow.instructions_done("P8")
    flow.mic_ok("P8", None)
    view = flow.episode_ended("P8", False, 100, "breakout_P8_1")
    code = view["code"]
    assert view["stage"] == DONE and len(code) == 8
    assert view["outcome"] == {
        "kind": "completed",
        "code": code,
        "url": f"https://app.prolific.com/submissions/complete?cc={code}",
    }
    again = flow.hello("P8")
    assert again["stage"] == DONE and again["already"] is True and again["code"] == code
    assert refused(flow.plan_episode, "P8") == "wrong_stage"  # not recorded again
    assert flow.consent("P8", True)["stage"] == DONE
    assert [e["event"] for e in StudyLog(Spool(tmp_path).study_log).read()] == ["consented", "completed"]


def test_allow_repeat_starts_a_completed_participant_over(tmp_path):
    cfg = StudyConfig(enabled=True, practice_s=0, episodes=1, allow_repeat=True)
    flow = make_flow(tmp_path, cfg)
    for _ in range(2):
        flow.consent("P9", True)
        flow.instructions_done("P9")
        flow.mic_ok("P9", None)
        assert flow.episode_ended("P9", False, 100, None)["stage"] == DONE
        view = flow.hello("P9")
        assert view["stage"] == CONSENT and "already" not in view
    assert sorted(p.name for p in (tmp_path / ".study").iterdir()) == ["P9.1.done.json", "P9.2.done.json", "log.jsonl"]


def test_a_technical_failure_is_its_own_outcome(tmp_path):
    flow = make_flow(tmp_path, ONLINE)
    assert refused(flow.fail, "P10", "microphone") == "no_participant"
    flow.consent("P10", True)
    flow.instructions_done("P10")
    flow.mic_ok("P10", None)
    view = flow.fail("P10", "microphone")
    assert view["stage"] == FAILED and view["reason"] == "microphone"
    assert view["outcome"] == {"kind": "failed", "code": "FAIL1", "url": None}
    assert flow.episode_ended("P10", False, 100, "breakout_P10_1")["stage"] == FAILED  # counted, outcome kept
    assert stored(tmp_path, "P10")["trajectories"] == ["breakout_P10_1"]
    assert refused(flow.plan_episode, "P10") == "wrong_stage"
    assert [e["event"] for e in StudyLog(Spool(tmp_path).study_log).read()][-1] == "failed"


def test_the_consent_markdown_is_rendered_without_running_html():
    html = render_markdown("# Consent\n\nYou are\ninvited.\n\n<script>alert(1)</script> [x](javascript:alert(1))")
    assert "<h1>Consent</h1>" in html and "<p>You are\ninvited.</p>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html
