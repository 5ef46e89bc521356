import pytest

from server.core.format import make_traj_id, sanitize_participant, validate_traj_id
from server.errors import InvalidTrajectoryId


@pytest.mark.parametrize("good", ["mspacman_1QQ3LEWANF_1", "pong_a_0", "spaceinvaders_" + "A" * 64 + "_12"])
def test_valid_ids(good):
    assert validate_traj_id(good) == good


@pytest.mark.parametrize("bad", [
    "", "mspacman", "mspacman_1QQ3LEWANF", "../etc/passwd", "mspacman_../x_1", "MsPacman_A_1", "space_invaders_A_1",
    "mspacman_A_1/", "mspacman_A_-1", "mspacman_" + "A" * 65 + "_1", "mspacman_A_1\n", None, 5, ["x"],
    "mspacman_A%2F_1",
])
def test_invalid_ids_are_refused(bad):
    with pytest.raises(InvalidTrajectoryId, match="expected <game>_<participant>_<n>"):
        validate_traj_id(bad)


def test_participant_is_sanitised():
    assert sanitize_participant("5f3a-9c_b2!") == "5f3a9cb2"
    assert sanitize_participant("../../") is None
    assert sanitize_participant(42) is None
    assert len(sanitize_participant("x" * 200)) == 64
    assert make_traj_id("pong", "ABC", 3) == "pong_ABC_3"
