import itertools

import pytest
from ale_py import Action

from server.core.actions import KEYS, effective_keys, keys_label, keys_to_action


def test_every_ale_action_is_reachable_from_keys():
    reached = {keys_to_action(set(c)) for n in range(len(KEYS) + 1) for c in itertools.combinations(KEYS, n)}
    assert reached == {a.value for a in Action}
    assert len(reached) == 18


@pytest.mark.parametrize(
    "keys,name",
    [
        ((), "NOOP"),
        (("FIRE",), "FIRE"),
        (("UP",), "UP"),
        (("RIGHT",), "RIGHT"),
        (("LEFT",), "LEFT"),
        (("DOWN",), "DOWN"),
        (("UP", "RIGHT"), "UPRIGHT"),
        (("UP", "LEFT"), "UPLEFT"),
        (("DOWN", "RIGHT"), "DOWNRIGHT"),
        (("DOWN", "LEFT"), "DOWNLEFT"),
        (("UP", "FIRE"), "UPFIRE"),
        (("RIGHT", "FIRE"), "RIGHTFIRE"),
        (("LEFT", "FIRE"), "LEFTFIRE"),
        (("DOWN", "FIRE"), "DOWNFIRE"),
        (("UP", "RIGHT", "FIRE"), "UPRIGHTFIRE"),
        (("UP", "LEFT", "FIRE"), "UPLEFTFIRE"),
        (("DOWN", "RIGHT", "FIRE"), "DOWNRIGHTFIRE"),
        (("DOWN", "LEFT", "FIRE"), "DOWNLEFTFIRE"),
    ],
)
def test_all_18_actions(keys, name):
    assert keys_to_action(set(keys)) == Action[name].value


def test_opposites_cancel():
    assert keys_to_action({"LEFT", "RIGHT"}) == Action.NOOP.value
    assert keys_to_action({"LEFT", "RIGHT", "UP"}) == Action.UP.value
    assert keys_to_action({"UP", "DOWN", "LEFT", "RIGHT", "FIRE"}) == Action.FIRE.value
    assert effective_keys({"UP", "DOWN"}) == frozenset()


def test_keys_label_is_canonical_order():
    assert keys_label({"FIRE", "LEFT"}) == "LEFT+FIRE"
    assert keys_label(set()) == ""
    assert keys_label({"RIGHT", "UP", "FIRE"}) == "UP+RIGHT+FIRE"
