import pytest

from server.core.format import make_traj_id, sanitize_participant, validate_traj_id
from server.errors import InvalidTrajectoryId


@pytest.mark.parametrize("good", ["mspacman_1QQ3LEWANF_1", "pong_a_0", "spaceinvaders_" + "A" * 64 + "_12"])
def test_valid_ids(good):
    assert validate_traj_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "mspacman",
        "mspacman_1QQ3LEWANF",
        "../etc/passwd",
        "mspacman_../x_1",
        "MsPacman_A_1",
        "space_invaders_A_1",
        "mspacman_A_1/",
        "mspacman_A_-1",
        "mspacman_" + "A" * 65 + "_1",
        "mspacman_A_1\n",
        None,
        5,
        ["x"],
        "mspacman_A%2F_1",
    ],
)
def test_invalid_ids_are_refused(bad):
    with pytest.raises(InvalidTrajectoryId, match="expected <game>_<participant>_<n>"):
        validate_traj_id(bad)


def test_participant_is_sanitised():
    assert sanitize_participant("5f3a-9c_b2!") == "5f3a9cb2"
    assert sanitize_participant("../../") is None
    assert sanitize_participant(42) is None
    assert len(sanitize_participant("x" * 200)) == 64
    assert make_traj_id("pong", "ABC", 3) == "pong_ABC_3"


def test_the_fast_frame_row_is_what_the_generic_csv_writer_writes():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from server.core.actions import KEYS, keys_label
    from server.core.format import FRAME_COLUMNS, csv_line, frame_head, frame_tail

    maybe_ms = st.none() | st.floats(min_value=-1e7, max_value=1e9, allow_nan=False).map(lambda v: round(v, 3))

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(0, 10**7),
        st.integers(-1000, 1000),
        st.integers(-(10**6), 10**7),
        st.booleans(),
        st.integers(0, 17),
        st.integers(0, 9),
        st.sets(st.sampled_from(KEYS)),
        st.integers(0, 2**32 - 1),
        st.floats(min_value=0, max_value=1e9, allow_nan=False),
        maybe_ms,
        st.none() | st.integers(0, 10**9),
        st.booleans(),
    )
    def check(frame, reward, score, terminal, action, lives, keys, crc, server_ms, display_ms, speech_sample, shown):
        row = (
            frame,
            reward,
            score,
            terminal,
            action,
            lives,
            keys_label(keys),
            f"{crc:08x}",
            server_ms,
            display_ms,
            speech_sample,
            shown,
        )
        assert len(row) == len(FRAME_COLUMNS)
        assert frame_head(*row[:9]) + frame_tail(*row[9:]) == csv_line(row)  # server_ms as the tick gives it

    check()
